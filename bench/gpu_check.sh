#!/usr/bin/env bash
# The CUDA paths of the code, checked in one go and summed up in one table:
#   1. the device-aware tests on CUDA (GSMFLOW_TEST_DEVICE=cuda: flow, end to end, speed paths, the CUDA
#      graph / noise / chunk paths against the eager ones, runs, TMM);
#   2. python -m bench.bench --quick --device=cuda (fp32, tf32, bf16);
#   3. python train_AWA2.py --synthetic --device=cuda in fp32, --tf32 and --bf16: H, T1, wall time;
#   4. python train_AWA2.py --synthetic --variant=tmm --device=cuda (mining on the GPU).
#
#   bash bench/gpu_check.sh              # logs and the bench JSON under $OUT (default: a temp dir)
#
# Budget: at most 570 s on one GPU (each step has its own time limit below). Without a
# CUDA GPU it stops at once with exit code 1: it never skips. On a machine without a package
# registry, put the wheels it lacks in .whl/ (`bash bench/gpu/wheels.sh`, where pip reaches a
# registry) and they are installed first.
set -uo pipefail
source "$(dirname "$0")/gpu/lib.sh"
no_arguments "$0" bench/gpu_check.sh "$@"
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${OUT:-$(mktemp -d)}
TAG=gpu_check
mkdir -p "$OUT"
require_cuda

declare -a ROWS
DEVICE_TESTS="tests/test_flow.py tests/test_end_to_end.py tests/test_speed_paths.py tests/test_cuda_paths.py
              tests/test_runs.py tests/test_tmm.py"
run pytest 240 env GSMFLOW_TEST_DEVICE=cuda "$PY" -m pytest -q -p no:cacheprovider $DEVICE_TESTS
ROWS+=("pytest, GSMFLOW_TEST_DEVICE=cuda|$(status): $(grep -E '[0-9]+ (passed|failed)' "$OUT/pytest.log" | tail -1)|${WALL}s")

run bench 90 "$PY" -m bench.bench --quick --device=cuda --out="$OUT/results-cuda-quick.json"
ROWS+=("bench.py --quick --device=cuda|$(status): $(grep -E '^flow training iteration' "$OUT/bench.log" | tail -3 |
    sed -E 's/^flow training iteration \(([a-z0-9_]+)\) +([0-9.]+ s).*/\1 \2/' | paste -sd, -) per flow iteration|${WALL}s")

for opt in "" --tf32 --bf16 --variant=tmm; do
    name=train_awa2${opt//[-=]/_}
    run "$name" 60 "$PY" train_AWA2.py --synthetic --device=cuda --quiet $opt --out_dir="$OUT/runs"
    numbers=$(grep -A1 "paper protocol" "$OUT/$name.log" | tail -1 | sed -E 's/ *\(iteration.*//; s/  +/ /g')
    ROWS+=("train_AWA2.py --synthetic --device=cuda ${opt:-(fp32)}|$(status): ${numbers:-no summary}|${WALL}s")
done

echo
print_rows "${ROWS[@]}"
echo "(train rows: the paper-protocol line, ZSL T1 and GZSL U/S/H; logs in $OUT)"
exit $FAILED
