import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED_XLSA17 = ROOT.parent / "shared" / "xlsa17"

import synthetic  # noqa: E402


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
