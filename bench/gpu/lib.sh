# Shared by bench/gpu_check.sh, bench/gpu/run_full.sh and bench/gpu/wheels.sh: the scripts' --help,
# the CUDA check, the wheels of .whl/, and timed steps with their logs (these three with PY, OUT and
# TAG set, from the repository root).

# no_arguments SCRIPT NAME [ARG]: --help prints SCRIPT's header comment (up to its `set -` line) and
# exits; any other argument is refused with exit code 2. For the scripts that take no arguments.
no_arguments() {
    case "${3:-}" in
        -h|--help) sed -n '2,/^set -/p' "$1" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
        "") ;;
        *) echo "error: unknown option $3 (bash $2 takes none; see --help)" >&2; exit 2 ;;
    esac
}

# require_cuda: exit 1 at once without CUDA (a GPU check that skipped would read as passed);
# install the wheels in .whl/ (for a machine without a package registry); name the GPU.
require_cuda() {
    if ! "$PY" -c "import sys, torch; print('torch', torch.__version__); sys.exit(0 if torch.cuda.is_available() else 1)" \
            >"$OUT/cuda.log" 2>&1; then
        echo "$TAG: FAILED: CUDA is not available ($PY: $(tail -1 "$OUT/cuda.log")); this check needs a GPU" >&2
        exit 1
    fi
    if compgen -G ".whl/*.whl" >/dev/null; then
        "$PY" -m pip install --quiet --no-index --no-deps .whl/*.whl || { echo "$TAG: FAILED: installing .whl/" >&2; exit 1; }
    fi
    "$PY" -c "import torch; print('$TAG:', torch.cuda.get_device_name(0), '| torch', torch.__version__, '| CUDA', torch.version.cuda)"
}

FAILED=0
# run NAME LIMIT_S CMD...: log to $OUT/NAME.log under `timeout LIMIT_S`; sets RC and WALL
run() {
    local name=$1 limit=$2; shift 2
    local t0=$SECONDS
    timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
    RC=$?
    WALL=$((SECONDS - t0))
    [ $RC -eq 0 ] || FAILED=1
    echo "$TAG: $name: exit $RC after ${WALL}s (log: $OUT/$name.log)" >&2
}
status() { [ "$RC" -eq 0 ] && echo ok || { [ "$RC" -eq 124 ] && echo "TIMED OUT" || echo "FAILED ($RC)"; }; }

# print_rows ROW...: the rows ("check|result|wall") as one Markdown table
print_rows() {
    printf '| %s | %s | %s |\n' check result wall
    printf '|---|---|---|\n'
    local row a b c
    for row in "$@"; do
        IFS='|' read -r a b c <<<"$row"
        printf '| %s | %s | %s |\n' "$a" "$b" "$c"
    done
}
