#!/usr/bin/env bash
# The paper's protocol at GPU speed, measured. The steps, most important first, each with its time
# limit in seconds (this table is what the script runs):
#   tests      150  GSMFLOW_TEST_DEVICE=cuda pytest tests/test_cuda_paths.py tests/test_speed_paths.py:
#                   the CUDA graph, noise and chunk paths against the eager ones, bit for bit
#   host-rng    30  python -m bench.host_rng: the CPU generator's draws on 1, 2, 4, 8 threads (the host's part)
#   awa2       330  python -m bench.full_run AWA2 --device=cuda: the full-size stand-in, fp32, one seed
#   bench      270  python -m bench.bench --device=cuda --variants=fp32,tf32 --rounds=3: each stage's bound
#   awa2-tf32  240  python -m bench.full_run AWA2 --device=cuda --tf32
#   flo        150  python -m bench.full_run FLO --device=cuda
#   apy        240  python -m bench.full_run APY --device=cuda
#   cub        240  python -m bench.full_run CUB --device=cuda
#   reproduce  600  python reproduce.py --synthetic=full --device=cuda --seeds=6152 --parallel=4 (all four)
#
#   bash bench/gpu/run_full.sh                 # every step in order, while the budget lasts
#   bash bench/gpu/run_full.sh awa2 bench      # these steps only, in the order given
#
# A step starts only if its time limit fits in what is left of BUDGET_S (default 570: one device
# command may run 600 s); the steps that do not fit are listed as skipped: give them to the next
# command on the same machine. Records (full-<DATASET>-<gpu>.json), result JSONs, the reproduce
# table and every step's log go to $OUT (default: a temp dir); run directories and the generated
# stand-ins (gigabytes) to $WORK (default /tmp/gsmflow-full), where later steps and commands on
# the same machine reuse them, and a killed reproduce continues from its cells' checkpoints.
# PACK_LOGS=1 packs the logs into $OUT/logs.tar.gz at the end (for a transfer that takes few files).
# Without CUDA it stops at once with exit code 1; an unknown step is exit code 2.
set -uo pipefail
declare -A LIMIT
ALL=""
while read -r step limit; do LIMIT[$step]=$limit; ALL+="${ALL:+ }$step"; done \
    < <(sed -n -E 's/^#   ([a-z0-9-]+) +([0-9]+)  .*/\1 \2/p' "$0")
case "${1:-}" in
    -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
esac
STEPS=("$@")
[ ${#STEPS[@]} -gt 0 ] || read -ra STEPS <<<"$ALL"
for step in "${STEPS[@]}"; do
    [[ " $ALL " == *" $step "* ]] || { echo "error: unknown step $step (the steps: $ALL; see --help)" >&2; exit 2; }
done
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3}
OUT=${OUT:-$(mktemp -d)}
WORK=${WORK:-/tmp/gsmflow-full}
BUDGET_S=${BUDGET_S:-570}
TAG=run_full
mkdir -p "$OUT" "$WORK"
source bench/gpu/lib.sh
require_cuda

FULL_RUN=("$PY" -m bench.full_run --device=cuda --quiet --json_dir="$OUT" --out_dir="$WORK")
declare -a ROWS
START=$SECONDS
for step in "${STEPS[@]}"; do
    left=$((BUDGET_S - (SECONDS - START)))
    if [ "${LIMIT[$step]}" -gt "$left" ]; then
        ROWS+=("$step|skipped: its ${LIMIT[$step]} s limit does not fit in the ${left} s left (run it next)|-")
        continue
    fi
    case $step in
        tests) run tests "${LIMIT[$step]}" env GSMFLOW_TEST_DEVICE=cuda "$PY" -m pytest -q -p no:cacheprovider \
                   tests/test_cuda_paths.py tests/test_speed_paths.py
               result=$(grep -E '[0-9]+ (passed|failed)' "$OUT/tests.log" | tail -1) ;;
        host-rng) run host-rng "${LIMIT[$step]}" "$PY" -m bench.host_rng --out="$OUT/results-host-rng.json"
               result=$(grep -E '^ +[0-9]+ +[0-9]+ ' "$OUT/host-rng.log" | awk '{print $1 " threads " $5 " M/s"}' |
                        paste -sd';' -) ;;
        awa2|flo|apy|cub)
               run "$step" "${LIMIT[$step]}" "${FULL_RUN[@]}" "${step^^}"
               result=$(grep -E '^[A-Z0-9]+ on .* end to end' "$OUT/$step.log" | tail -1) ;;
        awa2-tf32)
               run "$step" "${LIMIT[$step]}" "${FULL_RUN[@]}" AWA2 --tf32
               result=$(grep -E '^AWA2 on .* end to end' "$OUT/$step.log" | tail -1) ;;
        bench) run bench "${LIMIT[$step]}" "$PY" -m bench.bench --device=cuda --variants=fp32,tf32 --rounds=3 \
                   --out="$OUT/results-cuda.json"
               result="time/bound: $(grep -E '^(flow training iteration|synthesis|classifier epoch)' "$OUT/bench.log" |
                        sed -E 's/^(.*[^ ]) +[0-9.]+ s +[0-9.]+ s +([0-9.]+) .*/\1 \2/' | paste -sd';' -)" ;;
        reproduce)
               run reproduce "${LIMIT[$step]}" "$PY" reproduce.py --synthetic=full --device=cuda --seeds=6152 \
                   --parallel=4 --quiet --out_dir="$WORK"
               table=$(ls -t "$WORK"/reproduce/*/table.md 2>/dev/null | head -1)
               [ -n "$table" ] && cp "$table" "$OUT/reproduce-table.md"
               result="table: ${table:-none}" ;;
    esac
    ROWS+=("$step|$(status): ${result:-see the log}|${WALL}s")
done

echo
print_rows "${ROWS[@]}"
if [ "${PACK_LOGS:-0}" = 1 ] && compgen -G "$OUT/*.log" >/dev/null; then
    (cd "$OUT" && tar czf logs.tar.gz ./*.log && rm -f ./*.log)
fi
echo "written to $OUT:"
ls -1 "$OUT" | sed "s|^|  $OUT/|"
exit $FAILED
