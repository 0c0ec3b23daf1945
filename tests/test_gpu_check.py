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
