"""bench/gpu_check.sh refuses to run without CUDA: a GPU check that skipped would read as passed."""
import subprocess

import pytest
import torch

from conftest import ROOT


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the check would run for real")
def test_gpu_check_fails_loudly_without_cuda(tmp_path):
    proc = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh")], capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "PYTHON": __import__("sys").executable, "OUT": str(tmp_path)},
                          timeout=120)
    assert proc.returncode == 1
    assert "FAILED: CUDA is not available" in proc.stderr and "| check |" not in proc.stdout


def test_gpu_check_answers_help_and_refuses_unknown_options():
    run = lambda *a: subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh"), *a], capture_output=True,
                                    text=True, timeout=30)
    helped = run("--help")
    assert helped.returncode == 0 and "GSMFLOW_TEST_DEVICE=cuda" in helped.stdout and "set -uo" not in helped.stdout
    refused = run("--fast")
    assert refused.returncode == 2 and refused.stderr.startswith("error: unknown option --fast")


RUN_FULL = str(ROOT / "bench" / "gpu" / "run_full.sh")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the steps would run for real")
def test_run_full_fails_loudly_without_cuda(tmp_path):
    proc = subprocess.run(["bash", RUN_FULL, "tests"], capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "PYTHON": __import__("sys").executable, "OUT": str(tmp_path)})
    assert proc.returncode == 1 and "run_full: FAILED: CUDA is not available" in proc.stderr
    assert "| check |" not in proc.stdout


def test_run_full_lists_its_steps_with_their_limits_and_refuses_unknown_ones():
    helped = subprocess.run(["bash", RUN_FULL, "--help"], capture_output=True, text=True, timeout=30)
    assert helped.returncode == 0 and "set -uo" not in helped.stdout
    for step, limit in (("tests", 150), ("awa2", 330), ("bench", 270), ("awa2-tf32", 240), ("reproduce", 600)):
        assert f"  {step} " in helped.stdout and f" {limit} " in helped.stdout, step
    refused = subprocess.run(["bash", RUN_FULL, "awa2", "nope"], capture_output=True, text=True, timeout=30)
    assert refused.returncode == 2 and refused.stderr.startswith("error: unknown step nope")


def test_the_wheels_script_answers_help_and_refuses_unknown_options():
    script = str(ROOT / "bench" / "gpu" / "wheels.sh")
    helped = subprocess.run(["bash", script, "--help"], capture_output=True, text=True, timeout=30)
    assert helped.returncode == 0 and "FrEIA" in helped.stdout and "set -euo" not in helped.stdout
    refused = subprocess.run(["bash", script, "--nope"], capture_output=True, text=True, timeout=30)
    assert refused.returncode == 2 and refused.stderr.startswith("error: unknown option --nope")
