"""Your own images + class descriptions -> the xlsa17 layout GSMFlow trains on.

    python -m data.make_dataset --images=~/birds --semantics=~/birds/classes.csv \\
           --unseen=~/birds/unseen.txt --out=data/BIRDS
    python train.py --dataset=BIRDS

Inputs
  --images=DIR         one sub-folder per class; every image file below it (any depth) belongs to
                       that class: .jpg .jpeg .jpe .jfif .png .bmp .gif .tif .tiff .webp .ppm .pgm
                       .pbm .pnm (any case). Other files, files directly in DIR and hidden entries
                       are ignored. 16-bit greyscale is scaled to 8 bits, transparency is shown on
                       white, the EXIF orientation is applied; 32-bit float images are refused.
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
                   Both are MAT v5 (scipy.io.loadmat, MATLAB): at most 524,287 images, checked
                   before extracting. The folder and files get the permissions of your umask.
                   If writing fails, the extracted features are kept as <out>.features.npz.

Every image is decoded once before the extraction; all that do not decode are named in one
error line (or skipped and listed with --skip_bad_images).

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

import sys

if __name__ == "__main__" and not __package__:  # run by path: the project's imports below need `python -m`
    print("error: run it from the repository root as: python -m data.make_dataset", file=sys.stderr)
    raise SystemExit(2)

import csv
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import cli
from cli import opt
from data.xlsa17 import (DEFAULT_WEIGHTS, FEATURE_DIM, build_extractor, check_images, check_output,
                         extract_features, import_torchvision, index_type, make_splits, mat_v5_fits,
                         mat_v5_most_images, preprocessing, shorten, write_atomically, write_xlsa17)
from runs import resolve_device
from util import DataError, share_count


# ----------------------------------------------------------------------------- inputs

# Photo formats only: Pillow's own list (Image.registered_extensions) also names .h5, .fits, .eps,
# .grib, ... for which it has stub plugins or needs external programs.
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp",
                    ".ppm", ".pgm", ".pbm", ".pnm"}


def image_extensions() -> set[str]:
    """The allow-list, less what this Pillow cannot open (e.g. .webp without libwebp)."""
    return {ext for ext in IMAGE_EXTENSIONS if Image.registered_extensions().get(ext) in Image.OPEN}


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


def not_utf8(path: Path, exc: UnicodeDecodeError) -> DataError:
    return DataError(f"{path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); "
                     f"save it as UTF-8 (e.g. 'CSV UTF-8' in a spreadsheet, or iconv -f latin1 -t utf-8)")


def read_csv_semantics(path: Path) -> tuple[list[str], np.ndarray]:
    """Class names and their (C, d) raw semantic rows from a CSV (header row optional)."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            rows = [(reader.line_num, row) for row in reader if any(cell.strip() for cell in row)]
    except UnicodeDecodeError as exc:
        raise not_utf8(path, exc) from None
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
    try:
        lines = [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines()]
    except UnicodeDecodeError as exc:
        raise not_utf8(path, exc) from None
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
        k = share_count(unseen_share, len(classes), keep=2)
        names = sorted(rng.choice(classes, k, replace=False).tolist()) if k > 0 else []
    if not names or len(classes) - len(names) < 2:
        raise DataError(f"{len(classes)} classes, {len(names)} unseen: GZSL needs at least 1 unseen and "
                        f"2 seen classes (one of them becomes a validation class)")
    return names


# ----------------------------------------------------------------------------- the dataset

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


def bad_images_error(files: list[Path], bad: dict[int, str]) -> DataError:
    """One line naming every undecodable file."""
    if len(bad) == 1:
        (i, reason), = bad.items()
        return DataError(f"{files[i]}: cannot decode this image ({reason}); fix or remove it, or pass "
                         f"--skip_bad_images to leave it out")
    named = "; ".join(f"{files[i]} ({reason})" for i, reason in sorted(bad.items()))
    return DataError(f"{len(bad)} images cannot be decoded: {named}: fix or remove them, or pass --skip_bad_images "
                     f"to leave them out")


def drop_bad_images(files: list[Path], labels: np.ndarray, features: np.ndarray | None, bad: dict[int, str],
                    classes: list[str]):
    """Leave out (and list) the undecodable files; every class must still have 2 images."""
    for i in sorted(bad):
        print(f"skipped (--skip_bad_images): {files[i]} ({bad[i]})")
    keep = np.setdiff1d(np.arange(len(files)), sorted(bad))
    files, labels = [files[i] for i in keep], labels[keep]
    features = None if features is None else features[keep]
    check_counts({c: np.flatnonzero(labels == k + 1).tolist() for k, c in enumerate(classes)},
                 why=f" after skipping {len(bad)} undecodable image(s)")
    return files, labels, features


def check_size(n_images: int) -> None:
    """Stop before extracting when res101.mat (MAT v5) cannot hold the features."""
    if not mat_v5_fits(n_images):
        size = n_images * FEATURE_DIM * 4
        human = f"{size / 2 ** 30:.1f} GiB" if size >= 2 ** 30 else f"{size / 1024:.1f} KB"
        raise DataError(f"{n_images} images: their features ({FEATURE_DIM} x {n_images} float32, {human}) do not fit "
                        f"in res101.mat: a MAT v5 variable (scipy.io.savemat, the format xlsa17 uses) holds less "
                        f"than 4 GiB, at most {mat_v5_most_images()} images; split the images into several datasets")


def describe(exc: Exception) -> str:
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else " ".join(str(exc).split()) or type(exc).__name__


def keep_features(out: Path, features: np.ndarray, labels: np.ndarray, image_files: list[str]) -> str:
    """Save the extracted features beside `out` (.npz: features (N, 2048) float32, labels, image_files);
    returns what the error line says about them."""
    kept = out.with_name(f"{out.name}.features.npz")
    if kept.exists():
        kept = out.with_name(f"{out.name}.features-{time.strftime('%Y%m%dT%H%M%S')}.npz")
    try:
        with open(kept, "xb") as f:  # np.savez streams each array: no copy of the features
            np.savez(f, features=features, labels=labels, image_files=np.array(image_files))
    except Exception as exc:
        kept.unlink(missing_ok=True)
        return f"keeping the extracted features in {kept} failed too ({describe(exc)})"
    return (f"the extracted features are kept in {kept} (features: N x 2048 float32, labels, image_files; "
            f"np.load reads it)")


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
    n_val = share_count(val_class_share, seen.size)
    val_classes = np.sort(rng.choice(seen, n_val, replace=False))

    tv = import_torchvision()
    dev = resolve_device(device)
    model = extractor if extractor is not None else build_extractor(weights, tv, seed)  # fails early on bad weights
    files = [f for c in classes for f in class_files[c]]
    labels = np.array([k + 1 for k, c in enumerate(classes) for _ in class_files[c]])
    bad = check_images(files, workers, progress)  # every bad file named now, not one per hour of extraction
    if bad and not skip_bad_images:
        raise bad_images_error(files, bad)
    skipped = [str(files[i]) for i in sorted(bad)]
    if bad:
        files, labels, _ = drop_bad_images(files, labels, None, bad, classes)
    check_size(len(files))
    features, late = extract_features(model, files, dev, preprocessing(tv), batch_size, workers,
                                      skip_bad_images, progress)
    if late:  # changed on disk since the check
        skipped += [str(files[i]) for i in sorted(late)]
        files, labels, features = drop_bad_images(files, labels, features, late, classes)
    locs = make_splits(labels, seen, val_classes, test_seen_share, rng)
    image_files = [f.relative_to(images).as_posix() for f in files]
    try:
        write_atomically(out, lambda folder: write_xlsa17(folder, features, labels, image_files, raw, classes, locs))
    except Exception as exc:  # the features took hours: keep them
        raise DataError(f"{out}: writing the dataset failed ({describe(exc)}); "
                        f"{keep_features(out, features, labels, image_files)}") from None
    return {"out": str(out), "classes": len(classes), "seen": int(seen.size), "unseen": len(unseen_names),
            "validation_classes": int(val_classes.size), "images": len(files), "skipped": skipped,
            "semantic_dim": int(raw.shape[1]), "splits": {k: int(v.size) for k, v in locs.items()},
            "index_type": index_type(labels.size).__name__, "device": str(dev),
            "seconds": round(time.time() - t0, 1)}


# ----------------------------------------------------------------------------- command line

@dataclass
class MakeDatasetOptions:
    images: str = opt("", "one sub-folder of images per class (required)", path=True)
    semantics: str = opt("", "CSV: class name, then one number per attribute (header row optional); or a .npy "
                             "matrix (required)", path=True)
    class_names: str = opt("", "with a .npy matrix: its row order, one class name a line", path=True)
    unseen: str = opt("", "the unseen class names, one a line (or --unseen_share)", path=True)
    unseen_share: float = opt(0.0, "draw this share of the classes as unseen (or --unseen)", low=0, high=1,
                              high_open=True)
    out: str = opt("", "the dataset folder to create, e.g. data/NAME (required; must not exist)", path=True)
    weights: str = opt(DEFAULT_WEIGHTS, "IMAGENET1K_V1 (downloaded on first use), IMAGENET1K_V2, a local "
                                        "state-dict FILE, or none (random initialisation, for tests only)")
    skip_bad_images: bool = opt(False, "skip and list undecodable images instead of stopping")
    seed: int = opt(0, "seed of every draw", low=0)
    test_seen_share: float = opt(0.2, "share of each seen class's images held out as test_seen (as xlsa17)",
                                 low=0, high=1, low_open=True, high_open=True)
    val_class_share: float = opt(0.2, "share of the seen classes that become validation classes", low=0, high=1,
                                 low_open=True, high_open=True)
    batch_size: int = opt(32, "images per forward pass", low=1)
    workers: int = opt(min(8, os.cpu_count() or 1), "image-decoding processes (default: the CPU count, at most 8)",
                       low=0)
    device: str = opt("auto", "auto (CUDA when there is one), cpu, cuda or cuda:N")


def parse_args(argv: list[str]) -> MakeDatasetOptions:
    parser = cli.parser_for("python -m data.make_dataset", __doc__, (MakeDatasetOptions, None))
    args = MakeDatasetOptions(**cli.parse(parser, argv))
    missing = [f"--{k}" for k in ("images", "semantics", "out") if not getattr(args, k)]
    if missing:
        raise cli.ConfigError(f"the following options are required: {', '.join(missing)}")
    if bool(args.unseen) == bool(args.unseen_share):
        raise cli.ConfigError("give one of --unseen=FILE and --unseen_share=FRACTION")
    return args


def train_hint(summary: dict) -> str:
    """The next command, and whether AWA2's default schedule evaluates at all on this many images."""
    from config import Config
    out = Path(summary["out"])
    root = "" if out.parent.resolve() == (Path.cwd() / "data").resolve() else f" --dataroot={out.parent}"
    cfg, n_train = Config(), summary["splits"]["trainval_loc"]
    total = cfg.total_iterations(n_train)
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
    return cli.main_guard(run, sys.argv[1:] if argv is None else argv)


def run(argv: list[str]) -> dict:
    args = parse_args(argv)
    keep_freed_memory()
    summary = make_dataset(args.images, args.semantics, args.out, unseen=args.unseen or None,
                           unseen_share=args.unseen_share or None, class_names=args.class_names or None,
                           weights=None if args.weights.lower() == "none" else args.weights,
                           skip_bad_images=args.skip_bad_images, seed=args.seed,
                           test_seen_share=args.test_seen_share, val_class_share=args.val_class_share,
                           batch_size=args.batch_size, workers=args.workers, device=args.device)
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
