"""Your own images + class descriptions -> the xlsa17 layout GSMFlow trains on.

    python data/make_dataset.py --images=~/birds --semantics=~/birds/classes.csv \\
           --unseen=~/birds/unseen.txt --out=data/BIRDS
    python train.py --dataset=BIRDS

Inputs
  --images=DIR         one sub-folder per class; every image file below it (any depth) that
                       Pillow knows by its extension belongs to that class. Files directly in DIR
                       and hidden entries are ignored.
  --semantics=FILE     a CSV: class name in the first column, one number per attribute in the
                       others; the first row is a header when one of its attribute cells is not a
                       number. Or a .npy matrix (one row per class) with --class_names=FILE (the
                       row order, one name a line). Every class folder needs a row and every row a
                       folder.
  --unseen=FILE        the unseen class names, one a line; or --unseen_share=0.2 to draw them.

Outputs (--out=data/NAME, which must not exist; written to a temp folder beside it, then renamed)
  res101.mat       features (2048 x N float32), labels (N x 1, 1-based class ids),
                   image_files (N x 1 cell, paths relative to --images)
  att_splits.mat   att (d x C, each column L2-normalised), original_att (d x C, raw),
                   allclasses_names (C x 1 cell), 1-based (n x 1) trainval_loc, test_seen_loc,
                   test_unseen_loc, train_loc, val_loc (uint16, or uint32 above 65,535 images)

Class id c is the c-th class name in sorted order; images are stored class by class, each
class's files in sorted order. All draws use --seed: the unseen classes (with --unseen_share),
then the validation classes (--val_class_share of the seen classes), then each seen class's
test_seen images (--test_seen_share of them, at least 1, leaving at least 1 for training).
train_loc/val_loc split trainval_loc by class (val_loc = the validation classes' trainval
images); unlike xlsa17's they hold no test_seen image, so `--validation` does not leak.

Features are xlsa17's recipe: torchvision's ResNet-101 with ImageNet weights, the 2048-d
global-average-pool output for the whole image resized to 224 x 224 (no crop, no
augmentation), ImageNet mean/std normalisation, float32 (TF32 off on the GPU).
--weights=IMAGENET1K_V1 (default: the original ResNet recipe, closest to the network xlsa17
used; downloaded by torchvision on first use), IMAGENET1K_V2, FILE (a local state dict, for
machines without internet) or none (random initialisation seeded with --seed: for tests, the
features mean nothing).
"""
from __future__ import annotations

import argparse
import csv
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.io as sio
import torch
from PIL import Image
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as `python data/make_dataset.py` from anywhere
    sys.path.insert(0, str(ROOT))

from util import DataError  # noqa: E402

IMAGE_SIZE = 224
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_WEIGHTS = "IMAGENET1K_V1"
FEATURE_DIM = 2048

# ----------------------------------------------------------------------------- torchvision

# Kept alive for the whole process: dropping the Library object would undefine the schemas.
_TORCHVISION_STUB_OPS = None


def import_torchvision():
    """`import torchvision`, working around a torchvision whose compiled ops cannot load.

    PyPI's torchvision 0.28.0 can be a CUDA build whose `_C` extension does not load beside
    a CPU torch. Its import then fails in `_meta_registrations.py`, which registers fake
    kernels for `torchvision::nms` and `torchvision::qnms` whether or not the ops exist
    ("operator torchvision::nms does not exist"). Only for that failure, the two schemas are
    defined here (without kernels) and the import is retried. Nothing on this path uses
    torchvision's compiled ops: ResNet-101 and the PIL transforms are pure Python/torch.
    """
    global _TORCHVISION_STUB_OPS
    try:
        import torchvision
        return torchvision
    except RuntimeError as exc:
        if "torchvision::nms does not exist" not in str(exc):
            raise
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]  # the half-imported package, so that the retry starts clean
    lib = torch.library.Library("torchvision", "DEF")
    lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _TORCHVISION_STUB_OPS = lib
    print("note: torchvision's compiled ops do not load beside this torch build; defined the nms/qnms "
          "schemas without kernels so that torchvision imports (ResNet-101 does not use them)", file=sys.stderr)
    import torchvision
    return torchvision


# ----------------------------------------------------------------------------- inputs

def image_extensions() -> set[str]:
    """Every file extension Pillow can open, lower case (".jpg", ".png", ".webp", ...; not write-only ".pdf")."""
    return {ext.lower() for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN}


def find_images(images: Path) -> dict[str, list[Path]]:
    """Class name -> its image files (sorted), from the sub-folders of `images`."""
    if not images.is_dir():
        raise DataError(f"{images}: --images folder not found")
    extensions = image_extensions()
    classes = {}
    for folder in sorted(p for p in images.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = [p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in extensions
                 and not any(part.startswith(".") for part in p.relative_to(folder).parts)]
        classes[folder.name] = sorted(files)
    if not classes:
        raise DataError(f"{images}: no class sub-folders (--images needs one folder of images per class)")
    return classes


def parse_number(cell: str, where: str) -> float:
    try:
        value = float(cell)
    except ValueError:
        raise DataError(f"{where}: {cell.strip()!r} is not a number") from None
    if not math.isfinite(value):
        raise DataError(f"{where}: {cell.strip()!r}: semantic values must be finite numbers")
    return value


def is_number(cell: str) -> bool:
    try:
        float(cell)
        return True
    except ValueError:
        return False


def read_csv_semantics(path: Path) -> tuple[list[str], np.ndarray]:
    """Class names and their (C, d) raw semantic rows from a CSV (header row optional)."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        rows = [(reader.line_num, row) for row in reader if any(cell.strip() for cell in row)]
    if rows and not all(is_number(cell) for cell in rows[0][1][1:]):
        rows = rows[1:]  # a header: names its columns, holds no class
    if not rows:
        raise DataError(f"{path}: no class rows")
    width = len(rows[0][1])
    if width < 2:
        raise DataError(f"{path}, line {rows[0][0]}: expected a class name and at least one attribute column")
    names, values = [], []
    for line, row in rows:
        if len(row) != width:
            raise DataError(f"{path}, line {line}: {len(row)} columns, but the first row has {width}")
        name = row[0].strip()
        if not name:
            raise DataError(f"{path}, line {line}: the class name (first column) is empty")
        names.append(name)
        values.append([parse_number(cell, f"{path}, line {line}, column {j}") for j, cell in enumerate(row[1:], 2)])
    return names, np.array(values, dtype=np.float64)


def read_npy_semantics(path: Path, class_names: Path | None) -> tuple[list[str], np.ndarray]:
    """A (C, d) .npy matrix and the class-name list that gives its row order."""
    if class_names is None:
        raise DataError(f"{path}: a .npy semantics matrix needs --class_names=FILE (its row order, one name a line)")
    try:
        matrix = np.load(path, allow_pickle=False)
    except Exception as exc:  # numpy raises several types for a non-.npy file
        raise DataError(f"{path}: not a readable .npy matrix ({type(exc).__name__})") from None
    if matrix.ndim != 2 or matrix.dtype.kind not in "biuf":
        raise DataError(f"{path}: expected a 2-D numeric matrix (one row per class), got {matrix.dtype} {matrix.shape}")
    names = read_name_list(class_names, "--class_names")
    if matrix.shape[0] != len(names):
        hint = " (it looks transposed: one ROW per class)" if matrix.shape[1] == len(names) else ""
        raise DataError(f"{path}: {matrix.shape[0]} rows but {class_names} names {len(names)} classes{hint}")
    matrix = matrix.astype(np.float64)
    if not np.isfinite(matrix).all():
        row, col = np.argwhere(~np.isfinite(matrix))[0]
        raise DataError(f"{path}: row {row} ({names[row]!r}), column {col} is {matrix[row, col]}: "
                        f"semantic values must be finite numbers")
    return names, matrix


def read_name_list(path: Path, option: str) -> list[str]:
    """One name a line; trailing blank lines are fine, a blank line between names is not."""
    if not path.is_file():
        raise DataError(f"{path}: {option} file not found")
    lines = [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    if "" in lines:
        raise DataError(f"{path}, line {lines.index('') + 1}: empty line (one name a line)")
    if not lines:
        raise DataError(f"{path}: no names")
    return lines


def read_semantics(path: Path, class_names: Path | None) -> tuple[list[str], np.ndarray]:
    if not path.is_file():
        raise DataError(f"{path}: --semantics file not found")
    if path.suffix.lower() == ".npy":
        names, matrix = read_npy_semantics(path, class_names)
    elif class_names is not None:
        raise DataError(f"{class_names}: --class_names goes with a .npy matrix; {path.name} holds its own names")
    else:
        names, matrix = read_csv_semantics(path)
    seen = set()
    duplicate = next((n for n in names if n in seen or seen.add(n)), None)
    if duplicate is not None:
        raise DataError(f"{path}: class {duplicate!r} has more than one row")
    return names, matrix


def match_classes(class_files: dict[str, list[Path]], names: list[str], raw: np.ndarray,
                  images: Path, semantics: Path) -> tuple[list[str], np.ndarray]:
    """The sorted class names and their semantic rows in that order; every folder needs a row and back."""
    no_row = sorted(set(class_files) - set(names))
    if no_row:
        raise DataError(f"{semantics}: no row for class folder(s) {shorten(no_row)} of {images}")
    no_folder = sorted(set(names) - set(class_files))
    if no_folder:
        raise DataError(f"{semantics}: row(s) for {shorten(no_folder)} have no class folder under {images}")
    classes = sorted(class_files)
    position = {n: i for i, n in enumerate(names)}
    return classes, raw[[position[c] for c in classes]]


def shorten(items: list[str], limit: int = 5) -> str:
    head = ", ".join(repr(i) for i in items[:limit])
    return head + (f" and {len(items) - limit} more" if len(items) > limit else "")


def check_counts(class_files: dict[str, list], why: str = "") -> None:
    small = [c for c, files in sorted(class_files.items()) if len(files) < 2]
    if small:
        c = small[0]
        raise DataError(f"class {c!r} has {len(class_files[c])} image(s){why}: every class needs at least 2 "
                        f"(a seen class gives one to training and one to test_seen)"
                        + (f"; also {shorten(small[1:])}" if len(small) > 1 else ""))


def choose_unseen(classes: list[str], unseen: Path | None, unseen_share: float | None,
                  rng: np.random.Generator) -> list[str]:
    """The unseen class names (sorted): from the --unseen file, or a seeded --unseen_share draw."""
    if (unseen is None) == (unseen_share is None):
        raise DataError("give exactly one of --unseen=FILE and --unseen_share=FRACTION")
    if unseen is not None:
        names = sorted(set(read_name_list(unseen, "--unseen")))
        unknown = sorted(set(names) - set(classes))
        if unknown:
            raise DataError(f"{unseen}: {shorten(unknown)} not class folder name(s) under --images")
    else:
        if not 0 < unseen_share < 1:
            raise DataError(f"option --unseen_share: must be in (0, 1), got {unseen_share}")
        k = min(max(round(unseen_share * len(classes)), 1), len(classes) - 2)
        names = sorted(rng.choice(classes, k, replace=False).tolist()) if k > 0 else []
    if not names or len(classes) - len(names) < 2:
        raise DataError(f"{len(classes)} classes, {len(names)} unseen: GZSL needs at least 1 unseen and "
                        f"2 seen classes (one of them becomes a validation class)")
    return names


def check_output(out: Path) -> None:
    if out.exists():
        raise DataError(f"{out}: --out exists; not overwriting it (remove it or pick another name)")
    if not out.parent.is_dir():
        raise DataError(f"{out.parent}: the parent folder of --out does not exist")


# ----------------------------------------------------------------------------- features

def build_extractor(weights, torchvision=None, init_seed: int | None = None) -> torch.nn.Module:
    """ResNet-101 up to its global average pool (fc replaced by identity), in eval mode.

    `weights`: None (random init), a torchvision weights name (IMAGENET1K_V1, IMAGENET1K_V2)
    or a state-dict file. The random init draws from torch's RNG, or, with `init_seed`, from
    a fork of it seeded with `init_seed` (same network every time; the caller's RNG untouched).
    """
    tv = torchvision or import_torchvision()
    with torch.random.fork_rng(devices=[], enabled=init_seed is not None):
        if init_seed is not None:
            torch.manual_seed(init_seed)
        model = tv.models.resnet101(weights=None)
    if weights is not None:
        name = str(weights).upper()
        if name in tv.models.ResNet101_Weights.__members__:
            model.load_state_dict(download_weights(tv.models.ResNet101_Weights[name]))
        else:
            load_weights_file(model, Path(weights).expanduser())
    model.fc = torch.nn.Identity()
    return model.eval()


def download_weights(weights) -> dict:
    try:
        return weights.get_state_dict(progress=True, check_hash=True)
    except Exception as exc:  # no network, proxy, bad hash, full disk...: all end the same way
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())
        raise DataError(f"could not download the ResNet-101 ImageNet weights {weights.url} ({reason}); "
                        f"without internet, fetch that file elsewhere and pass --weights=FILE") from None


def load_weights_file(model: torch.nn.Module, path: Path) -> None:
    if not path.is_file():
        raise DataError(f"{path}: --weights file not found (or give IMAGENET1K_V1, IMAGENET1K_V2 or none)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise DataError(f"{path}: --weights is not a readable state dict ({type(exc).__name__}); "
                        f"save one with torch.save(model.state_dict(), FILE)") from None
    if not isinstance(state, dict):
        raise DataError(f"{path}: --weights holds a {type(state).__name__}, not a state dict")
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        raise DataError(f"{path}: --weights does not fit ResNet-101 ({str(exc).split(chr(10))[1].strip()})") from None
    missing = [k for k in missing if not k.startswith("fc.")]  # the classifier is dropped anyway
    if missing or unexpected:
        what = f"missing {shorten(missing, 3)}" if missing else f"unexpected {shorten(unexpected, 3)}"
        raise DataError(f"{path}: --weights is not a ResNet-101 state dict ({what})")


def preprocessing(torchvision=None):
    """xlsa17's input: the whole image resized to 224 x 224, ImageNet normalisation."""
    transforms = (torchvision or import_torchvision()).transforms
    return transforms.Compose([transforms.Resize((IMAGE_SIZE, IMAGE_SIZE)), transforms.ToTensor(),
                               transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


class ImageFiles(torch.utils.data.Dataset):
    """Decoded, preprocessed images; a file that does not decode yields zeros and its reason."""

    def __init__(self, files: list[Path], transform):
        self.files, self.transform = files, transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        try:
            with Image.open(self.files[i]) as img:
                return self.transform(img.convert("RGB")), ""
        except Exception as exc:  # Pillow raises many types for broken files; the caller names the file
            return torch.zeros(3, IMAGE_SIZE, IMAGE_SIZE), " ".join(f"{type(exc).__name__}: {exc}".split()) or "error"


def extract_features(model: torch.nn.Module, files: list[Path], device: torch.device, transform,
                     batch_size: int = 32, workers: int = 0, skip_bad_images: bool = False,
                     progress: bool | None = None) -> tuple[np.ndarray, dict[int, str]]:
    """(N, 2048) float32 features and {index: reason} of the files that did not decode.

    Without `skip_bad_images` the first undecodable file stops it with a DataError.
    """
    loader = torch.utils.data.DataLoader(ImageFiles(files, transform), batch_size=batch_size, num_workers=workers,
                                         pin_memory=device.type == "cuda")
    features = np.empty((len(files), FEATURE_DIM), dtype=np.float32)
    bad: dict[int, str] = {}
    model = model.to(device)
    tf32 = torch.backends.cudnn.conv.fp32_precision
    torch.backends.cudnn.conv.fp32_precision = "ieee"  # float32 convolutions on the GPU, as the CPU computes
    try:
        with torch.inference_mode(), tqdm(total=len(files), unit="img", desc="ResNet-101",
                                          disable=None if progress is None else not progress) as bar:
            start = 0
            for images, reasons in loader:
                for j, reason in enumerate(reasons):
                    if reason:
                        if not skip_bad_images:
                            raise DataError(f"{files[start + j]}: cannot decode this image ({reason}); fix or "
                                            f"remove it, or pass --skip_bad_images to leave it out")
                        bad[start + j] = reason
                out = model(images.to(device, non_blocking=True))
                features[start:start + len(reasons)] = out.float().cpu().numpy()
                start += len(reasons)
                bar.update(len(reasons))
    finally:
        torch.backends.cudnn.conv.fp32_precision = tf32
    return features, bad


# ----------------------------------------------------------------------------- splits and files

def make_splits(labels: np.ndarray, seen: np.ndarray, val_classes: np.ndarray, test_seen_share: float,
                rng: np.random.Generator) -> dict[str, np.ndarray]:
    """1-based image rows of each split (labels are 1-based class ids; unseen = not in `seen`)."""
    test_seen = []
    for c in seen:
        rows = np.flatnonzero(labels == c)
        k = min(max(round(test_seen_share * rows.size), 1), rows.size - 1)
        test_seen.append(rng.choice(rows, k, replace=False))
    test_seen = np.sort(np.concatenate(test_seen))
    is_seen = np.isin(labels, seen)
    trainval = np.setdiff1d(np.flatnonzero(is_seen), test_seen)
    in_val = np.isin(labels[trainval], val_classes)
    rows = {"trainval_loc": trainval, "test_seen_loc": test_seen, "test_unseen_loc": np.flatnonzero(~is_seen),
            "train_loc": trainval[~in_val], "val_loc": trainval[in_val]}
    return {key: r + 1 for key, r in rows.items()}


def index_type(n_images: int) -> type:
    """xlsa17 stores locs as uint16, which holds row numbers up to 65,535 only."""
    return np.uint16 if n_images <= np.iinfo(np.uint16).max else np.uint32


def cell(strings: list[str]) -> np.ndarray:
    """An (n, 1) object array: scipy writes it as a MATLAB cell of strings."""
    out = np.empty((len(strings), 1), dtype=object)
    out[:, 0] = strings
    return out


def write_xlsa17(folder: Path, features: np.ndarray, labels: np.ndarray, image_files: list[str],
                 raw: np.ndarray, classes: list[str], locs: dict[str, np.ndarray]) -> None:
    """res101.mat + att_splits.mat into `folder` (exists, empty)."""
    sio.savemat(folder / "res101.mat", {"features": np.ascontiguousarray(features.T),
                                        "labels": labels.reshape(-1, 1).astype(np.float64),
                                        "image_files": cell(image_files)}, do_compression=False)
    att = raw.T / np.linalg.norm(raw.T, axis=0, keepdims=True)
    kind = index_type(labels.size)
    sio.savemat(folder / "att_splits.mat", {
        "att": att, "original_att": raw.T.copy(), "allclasses_names": cell(classes),
        **{key: r.reshape(-1, 1).astype(kind) for key, r in locs.items()}})


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DataError(f"option --device={name}: CUDA is not available here")
    return torch.device(name)


def read_inputs(images: Path, semantics: Path, class_names: Path | None):
    """Sorted class names, their image files and their (C, d) raw semantic rows, all checked."""
    class_files = find_images(images)
    names, raw = read_semantics(semantics, class_names)
    classes, raw = match_classes(class_files, names, raw, images, semantics)
    zero = [c for c, row in zip(classes, raw) if not np.any(row)]
    if zero:
        raise DataError(f"{semantics}: the semantic vector of {shorten(zero)} is all zeros (att is L2-normalised)")
    check_counts(class_files)
    return classes, class_files, raw


def drop_bad_images(files: list[Path], labels: np.ndarray, features: np.ndarray, bad: dict[int, str],
                    classes: list[str]):
    """Leave out (and list) the undecodable files; every class must still have 2 images."""
    for i in sorted(bad):
        print(f"skipped (--skip_bad_images): {files[i]} ({bad[i]})")
    keep = np.setdiff1d(np.arange(len(files)), sorted(bad))
    files, labels, features = [files[i] for i in keep], labels[keep], features[keep]
    check_counts({c: np.flatnonzero(labels == k + 1).tolist() for k, c in enumerate(classes)},
                 why=f" after skipping {len(bad)} undecodable image(s)")
    return files, labels, features


def write_atomically(out: Path, write) -> None:
    """`write(folder)` into a temp folder beside `out`, renamed to `out` at the end; on any error, nothing."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        write(tmp)
        check_output(out)  # appeared while the features were computed: keep it, drop ours
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def make_dataset(images, semantics, out, unseen=None, unseen_share: float | None = None, class_names=None,
                 weights=DEFAULT_WEIGHTS, skip_bad_images: bool = False, seed: int = 0,
                 test_seen_share: float = 0.2, val_class_share: float = 0.2, batch_size: int = 32,
                 workers: int = 0, device: str = "auto", extractor: torch.nn.Module | None = None,
                 progress: bool | None = None) -> dict:
    """Write `out`/res101.mat + att_splits.mat (see the module docstring); returns a summary.

    `weights=None` is random initialisation (seeded with `seed`); `extractor` (a module from
    `build_extractor`) replaces building one. Bad input raises DataError before anything is written.
    """
    t0 = time.time()
    as_path = lambda p: None if p is None else Path(p).expanduser()
    images, semantics, out = as_path(images), as_path(semantics), as_path(out)
    for name, share in (("test_seen_share", test_seen_share), ("val_class_share", val_class_share)):
        if not 0 < share < 1:
            raise DataError(f"option --{name}: must be in (0, 1), got {share}")
    check_output(out)
    classes, class_files, raw = read_inputs(images, semantics, as_path(class_names))
    rng = np.random.default_rng(seed)  # draws in a fixed order: unseen, validation classes, test_seen
    unseen_names = choose_unseen(classes, as_path(unseen), unseen_share, rng)
    seen = np.array([k + 1 for k, c in enumerate(classes) if c not in unseen_names])
    n_val = min(max(round(val_class_share * seen.size), 1), seen.size - 1)
    val_classes = np.sort(rng.choice(seen, n_val, replace=False))

    tv = import_torchvision()
    dev = resolve_device(device)
    model = extractor if extractor is not None else build_extractor(weights, tv, seed)  # fails early on bad weights
    files = [f for c in classes for f in class_files[c]]
    labels = np.array([k + 1 for k, c in enumerate(classes) for _ in class_files[c]])
    features, bad = extract_features(model, files, dev, preprocessing(tv), batch_size, workers,
                                     skip_bad_images, progress)
    skipped = [str(files[i]) for i in sorted(bad)]
    if bad:
        files, labels, features = drop_bad_images(files, labels, features, bad, classes)
    locs = make_splits(labels, seen, val_classes, test_seen_share, rng)
    image_files = [f.relative_to(images).as_posix() for f in files]
    write_atomically(out, lambda folder: write_xlsa17(folder, features, labels, image_files, raw, classes, locs))
    return {"out": str(out), "classes": len(classes), "seen": int(seen.size), "unseen": len(unseen_names),
            "validation_classes": int(val_classes.size), "images": len(files), "skipped": skipped,
            "semantic_dim": int(raw.shape[1]), "splits": {k: int(v.size) for k, v in locs.items()},
            "index_type": index_type(labels.size).__name__, "device": str(dev),
            "seconds": round(time.time() - t0, 1)}


# ----------------------------------------------------------------------------- command line

class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad option is one `error: ...` line (exit code 2), as in train.py."""

    def error(self, message):
        print(f"error: {message} (see --help)", file=sys.stderr)
        raise SystemExit(2)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = OneLineParser(prog="python data/make_dataset.py", description=__doc__.split("\n\n")[0],
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", required=True, metavar="DIR", help="one sub-folder of images per class")
    p.add_argument("--semantics", required=True, metavar="CSV|NPY",
                   help="CSV: class name, then one number per attribute (header row optional); or a .npy matrix")
    p.add_argument("--class_names", metavar="FILE", help="with a .npy matrix: its row order, one class name a line")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--unseen", metavar="FILE", help="the unseen class names, one a line")
    which.add_argument("--unseen_share", type=float, metavar="FRACTION", help="draw this share of classes as unseen")
    p.add_argument("--out", required=True, metavar="DIR", help="the dataset folder to create, e.g. data/NAME")
    p.add_argument("--weights", default=DEFAULT_WEIGHTS, metavar="NAME|FILE|none",
                   help="IMAGENET1K_V1 (default, downloaded on first use), IMAGENET1K_V2, a local state-dict "
                        "FILE, or none (random initialisation, for tests only)")
    p.add_argument("--skip_bad_images", action="store_true", help="skip and list undecodable images")
    p.add_argument("--seed", type=int, default=0, help="seed of every draw (default 0)")
    p.add_argument("--test_seen_share", type=float, default=0.2,
                   help="share of each seen class's images held out as test_seen (default 0.2, as xlsa17)")
    p.add_argument("--val_class_share", type=float, default=0.2,
                   help="share of the seen classes that become validation classes (default 0.2)")
    p.add_argument("--batch_size", type=int, default=32, help="images per forward pass (default 32)")
    p.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1),
                   help="image-decoding processes (default: the CPU count, at most 8)")
    p.add_argument("--device", default="auto", help="auto (CUDA when there is one), cpu, cuda or cuda:N")
    args = p.parse_args(argv)
    if args.batch_size < 1 or args.workers < 0:
        p.error("--batch_size must be >= 1 and --workers >= 0")
    if args.weights.lower() == "none":
        args.weights = None
    return args


def train_hint(summary: dict) -> str:
    """The next command, and whether AWA2's default schedule evaluates at all on this many images."""
    from config import Config
    out = Path(summary["out"])
    root = "" if out.parent.resolve() == (Path.cwd() / "data").resolve() else f" --dataroot={out.parent}"
    cfg, n_train = Config(), summary["splits"]["trainval_loc"]
    total = (n_train // cfg.batchsize) * cfg.gen_nepoch
    hint = f"next: python train.py --dataset={out.name}{root}"
    if n_train <= cfg.batchsize:
        hint += f"  (needs --batchsize below its {n_train} training images; README 'Your own data')"
    elif total <= cfg.eval_start:
        hint += (f"  (AWA2's schedule gives {total} iterations here, none above eval_start={cfg.eval_start}: "
                 f"set --eval_start and --evl_interval, see README 'Your own data')")
    return hint


def keep_freed_memory() -> None:
    """The project's glibc setting (config.py's keep_freed_memory): without it every batch's
    activations go back to the OS and are page-faulted in again, a quarter of the CPU time here."""
    from fast import keep_freed_memory as keep
    keep()


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    keep_freed_memory()
    try:
        summary = make_dataset(args.images, args.semantics, args.out, unseen=args.unseen,
                               unseen_share=args.unseen_share, class_names=args.class_names, weights=args.weights,
                               skip_bad_images=args.skip_bad_images, seed=args.seed,
                               test_seen_share=args.test_seen_share, val_class_share=args.val_class_share,
                               batch_size=args.batch_size, workers=args.workers, device=args.device)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2)
    s = summary["splits"]
    print(f"written: {summary['out']}/res101.mat + att_splits.mat in {summary['seconds']:.0f}s on {summary['device']}")
    print(f"{summary['classes']} classes ({summary['seen']} seen, {summary['validation_classes']} of them validation; "
          f"{summary['unseen']} unseen), semantic dim {summary['semantic_dim']}; {summary['images']} images: "
          f"trainval {s['trainval_loc']} / test_seen {s['test_seen_loc']} / test_unseen {s['test_unseen_loc']}"
          + (f"; {len(summary['skipped'])} skipped" if summary["skipped"] else ""))
    if summary["index_type"] != "uint16":
        print(f"note: more than 65,535 images, so the *_loc vectors are {summary['index_type']} (xlsa17's uint16 "
              f"cannot hold the row numbers); scipy and MATLAB read them the same way")
    print(train_hint(summary))
    return summary


if __name__ == "__main__":
    main()
