#!/usr/bin/env bash
# The wheels that a GPU machine without a package registry lacks for bench/gpu_check.sh and
# bench/gpu/run_full.sh, put in .whl/ (git-ignored), which both install there first (bench/gpu/lib.sh).
# Run it here, where pip reaches a registry:
#
#   bash bench/gpu/wheels.sh            # then carry .whl/ to the GPU machine with the checkout
#
# The list is what requirements.txt adds to an image that already holds torch, numpy, scipy,
# scikit-learn, tqdm, matplotlib, pytest, PyYAML, requests, packaging, MarkupSafe, cloudpickle and
# typing-extensions (as the lent H100/H200 machines' image does), for CPython 3.12 on x86-64 Linux:
# FrEIA (an sdist on PyPI: built here into a pure-Python wheel), pooch, optuna and submitit, with the
# dependencies the image lacks.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
no_arguments "$0" bench/gpu/wheels.sh "$@"
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3}
mkdir -p .whl
"$PY" -m pip wheel --quiet --no-deps -w .whl FrEIA==0.2
"$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .whl \
    pooch==1.9.0 platformdirs==4.14.9 optuna==5.0.0 alembic==1.20.1 colorlog==6.12.0 sqlalchemy==2.1.9 \
    mako==1.4.3 greenlet==3.5.6 submitit==1.5.4
ls -1 .whl
