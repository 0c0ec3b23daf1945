"""Every bad input named in the issue fails before training with one line naming file and key."""
import subprocess
import sys

import numpy as np
import pytest
import scipy.io as sio

import util
from conftest import ROOT


def edit(path, **changes):
    m = {k: v for k, v in sio.loadmat(str(path)).items() if not k.startswith("__")}
    for k, v in changes.items():
        if v is None:
            del m[k]
        else:
            m[k] = v(m[k]) if callable(v) else v
    sio.savemat(str(path), m)


def load(root, name="AWA2"):
    return util.load_dataset(str(root), name)


def test_missing_folder(tmp_path):
    with pytest.raises(util.DataError, match=r"AWA2: dataset folder not found"):
        load(tmp_path)


def test_missing_file(xlsa17_root):
    (xlsa17_root / "AWA2" / "att_splits.mat").unlink()
    with pytest.raises(util.DataError, match=r"att_splits.mat: file not found"):
        load(xlsa17_root)


def test_not_a_mat_file(xlsa17_root):
    (xlsa17_root / "AWA2" / "res101.mat").write_text("this is not a MAT file\n")
    with pytest.raises(util.DataError, match=r"res101.mat: not a readable MAT file"):
        load(xlsa17_root)


@pytest.mark.parametrize("file,key", [("res101.mat", "features"), ("res101.mat", "labels"),
                                      ("att_splits.mat", "att"), ("att_splits.mat", "test_unseen_loc")])
def test_missing_key(xlsa17_root, file, key):
    edit(xlsa17_root / "AWA2" / file, **{key: None})
    with pytest.raises(util.DataError, match=rf"{file}: missing key '{key}'"):
        load(xlsa17_root)


def test_features_and_labels_disagree(xlsa17_root):
    edit(xlsa17_root / "AWA2" / "res101.mat", labels=lambda v: v[:-3])
    with pytest.raises(util.DataError, match=r"res101.mat: 'features' has \d+ columns .* 'labels' has \d+"):
        load(xlsa17_root)


def test_transposed_features_hint(xlsa17_root):
    edit(xlsa17_root / "AWA2" / "res101.mat", features=lambda v: v.T)
    with pytest.raises(util.DataError, match="looks transposed"):
        load(xlsa17_root)


def test_zero_based_locs(xlsa17_root):
    minus_one = lambda v: v.astype(int) - 1  # a file written with 0-based indices: one split holds image 0
    edit(xlsa17_root / "AWA2" / "att_splits.mat", trainval_loc=minus_one, test_seen_loc=minus_one,
         test_unseen_loc=minus_one)
    with pytest.raises(util.DataError, match=r"att_splits.mat: key '\w+_loc' holds 0: indices must be 1-based"):
        load(xlsa17_root)


def test_locs_out_of_range(xlsa17_root):
    edit(xlsa17_root / "AWA2" / "att_splits.mat", trainval_loc=lambda v: v + 5000)
    with pytest.raises(util.DataError, match=r"key 'trainval_loc' reaches \d+ but the number of images"):
        load(xlsa17_root)


def poisoned(value, at):
    """An edit() change that writes `value` (NaN or Inf) at index `at` of a float copy."""
    def poison(v):
        v = v.astype(np.float64)
        v[at] = value
        return v
    return poison


def test_nan_in_features(xlsa17_root):
    edit(xlsa17_root / "AWA2" / "res101.mat", features=poisoned(np.nan, (3, 7)))
    with pytest.raises(util.DataError, match=r"res101.mat: key 'features' holds NaN or Inf"):
        load(xlsa17_root)


def test_inf_in_semantics(xlsa17_root):
    edit(xlsa17_root / "AWA2" / "att_splits.mat", att=poisoned(np.inf, (0, 0)))
    with pytest.raises(util.DataError, match=r"att_splits.mat: key 'att' holds NaN or Inf"):
        load(xlsa17_root)


def test_semantic_matrix_with_fewer_columns_than_classes(xlsa17_root):
    edit(xlsa17_root / "AWA2" / "att_splits.mat", att=lambda v: v[:, :45])
    with pytest.raises(util.DataError, match=r"res101.mat: key 'labels' reaches 50 but 'att' in att_splits.mat has columns"):
        load(xlsa17_root)


def test_class_both_seen_and_unseen(xlsa17_root):
    f = xlsa17_root / "AWA2"
    s = sio.loadmat(str(f / "att_splits.mat"))
    edit(f / "att_splits.mat", test_unseen_loc=np.concatenate([s["test_unseen_loc"], s["trainval_loc"][:1]]))
    with pytest.raises(util.DataError, match=r"class ids \[\d+\] are both seen \(trainval_loc\) and unseen"):
        load(xlsa17_root)


def test_epgn_count_mismatch(epgn_root):
    edit(epgn_root / "FLO" / "label.mat", test_seen_idex=lambda v: v[:-1])
    with pytest.raises(util.DataError, match=r"label.mat: 'test_seen_idex' has \d+ labels but 'test_seen_fea'"):
        load(epgn_root, "FLO")


def test_epgn_class_both_seen_and_unseen(epgn_root):
    def dup(v):
        v = v.copy()
        return v
    m = sio.loadmat(str(epgn_root / "FLO" / "data.mat"))
    edit(epgn_root / "FLO" / "data.mat", unseen_pro=np.concatenate([m["unseen_pro"][:-1], m["seen_pro"][4:5]]))
    with pytest.raises(util.DataError, match=r"seen classes \[5\] .* also appear in 'unseen_pro'"):
        load(epgn_root, "FLO")


def test_script_prints_one_line_and_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "train_AWA2.py"), f"--dataroot={tmp_path}",
                           f"--out_dir={tmp_path / 'out'}"], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: ") and "AWA2: dataset folder not found" in proc.stderr
    assert not (tmp_path / "out").exists()  # failed before creating a run directory


def test_unknown_option_is_one_line_error(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "train_APY.py"), "--nsample=10"],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2 and proc.stderr.startswith("error: unknown option --nsample")
    assert "Traceback" not in proc.stderr
