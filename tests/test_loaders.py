import numpy as np
import pytest

from benchmarks import BENCHMARKS
import scipy.io as sio

import synthetic
import util
from conftest import SHARED_XLSA17


def test_xlsa17_loader_remaps_and_scales(xlsa17_root):
    d = util.load_dataset(str(xlsa17_root), "AWA2")
    assert d.layout == "xlsa17" and (d.n_seen, d.n_unseen) == (40, 10)
    assert d.seen_semantics.shape == (40, 85) and d.feature_dim == 64
    assert sorted(set(d.train_label)) == list(range(40)) and sorted(set(d.test_unseen_label)) == list(range(10))
    assert d.train_feature.dtype == np.float32
    assert d.train_feature.min() == 0 and d.train_feature.max() == 1  # MinMaxScaler fitted on trainval
    # remapping: seen class k is the k-th smallest seen id, and its semantics are att's column for that id
    fmat = sio.loadmat(str(xlsa17_root / "AWA2" / "res101.mat"))
    smat = sio.loadmat(str(xlsa17_root / "AWA2" / "att_splits.mat"))
    ids = fmat["labels"].ravel().astype(int)[smat["trainval_loc"].ravel() - 1]
    seen_ids = np.unique(ids)
    np.testing.assert_array_equal(d.train_label, np.searchsorted(seen_ids, ids))
    np.testing.assert_allclose(d.seen_semantics, smat["att"][:, seen_ids - 1].T.astype(np.float32))


def test_epgn_loader_keeps_raw_features(epgn_root):
    d = util.load_dataset(str(epgn_root), "FLO")  # auto-detected from data.mat
    raw = sio.loadmat(str(epgn_root / "FLO" / "data.mat"))
    assert d.layout == "epgn" and (d.n_seen, d.n_unseen) == (82, 20)
    np.testing.assert_array_equal(d.train_feature, raw["train_fea"].astype(np.float32))  # quirk: scaler unused
    lab = sio.loadmat(str(epgn_root / "FLO" / "label.mat"))
    np.testing.assert_array_equal(d.train_label, lab["train_idx"].ravel().astype(int) - 1)


def test_layout_can_be_forced(xlsa17_root, epgn_root):
    with pytest.raises(util.DataError, match="data.mat: file not found"):
        util.load_dataset(str(xlsa17_root), "AWA2", layout="epgn")


def test_cub_sentences_by_default_and_attributes_on_switch(tmp_path):
    synthetic.generate(tmp_path / "CUB", "CUB", seed=0, per_seen=(2, 1), per_unseen=2, feature_dim=16)
    assert util.load_dataset(str(tmp_path), "CUB", class_embedding="sent").seen_semantics.shape == (150, 1024)
    assert util.load_dataset(str(tmp_path), "CUB", class_embedding="att").seen_semantics.shape == (150, 312)


@pytest.mark.skipif(not SHARED_XLSA17.is_dir(), reason="no real split files (GSMFLOW_XLSA17_SPLITS, default ../shared/xlsa17: tests/conftest.py)")
@pytest.mark.parametrize("name,stem", [("AWA2", "att"), ("APY", "att"), ("CUB", "sent"), ("FLO", "att")])
def test_real_split_files(tmp_path, name, stem):
    b = BENCHMARKS[name]  # the table tests/test_prepare.py checks against the same files
    sizes, classes, dim = (b.trainval, b.test_seen, b.test_unseen), (b.seen, b.unseen), b.semantic_dims[stem]
    synthetic.features_for_real_splits(SHARED_XLSA17 / f"{name}_{stem}_splits.mat", tmp_path / name,
                                       feature_dim=8, stem=stem)
    d = util.load_dataset(str(tmp_path), name, layout="xlsa17", class_embedding=stem)
    assert (len(d.train_label), len(d.test_seen_label), len(d.test_unseen_label)) == sizes
    assert (d.n_seen, d.n_unseen) == classes and d.seen_semantics.shape[1] == dim
    if name != "CUB":  # attribute columns are L2-normalised per class; CUB's sentence vectors are not
        np.testing.assert_allclose(np.linalg.norm(d.all_semantics, axis=1), 1.0, atol=1e-5)


def test_cub_attributes_are_read_from_xlsa17_even_next_to_epgn_files(tmp_path):
    synthetic.generate(tmp_path / "CUB", "CUB", seed=0, per_seen=(2, 1), per_unseen=1, feature_dim=8, layout="epgn")
    assert util.load_dataset(str(tmp_path), "CUB", class_embedding="sent").layout == "epgn"
    with pytest.raises(util.DataError, match=r"CUB/res101.mat: file not found"):
        util.load_dataset(str(tmp_path), "CUB", class_embedding="att")
    with pytest.raises(util.DataError, match=r"--class_embedding=att \(312-d attributes\) needs res101.mat"):
        util.load_dataset(str(tmp_path), "CUB", layout="epgn", class_embedding="att")
