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
