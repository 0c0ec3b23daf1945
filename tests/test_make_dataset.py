"""data/make_dataset.py: own images + class descriptions -> xlsa17 files -> the loader -> a run.

ResNet-101 is slow on a CPU, so the images are few and tiny, and one randomly initialised
network (`reference`) serves every test that does not exercise how the network is built.
"""
import importlib.util
import subprocess
import sys
import urllib.error

import numpy as np
import pytest
import scipy.io as sio
import torch
from PIL import Image

import train
import util
from config import Config
from conftest import ROOT

from data import make_dataset as md

CLASSES = ["cat", "dog", "eel", "owl"]  # class ids 1..4 in this (sorted) order
SEED = 7  # torch seed of the random ResNet-101 in the fixture and in `reference`


def write_images(folder, classes=CLASSES, per_class=3):
    """Small noisy PNGs, one colour per class, widths varying so the resize matters."""
    rng = np.random.default_rng(0)
    for k, name in enumerate(classes):
        (folder / name).mkdir(parents=True)
        colour = np.array([k * 67 % 256, (k * 131 + 40) % 256, (255 - k * 50) % 256])
        for i in range(per_class):
            pixels = colour + rng.normal(0, 25, (20, 20 + 6 * i, 3))
            Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(folder / name / f"img{i}.png")
    return folder


def semantics_rows(classes=CLASSES):
    return [[name, str(k % 2), str(int(name == "owl")), str(1.5 + k)] for k, name in enumerate(classes)]


def write_csv(path, rows, header=True):
    lines = (["class,furry,wings,size"] if header else []) + [",".join(r) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def small_input(tmp_path, classes=("cat", "dog", "eel"), per_class=2):
    """3 classes x 2 images, a CSV and an unseen list: arguments for make_dataset."""
    images = write_images(tmp_path / "images", list(classes), per_class)
    (tmp_path / "data").mkdir()
    (tmp_path / "unseen.txt").write_text("eel\n")
    return dict(images=images, semantics=write_csv(tmp_path / "classes.csv", semantics_rows(classes)),
                unseen=tmp_path / "unseen.txt", out=tmp_path / "data" / "MINE", device="cpu", batch_size=4)


def preprocess_as_specified(path):
    """The issue's recipe, written out independently of make_dataset's code."""
    from torchvision import transforms
    steps = transforms.Compose([transforms.Resize((224, 224)), transforms.ToTensor(),
                                transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
    return steps(Image.open(path).convert("RGB"))


def random_resnet101():
    torch.manual_seed(SEED)
    return md.import_torchvision().models.resnet101(weights=None)


@pytest.fixture(scope="module")
def reference():
    model = random_resnet101()
    model.fc = torch.nn.Identity()  # the 2048-d global-average-pool output
    return model.eval()


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The command line with --weights=none (random init: the real code path, no download),
    one broken file skipped; ResNet-101 runs once here for most tests of this module."""
    base = tmp_path_factory.mktemp("own")
    images = write_images(base / "images")
    (images / "dog" / "broken.jpg").write_bytes(b"not a jpeg")
    (base / "data").mkdir()
    (base / "unseen.txt").write_text("eel\n\n")
    csv_path = write_csv(base / "classes.csv", semantics_rows())
    proc = subprocess.run([sys.executable, "-m", "data.make_dataset", f"--images={images}",
                           f"--semantics={csv_path}", f"--unseen={base / 'unseen.txt'}",
                           f"--out={base / 'data' / 'MINE'}", "--weights=none", f"--seed={SEED}",
                           "--skip_bad_images", "--batch_size=16", "--workers=1"], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    folder = base / "data" / "MINE"
    return dict(images=images, folder=folder, stdout=proc.stdout, res=sio.loadmat(str(folder / "res101.mat")),
                att=sio.loadmat(str(folder / "att_splits.mat")))


def column(mat, key):
    return mat[key].reshape(-1)


def test_writes_the_xlsa17_layout(built):
    res, att = built["res"], built["att"]
    assert sorted(p.name for p in built["folder"].iterdir()) == ["att_splits.mat", "res101.mat"]
    assert res["features"].shape == (2048, 12) and res["features"].dtype == np.float32
    assert res["labels"].shape == (12, 1) and column(res, "labels").tolist() == [c for c in range(1, 5) for _ in range(3)]
    assert [f[0] for f in column(res, "image_files")][:4] == ["cat/img0.png", "cat/img1.png", "cat/img2.png", "dog/img0.png"]
    assert [n[0] for n in column(att, "allclasses_names")] == CLASSES
    raw = np.array([[float(v) for v in r[1:]] for r in semantics_rows()]).T
    np.testing.assert_array_equal(att["original_att"], raw)
    np.testing.assert_allclose(att["att"], raw / np.linalg.norm(raw, axis=0))
    np.testing.assert_allclose(np.linalg.norm(att["att"], axis=0), 1.0)
    for key in ("trainval_loc", "test_seen_loc", "test_unseen_loc", "train_loc", "val_loc"):
        assert att[key].dtype == np.uint16 and att[key].ndim == 2 and att[key].shape[1] == 1, key


def test_splits_are_one_based_disjoint_and_use_every_image_once(built):
    att, labels = built["att"], column(built["res"], "labels")
    loc = {k: column(att, k).astype(int) for k in ("trainval_loc", "test_seen_loc", "test_unseen_loc",
                                                   "train_loc", "val_loc")}
    everything = np.concatenate([loc["trainval_loc"], loc["test_seen_loc"], loc["test_unseen_loc"]])
    assert sorted(everything.tolist()) == list(range(1, 13))  # 1-based, disjoint, each image once
    assert labels[loc["test_unseen_loc"] - 1].tolist() == [3, 3, 3]  # all of 'eel', nothing else
    for c in (1, 2, 4):  # round(0.2 * 3) = 1 test_seen image per seen class, the rest trainval
        assert (labels[loc["test_seen_loc"] - 1] == c).sum() == 1 and (labels[loc["trainval_loc"] - 1] == c).sum() == 2
    assert sorted(np.concatenate([loc["train_loc"], loc["val_loc"]]).tolist()) == sorted(loc["trainval_loc"].tolist())
    val_classes, train_classes = set(labels[loc["val_loc"] - 1]), set(labels[loc["train_loc"] - 1])
    assert len(val_classes) == 1 and not val_classes & train_classes and 3 not in val_classes


def test_the_project_loader_reads_it_and_its_validation_split(built):
    data = util.load_dataset(str(built["folder"].parent), "MINE")
    assert (data.n_seen, data.n_unseen, data.feature_dim, data.seen_semantics.shape[1]) == (3, 1, 2048, 3)
    assert (len(data.train_label), len(data.test_seen_label), len(data.test_unseen_label)) == (6, 3, 3)
    assert data.unseen_ids.tolist() == [3]
    val = util.load_dataset(str(built["folder"].parent), "MINE", validation=True, seed=1)
    assert (val.n_seen, val.n_unseen, len(val.test_unseen_label)) == (2, 1, 2)  # the validation class is unseen


def test_features_equal_a_direct_resnet101_forward(built, reference):
    picks = [("cat", 0), ("dog", 1), ("owl", 2)]
    files = [built["images"] / name / f"img{i}.png" for name, i in picks]
    with torch.inference_mode():
        expected = reference(torch.stack([preprocess_as_specified(f) for f in files])).numpy()
    rows = [3 * CLASSES.index(name) + i for name, i in picks]
    got = built["res"]["features"][:, rows].T
    scale = np.abs(expected).max()  # a random ResNet's features are large; batches differ in composition
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * scale)
    assert np.abs(expected[0] - expected[1]).max() > 100 * 1e-5 * scale  # the classes' images differ


def test_tiny_training_run_on_it_and_resume_by_name(built, tmp_path):
    root = str(built["folder"].parent)
    tiny = [f"--dataroot={root}", f"--out_dir={tmp_path}", "--device=cpu", "--quiet", "--batchsize=4",
            "--gen_nepoch=5", "--num_coupling_layers=2", "--hidden_dim=32", "--input_dim=16", "--nSample=10",
            "--eval_start=4", "--evl_interval=5", "--classifier_epochs=2", "--classifier_batch=16"]
    summary = train.main(Config(), ["--dataset=MINE", *tiny])
    assert summary["total_iterations"] == 5 and summary["last"]["iteration"] == 5  # floor(6 / 4) x 5 epochs
    (run_dir,) = (tmp_path / "MINE").iterdir()
    assert "MINE (xlsa17): 3 seen + 1 unseen classes" in (run_dir / "log.txt").read_text()  # the data's sizes
    resumed = train.main(Config(), ["--dataset=MINE", f"--resume={run_dir}", "--quiet"])
    assert resumed["last"] == summary["last"]


def test_weights_file_is_loaded(built, tmp_path, reference):
    torch.save(random_resnet101().state_dict(), tmp_path / "resnet101.pth")  # = reference's weights, fc included
    extractor = md.build_extractor(tmp_path / "resnet101.pth")
    loaded, expected = extractor.state_dict(), reference.state_dict()
    assert loaded.keys() == expected.keys() and not any(k.startswith("fc.") for k in loaded)
    # torch's RNG is past SEED's draws here, so a file that was not loaded would not match
    assert all(torch.equal(loaded[k], expected[k]) for k in expected)
    images = torch.stack([preprocess_as_specified(built["images"] / "cat" / f"img{i}.png") for i in range(2)])
    with torch.inference_mode():  # in eval mode too: batch-norm statistics are not the batch's
        got = extractor(images).numpy()
    expected_features = built["res"]["features"][:, :2].T  # the fixture's network is the same one
    np.testing.assert_allclose(got, expected_features, rtol=1e-5, atol=1e-5 * np.abs(expected_features).max())


def corrupt_csv(args, row, col, value):
    rows = semantics_rows(["cat", "dog", "eel"])
    rows[row][col] = value
    write_csv(args["semantics"], rows)


BAD_INPUTS = {
    "folder without a semantics row": (lambda a: write_csv(a["semantics"], semantics_rows(["cat", "dog"])),
                                       r"no row for class folder\(s\) 'eel'"),
    "semantics row without a folder": (lambda a: write_csv(a["semantics"], semantics_rows(["cat", "dog", "eel", "yak"])),
                                       r"row\(s\) for 'yak' have no class folder"),
    "class with one image": (lambda a: (a["images"] / "dog" / "img1.png").unlink(),
                             r"class 'dog' has 1 image\(s\): every class needs at least 2"),
    "non-numeric semantics": (lambda a: corrupt_csv(a, 1, 2, "big"), r"classes.csv, line 3, column 3: 'big' is not a number"),
    "NaN semantics": (lambda a: corrupt_csv(a, 0, 1, "nan"), r"line 2, column 2: 'nan': semantic values must be finite"),
    "unseen name that is not a class": (lambda a: a["unseen"].write_text("eel\nzebra\n"),
                                        r"unseen.txt: 'zebra' not class folder name"),
    "undecodable image": (lambda a: (a["images"] / "cat" / "broken.png").write_bytes(b"\x89PNG garbage"),
                          r"cat/broken.png: cannot decode this image .*--skip_bad_images"),
    "a --weights file that is not ResNet-101's": (lambda a: wrong_weights(a),
                                                   r"resnet101.pth: --weights does not fit ResNet-101"),
    "non-UTF-8 CSV": (lambda a: a["semantics"].write_bytes("class,a\ncaf\xe9,1\n".encode("latin-1")),
                      r"classes.csv: not UTF-8 text \(byte 0xe9 at offset 11\); save it as UTF-8"),
    "non-UTF-8 unseen list": (lambda a: a["unseen"].write_bytes(b"eel\n\xff\n"),
                              r"unseen.txt: not UTF-8 text \(byte 0xff at offset 4\); save it as UTF-8"),
    "32-bit float image": (lambda a: Image.fromarray(np.ones((8, 8), np.float32)).save(a["images"] / "cat" / "f.tif"),
                           r"cat/f.tif: cannot decode this image \(ValueError: mode F \(32-bit floating point\)"),
}


def wrong_weights(args):
    args.update(extractor=None, weights=args["out"].parent.parent / "resnet101.pth")
    torch.save({"conv1.weight": torch.zeros(1)}, args["weights"])


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_clear_error_and_writes_nothing(case, tmp_path, reference):
    args = dict(small_input(tmp_path), extractor=reference)
    break_it, message = BAD_INPUTS[case]
    break_it(args)
    with pytest.raises(util.DataError, match=message) as err:
        md.make_dataset(**args)
    assert "\n" not in str(err.value)
    assert list((tmp_path / "data").iterdir()) == []  # no output folder, no temp folder


def test_existing_output_folder_is_refused_and_kept(tmp_path, reference):
    args = small_input(tmp_path)
    args["out"].mkdir()
    (args["out"] / "mine.txt").write_text("keep me")
    with pytest.raises(util.DataError, match=r"MINE: --out exists; not overwriting it"):
        md.make_dataset(**args, extractor=reference)
    assert [p.name for p in (tmp_path / "data").iterdir()] == ["MINE"]
    assert [p.name for p in args["out"].iterdir()] == ["mine.txt"]


def no_network(files_bad=()):
    """A stand-in for extract_features (the network is not what these tests are about)."""
    return lambda model, files, *a, **k: (np.ones((len(files), 2048), np.float32),
                                          {i: "OSError: broken" for i, f in enumerate(files) if f.name in files_bad})


def test_a_write_that_dies_midway_keeps_only_the_features(tmp_path, reference, monkeypatch):
    args = small_input(tmp_path)
    monkeypatch.setattr(md, "extract_features", no_network())

    def dies_after_the_first_file(folder, *a):
        (folder / "res101.mat").write_bytes(b"half")
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(md, "write_xlsa17", dies_after_the_first_file)
    kept = tmp_path / "data" / "MINE.features.npz"
    with pytest.raises(util.DataError, match=rf"MINE: writing the dataset failed \(No space left on device\); the "
                                             rf"extracted features are kept in {kept} ") as err:
        md.make_dataset(**args, extractor=reference)
    assert "\n" not in str(err.value)
    assert list((tmp_path / "data").iterdir()) == [kept]  # no half dataset, no temp folder
    with np.load(kept) as saved:
        assert saved["features"].shape == (6, 2048) and saved["features"].dtype == np.float32
        assert saved["labels"].tolist() == [1, 1, 2, 2, 3, 3]
        assert saved["image_files"].tolist() == [f"{c}/img{i}.png" for c in ("cat", "dog", "eel") for i in range(2)]


def xlsa17_module():
    return sys.modules[md.write_xlsa17.__module__]


def not_called(*args, **kwargs):
    raise AssertionError("the extraction ran")


def test_too_many_images_for_a_mat_file_stop_before_extracting(tmp_path, reference, monkeypatch):
    """scipy's MAT v5 writer fails at 4 GiB of features (524,288 images), after writing them all."""
    x = xlsa17_module()
    assert x.mat_v5_fits(524_287) and not x.mat_v5_fits(524_288)  # 2048 x 4 bytes each, under 2**32 with headers
    monkeypatch.setattr(x, "MAT_V5_LIMIT", 5 * 2048 * 4 + 100)  # 5 images fit, 6 do not
    monkeypatch.setattr(md, "extract_features", not_called)
    with pytest.raises(util.DataError, match=r"6 images: their features \(2048 x 6 float32, 48\.0 KB\) do not fit "
                                             r"in res101\.mat.*at most 5 images.*split the images") as err:
        md.make_dataset(**small_input(tmp_path), extractor=reference)
    assert "\n" not in str(err.value) and list((tmp_path / "data").iterdir()) == []


def test_res101_is_written_without_copying_the_features(tmp_path):
    """Byte for byte what scipy.io.savemat writes (after the dated header), with no copy of the features."""
    import tracemalloc
    x = xlsa17_module()
    n = 1024  # 8 MiB of features
    features = np.random.default_rng(0).standard_normal((n, 2048), dtype=np.float32)
    labels = np.arange(n) % 7 + 1
    files = [f"c{i % 7}/img{i}.png" for i in range(n)]
    locs = x.make_splits(labels, np.arange(1, 6), np.array([2]), 0.2, np.random.default_rng(0))
    raw = np.random.default_rng(1).random((7, 3)) + 0.1
    tracemalloc.start()
    x.write_xlsa17(tmp_path, features, labels, files, raw, [f"c{i}" for i in range(7)], locs)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < features.nbytes / 4, peak  # was 2 copies: ascontiguousarray(features.T), then tobytes
    sio.savemat(tmp_path / "scipy.mat", {"labels": labels.reshape(-1, 1).astype(np.float64),
                                         "image_files": x.cell(files), "features": features.T}, do_compression=False)
    assert (tmp_path / "res101.mat").read_bytes()[128:] == (tmp_path / "scipy.mat").read_bytes()[128:]
    np.testing.assert_array_equal(sio.loadmat(str(tmp_path / "res101.mat"))["features"], features.T)


def test_outputs_follow_the_umask(tmp_path, reference, monkeypatch):
    import os
    import stat
    monkeypatch.setattr(md, "extract_features", no_network())
    old = os.umask(0o027)
    try:
        md.make_dataset(**small_input(tmp_path), extractor=reference)
    finally:
        os.umask(old)
    out = tmp_path / "data" / "MINE"
    assert stat.S_IMODE(out.stat().st_mode) == 0o750  # was 0o700, from mkdtemp
    assert {stat.S_IMODE(p.stat().st_mode) for p in out.iterdir()} == {0o640}


def test_every_bad_image_is_named_at_once_before_extracting(tmp_path, reference, monkeypatch):
    args = small_input(tmp_path)
    (args["images"] / "cat" / "broken.png").write_bytes(b"\x89PNG garbage")
    (args["images"] / "eel" / "cut.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    monkeypatch.setattr(md, "extract_features", not_called)
    with pytest.raises(util.DataError, match=r"2 images cannot be decoded: \S+cat/broken.png \(.*\); \S+eel/cut.jpg "
                                             r"\(.*\): fix or remove them, or pass --skip_bad_images") as err:
        md.make_dataset(**args, extractor=reference)
    assert "\n" not in str(err.value) and list((tmp_path / "data").iterdir()) == []


def test_only_image_extensions_are_read(tmp_path):
    images = write_images(tmp_path / "images", ["cat", "dog"], 2)
    for name in ("notes.eps", "cube.h5", "sky.fits", "list.txt"):  # Pillow has plugins for the first three
        (images / "cat" / name).write_bytes(b"not an image")
    Image.open(images / "dog" / "img0.png").save(images / "dog" / "upper.JPG")
    found = md.find_images(images)
    assert [p.name for p in found["cat"]] == ["img0.png", "img1.png"]
    assert [p.name for p in found["dog"]] == ["img0.png", "img1.png", "upper.JPG"]


def decoded(path):
    """What the network is given for one file: make_dataset's decoding and preprocessing."""
    x = xlsa17_module()
    tensor, reason = x.ImageFiles([path], x.preprocessing(md.import_torchvision()))[0]
    assert reason == "", reason
    return tensor


def test_16_bit_greyscale_is_rescaled_not_clipped(tmp_path):
    values = np.random.default_rng(0).integers(0, 256, (24, 40)).astype(np.uint8)
    Image.fromarray(values).save(tmp_path / "eight.png")
    Image.fromarray(values.astype(np.uint16) * 257).save(tmp_path / "sixteen.png")  # opens as I;16
    Image.fromarray(values.astype(np.int32) * 257).save(tmp_path / "int32.tif")  # opens as I
    assert [Image.open(tmp_path / f).mode for f in ("sixteen.png", "int32.tif")] == ["I;16", "I"]
    expected = decoded(tmp_path / "eight.png")
    assert torch.equal(decoded(tmp_path / "sixteen.png"), expected)  # convert("RGB") made almost all of it 255
    assert torch.equal(decoded(tmp_path / "int32.tif"), expected)


def test_exif_orientation_is_applied(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (20, 36, 3)).astype(np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: the camera was turned; show the stored pixels rotated 90 degrees clockwise
    Image.fromarray(pixels).save(tmp_path / "tagged.png", exif=exif)
    Image.fromarray(np.rot90(pixels, k=-1).copy()).save(tmp_path / "upright.png")
    assert torch.equal(decoded(tmp_path / "tagged.png"), decoded(tmp_path / "upright.png"))


def test_transparency_is_composited_on_white(tmp_path):
    rgba = np.zeros((16, 16, 4), np.uint8)
    rgba[:, :8] = (200, 30, 60, 255)  # left half: opaque red
    rgba[:, 8:] = (0, 0, 0, 0)  # right half: transparent, its hidden colour black
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(rgba[..., [0, 3]].copy(), "LA").save(tmp_path / "la.png")
    expected = np.full((16, 16, 3), 255, np.uint8)
    expected[:, :8] = (200, 30, 60)
    Image.fromarray(expected).save(tmp_path / "on_white.png")
    assert torch.equal(decoded(tmp_path / "rgba.png"), decoded(tmp_path / "on_white.png"))
    grey = np.full((16, 16), 255, np.uint8)
    grey[:, :8] = 200
    Image.fromarray(grey).save(tmp_path / "grey_on_white.png")
    assert torch.equal(decoded(tmp_path / "la.png"), decoded(tmp_path / "grey_on_white.png"))


def test_skipping_may_not_leave_a_class_with_one_image(tmp_path, reference, monkeypatch):
    args = small_input(tmp_path)
    monkeypatch.setattr(md, "extract_features", no_network(files_bad=("img1.png",)))
    with pytest.raises(util.DataError, match=r"class 'cat' has 1 image\(s\) after skipping 3 undecodable image\(s\)"):
        md.make_dataset(**args, extractor=reference, skip_bad_images=True)
    assert list((tmp_path / "data").iterdir()) == []


def test_failed_download_names_the_weights_option(tmp_path, monkeypatch):
    tv = md.import_torchvision()

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")
    monkeypatch.setattr(tv.models._api, "load_state_dict_from_url", offline)
    args = small_input(tmp_path)
    with pytest.raises(util.DataError, match=r"could not download the ResNet-101 ImageNet weights .*"
                                             r"pass --weights=FILE") as err:
        md.make_dataset(**args)  # the default: ImageNet weights
    assert "\n" not in str(err.value) and list((tmp_path / "data").iterdir()) == []


def test_semantics_from_npy_with_a_class_list_and_csv_without_header(tmp_path):
    rows = semantics_rows()
    write_csv(tmp_path / "plain.csv", rows, header=False)
    names, matrix = md.read_semantics(tmp_path / "plain.csv", None)
    assert names == CLASSES and matrix.shape == (4, 3)
    np.save(tmp_path / "att.npy", matrix[::-1])
    (tmp_path / "names.txt").write_text("\n".join(CLASSES[::-1]) + "\n")
    npy_names, npy_matrix = md.read_semantics(tmp_path / "att.npy", tmp_path / "names.txt")
    assert npy_names == CLASSES[::-1] and np.array_equal(npy_matrix, matrix[::-1])
    np.save(tmp_path / "att_t.npy", matrix.T)
    with pytest.raises(util.DataError, match="it looks transposed"):
        md.read_semantics(tmp_path / "att_t.npy", tmp_path / "names.txt")
    with pytest.raises(util.DataError, match="needs --class_names"):
        md.read_semantics(tmp_path / "att.npy", None)


def test_splits_follow_the_shares_and_the_seed():
    labels = np.repeat(np.arange(1, 11), 10)
    seen = np.arange(1, 9)
    a = md.make_splits(labels, seen, np.array([2, 5]), 0.2, np.random.default_rng(3))
    b = md.make_splits(labels, seen, np.array([2, 5]), 0.2, np.random.default_rng(3))
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert a["test_seen_loc"].size == 16 and a["test_unseen_loc"].size == 20 and a["trainval_loc"].size == 64
    assert set(labels[a["val_loc"] - 1]) == {2, 5} and a["val_loc"].size == 16
    assert md.index_type(65535) is np.uint16 and md.index_type(65536) is np.uint32


def test_command_line_skips_and_lists_bad_images_and_names_the_next_step(built):
    out = built["stdout"]
    assert f"skipped (--skip_bad_images): {built['images'] / 'dog' / 'broken.jpg'} (" in out
    assert "4 classes (3 seen, 1 of them validation; 1 unseen), semantic dim 3; 12 images" in out
    assert f"next: python train.py --dataset=MINE --dataroot={built['folder'].parent}" in out
    assert "dog/broken.jpg" not in [f[0] for f in column(built["res"], "image_files")]


def test_command_line_error_is_one_line(tmp_path, capsys):
    args = small_input(tmp_path)
    args["out"].mkdir()
    with pytest.raises(SystemExit) as exit_:
        md.main([f"--images={args['images']}", f"--semantics={args['semantics']}", "--unseen_share=0.3",
                 f"--out={args['out']}"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1 and err.startswith("error: ") and "--out exists" in err
    with pytest.raises(SystemExit) as exit_:
        md.main([f"--images={args['images']}", f"--out={args['out']}"])  # argparse's own errors: one line too
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1 and "error: the following options are required" in err


def fake_torchvision(root, version, requires_torch):
    """A torchvision that fails to import as PyPI's CUDA build does beside a CPU torch."""
    package = root / "torchvision"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text('import torch\n'
                                         'torch.library.register_fake("torchvision::nms")(lambda *a, **k: None)\n'
                                         'FAKE = True\n')
    (package / "version.py").write_text(f"__version__ = '{version}'\n")
    info = root / f"torchvision-{version.split('+')[0]}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: torchvision\nVersion: {version.split('+')[0]}\n"
                                   f"Requires-Dist: torch (=={requires_torch})\n")
    return root


@pytest.mark.parametrize("case", ["same release", "version mismatch"])
def test_torchvision_workaround_only_for_a_cuda_build_beside_a_cpu_torch_of_the_same_release(case, tmp_path):
    if torch.version.cuda is not None:
        pytest.skip("the workaround is for a CPU torch")
    base = torch.__version__.split("+")[0]
    major, minor = (int(v) for v in base.split(".")[:2])
    if case == "same release":
        root = fake_torchvision(tmp_path, f"0.{minor + 15}.0+cu130", base)
    else:  # the torchvision of the previous torch release
        root = fake_torchvision(tmp_path, f"0.{minor + 14}.0+cu130", f"{major}.{minor - 1}.0")
    script = ("import sys; sys.path[:0] = [sys.argv[1], '.']\n"
              "from data import xlsa17\n"
              "try:\n    print('imported', xlsa17.import_torchvision().FAKE)\n"
              "except Exception as exc:\n    print(type(exc).__name__, exc)\n")
    out = subprocess.run([sys.executable, "-c", script, str(root)], cwd=ROOT, capture_output=True, text=True)
    if case == "same release":
        assert out.stdout == "imported True\n" and "defined the nms/qnms schemas" in out.stderr, out
    else:
        assert out.stdout == (f"DataError torchvision 0.{minor + 14}.0+cu130 does not import beside torch "
                              f"{torch.__version__}; it was built for torch {major}.{minor - 1}.0 (operator "
                              f"torchvision::nms does not exist): install the torchvision of this torch's release "
                              f"(torchvision==0.{minor + 15}.*), from the same index as torch\n"), out
