"""--validation on the E-PGN layout (no val_loc): seen classes drawn as validation-unseen, test arrays never read."""
import numpy as np
import pytest
import scipy.io as sio
import torch

import runs
import synthetic
import train
import util
from config import Config


@pytest.fixture
def one_thread():
    """The machine is shared: one thread avoids OpenMP's spin-waits between busy processes."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def poison_test_arrays(folder):
    """NaN test features and test label vectors of the wrong length: any read of them fails."""
    data = {k: v for k, v in sio.loadmat(str(folder / "data.mat")).items() if not k.startswith("__")}
    labels = {k: v for k, v in sio.loadmat(str(folder / "label.mat")).items() if not k.startswith("__")}
    for key in ("test_seen_fea", "test_unseen_fea"):
        data[key] = np.full_like(data[key], np.nan)
    for key in ("test_seen_idex", "test_unseen_idex"):
        labels[key] = labels[key][:1]
    sio.savemat(folder / "data.mat", data)
    sio.savemat(folder / "label.mat", labels)


@pytest.mark.parametrize("name,n_seen,n_val,stem", [("FLO", 82, 20, "att"), ("CUB", 150, 50, "sent")])
def test_validation_classes_are_xlsa17s_count_of_seen_classes_drawn_with_the_seed(tmp_path, name, n_seen, n_val, stem):
    synthetic.generate(tmp_path / name, name, seed=2, per_seen=(5, 2), per_unseen=2, feature_dim=8, layout="epgn")
    raw = sio.loadmat(str(tmp_path / name / "data.mat"))
    train_idx = sio.loadmat(str(tmp_path / name / "label.mat"))["train_idx"].ravel().astype(int) - 1
    load = lambda seed: util.load_dataset(str(tmp_path), name, class_embedding=stem, validation=True,
                                          val_seen_share=0.2, seed=seed)
    d = load(7)
    assert d.split == "validation" and (d.n_seen, d.n_unseen) == (n_seen - n_val, n_val)
    rows = d.rows
    used = np.concatenate(list(rows.values()))
    assert np.array_equal(np.sort(used), np.arange(train_idx.size))  # every training image exactly once
    assert set(train_idx[rows["test_unseen_loc"]] + 1) == set(d.unseen_ids)  # all images of the drawn classes
    assert not set(train_idx[rows["trainval_loc"]] + 1) & set(d.unseen_ids)
    assert set(train_idx[rows["test_seen_loc"]] + 1) <= set(d.seen_ids)
    assert np.array_equal(d.unseen_semantics, raw["seen_pro"][d.unseen_ids - 1].astype(np.float32))
    assert np.array_equal(d.train_feature, raw["train_fea"][rows["trainval_loc"]].astype(np.float32))
    assert f"{n_val} of the {n_seen} seen classes, drawn with seed 7" in d.source
    again, other = load(7), load(8)
    assert np.array_equal(again.unseen_ids, d.unseen_ids) and not np.array_equal(other.unseen_ids, d.unseen_ids)


def test_other_dataset_names_hold_out_a_quarter_of_the_seen_classes():
    assert util.validation_class_count("MYDATA", 40) == 10
    assert util.validation_class_count("MYDATA", 2) == 1
    assert util.validation_class_count("AWA2", 5) == 4  # never all seen classes


def test_epgn_validation_run_never_reads_the_test_arrays_and_its_log_says_how_it_split(epgn_root, tmp_path, one_thread):
    poison_test_arrays(epgn_root / "FLO")
    with pytest.raises(util.DataError):  # the instrument works: the proposed split reads them and fails
        util.load_dataset(str(epgn_root), "FLO")
    cfg = Config(dataset="FLO", dataroot=str(epgn_root), out_dir=str(tmp_path / "out"), device="cpu", validation=True,
                 gen_nepoch=4, batchsize=64, num_coupling_layers=2, hidden_dim=64, input_dim=32, nSample=10,
                 eval_start=9, evl_interval=10, classifier_epochs=2, classifier_batch=128, quiet=True)
    summary = train.run(cfg)
    assert summary["split"] == "validation"
    # the test plan of the 410 training rows (10, 20 of 24 iterations) at the same fractions of these 12
    rows = runs.read_jsonl(tmp_path / summary["run_dir"] / "metrics.jsonl")
    assert [r["iteration"] for r in rows] == [5, 10] and summary["paper"]["iteration"] in (5, 10)
    log = (tmp_path / summary["run_dir"] / "log.txt").read_text()
    assert "LEAK-FREE VALIDATION SPLIT" in log and "20 of the 82 seen classes" in log and "test arrays not read" in log
