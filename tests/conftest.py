import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]  # on sys.path through pytest.ini's pythonpath
# The real xlsa17 split files (no features), for the format tests: <DATASET>_<stem>_splits.mat, i.e.
# AWA2_att_splits.mat, APY_att_splits.mat, CUB_sent_splits.mat, FLO_att_splits.mat (each dataset's
# att_splits.mat / sent_splits.mat from the xlsa17 archive, renamed). The folder is
# $GSMFLOW_XLSA17_SPLITS, default ../shared/xlsa17 beside the repository; tests that read it are
# skipped when it is absent.
SHARED_XLSA17 = Path(os.environ.get("GSMFLOW_XLSA17_SPLITS", ROOT.parent / "shared" / "xlsa17"))
# Where the device-aware tests run: GSMFLOW_TEST_DEVICE=cuda (bench/gpu_check.sh) or cpu (default).
# Bit-exactness against the literal reference stays on the CPU, where that reference is defined.
TEST_DEVICE = os.environ.get("GSMFLOW_TEST_DEVICE", "cpu")


def pytest_configure(config):
    if TEST_DEVICE.startswith("cuda") and not torch.cuda.is_available():
        raise pytest.UsageError(f"GSMFLOW_TEST_DEVICE={TEST_DEVICE}, but CUDA is not available on this machine")


def pytest_report_header(config):
    return f"gsmflow test device: {TEST_DEVICE} (GSMFLOW_TEST_DEVICE)"

import synthetic


@pytest.fixture
def xlsa17_root(tmp_path):
    """A small AWA2-shaped dataset (64-d features) in the xlsa17 layout; returns dataroot."""
    synthetic.generate(tmp_path / "AWA2", "AWA2", seed=1, per_seen=(6, 2), per_unseen=4, feature_dim=64, noise=2.0)
    return tmp_path


@pytest.fixture
def epgn_root(tmp_path):
    synthetic.generate(tmp_path / "FLO", "FLO", seed=2, per_seen=(5, 2), per_unseen=3, feature_dim=32,
                       noise=2.0, layout="epgn")
    return tmp_path
