"""Generate GZSL benchmarks in the exact xlsa17 (or E-PGN) file layout.

The real feature files cannot be downloaded everywhere. Two kinds of stand-in have the real
benchmarks' classes, seen/unseen counts and semantic dimensions, and features whose class
structure follows the semantic vectors (so a conditional flow can learn to synthesise unseen
classes). They are for smoke runs, tests and timings, not for numbers.

- quick (`--synthetic`): about 24 training images per seen class, with a short demo schedule.
- full (`--synthetic=full`): every count of benchmarks.py (AWA2: 23,527 training, 5,882 seen-test
  and 7,913 unseen-test rows, 13 validation classes), unequal class sizes, and class means only
  partly predictable from the semantic vectors, so the flow, selection and early stopping face
  work of the real size and roughly the real difficulty (bench/README.md, "Full-size stand-ins").
  Runs use the script's own schedule.

    python synthetic.py AWA2 data_synthetic          # quick: data_synthetic/AWA2/{res101,att_splits}.mat
    python synthetic.py AWA2 data_synthetic --full   # full size (AWA2: 37,322 images, 309 MB)

Generation is deterministic: the same command writes the same bytes (sha256) on any machine
with the same numpy.
"""
from __future__ import annotations

import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.io as sio

import cli
from benchmarks import BENCHMARKS, SOURCES
from cli import opt



def make_semantics(rng: np.random.Generator, n_classes: int, dim: int, latent: int = 8) -> np.ndarray:
    """(dim, n_classes), columns L2-normalised like xlsa17's `att`; classes share latent factors."""
    h = rng.standard_normal((latent, n_classes))
    a = np.maximum(rng.standard_normal((dim, latent)) @ h + 0.5 * rng.standard_normal((dim, n_classes)), 0)
    a += 1e-3  # no all-zero column
    return a / np.linalg.norm(a, axis=0, keepdims=True)


def make_features(rng: np.random.Generator, att: np.ndarray, labels0: np.ndarray, feature_dim: int,
                  noise: float = 1.0) -> np.ndarray:
    """(feature_dim, N): non-negative like pooled ResNet features, class mean a fixed map of `att`."""
    mix = rng.standard_normal((feature_dim, att.shape[0])) * np.sqrt(att.shape[0] / 8)
    means = mix @ att  # (feature_dim, C)
    x = means[:, labels0] + noise * rng.standard_normal((feature_dim, labels0.size))
    return np.maximum(x, 0)


def make_split(rng: np.random.Generator, n_seen: int, n_unseen: int, per_seen: tuple[int, int], per_unseen: int):
    """Class ids (1-based), a label per image and the three 1-based loc vectors, shuffled like xlsa17."""
    n_classes = n_seen + n_unseen
    unseen = np.sort(rng.choice(np.arange(1, n_classes + 1), n_unseen, replace=False))
    seen = np.setdiff1d(np.arange(1, n_classes + 1), unseen)
    n_tv, n_ts = per_seen
    groups = {"trainval_loc": np.repeat(seen, n_tv), "test_seen_loc": np.repeat(seen, n_ts),
              "test_unseen_loc": np.repeat(unseen, per_unseen)}
    labels = np.concatenate(list(groups.values()))
    order = rng.permutation(labels.size)  # image order in res101.mat is not grouped by split
    labels = labels[order]
    position = np.empty_like(order)
    position[order] = np.arange(order.size)
    locs, start = {}, 0
    for key, g in groups.items():
        locs[key] = np.sort(position[start:start + g.size]) + 1
        start += g.size
    return seen, unseen, labels, locs


MAT_HEADER = b"MATLAB 5.0 MAT-file, written by gsmflow synthetic.py"


def savemat_fixed(path: Path, content: dict) -> None:
    """scipy's savemat with a header that does not carry the time: same content, same bytes."""
    sio.savemat(path, content)
    with open(path, "r+b") as f:  # the v5 header: 116 bytes of text, then version and byte order
        f.write(MAT_HEADER.ljust(116))


def write_xlsa17(folder: Path, features: np.ndarray, labels: np.ndarray, splits: dict[str, dict]) -> None:
    """res101.mat (features D x N, labels N x 1) and one `<stem>_splits.mat` per entry of `splits`."""
    folder.mkdir(parents=True, exist_ok=True)
    n = labels.size
    files = np.empty((n, 1), dtype=object)
    files[:, 0] = [f"images/img_{i:06d}.jpg" for i in range(n)]
    savemat_fixed(folder / "res101.mat", {"features": features, "labels": labels.reshape(-1, 1).astype(np.float64),
                                          "image_files": files})
    for stem, content in splits.items():
        out = {k: (np.asarray(v).reshape(-1, 1).astype(np.uint16) if k.endswith("_loc") else v)
               for k, v in content.items()}
        savemat_fixed(folder / f"{stem}_splits.mat", out)


def write_epgn(folder: Path, train_fea, test_seen_fea, test_unseen_fea, seen_pro, unseen_pro,
               train_idx, test_seen_idex, test_unseen_idex) -> None:
    """data.mat + label.mat in E-PGN's layout (rows = images / classes, 1-based labels)."""
    folder.mkdir(parents=True, exist_ok=True)
    col = lambda v: np.asarray(v).reshape(-1, 1).astype(np.float64)
    savemat_fixed(folder / "data.mat", {
        "train_fea": train_fea, "test_seen_fea": test_seen_fea, "test_unseen_fea": test_unseen_fea,
        "seen_pro": seen_pro, "unseen_pro": unseen_pro, "attribute": np.concatenate([seen_pro, unseen_pro]),
        "att_train": seen_pro[np.asarray(train_idx).reshape(-1) - 1]})
    savemat_fixed(folder / "label.mat", {"train_idx": col(train_idx), "test_seen_idex": col(test_seen_idex),
                                       "test_unseen_idex": col(test_unseen_idex),
                                       "train_label_new": col(train_idx)})


def write_with_validation_classes(folder: Path, rng: np.random.Generator, features: np.ndarray, labels: np.ndarray,
                                  seen: np.ndarray, locs: dict, atts: dict, n_val: int) -> None:
    """The xlsa17 files, with `n_val` seen classes drawn as xlsa17's validation classes: their trainval
    images are val_loc, the other trainval images train_loc."""
    names = np.empty((atts[next(iter(atts))].shape[1], 1), dtype=object)
    names[:, 0] = [f"{i:03d}.class_{i}" for i in range(1, names.shape[0] + 1)]
    val_classes = rng.choice(seen, n_val, replace=False)
    tv = locs["trainval_loc"]
    in_val = np.isin(labels[tv - 1], val_classes)
    splits = {stem: {"att": att, "original_att": att * 100, "allclasses_names": names, **locs,
                     "train_loc": tv[~in_val], "val_loc": tv[in_val]} for stem, att in atts.items()}
    write_xlsa17(folder, features, labels, splits)


def generate(folder: Path, dataset: str, seed: int = 0, per_seen: tuple[int, int] = (24, 6),
             per_unseen: int = 20, feature_dim: int = 2048, noise: float = 12.0, layout: str = "xlsa17") -> Path:
    """Write a benchmark-shaped synthetic `dataset` into `folder` (the dataset folder itself)."""
    spec = BENCHMARKS[dataset]
    rng = np.random.default_rng(seed)
    seen, unseen, labels, locs = make_split(rng, spec.seen, spec.unseen, per_seen, per_unseen)
    n_classes = spec.classes
    atts = {stem: make_semantics(rng, n_classes, dim) for stem, dim in spec.semantic_dims.items()}
    first = next(iter(atts.values()))
    features = make_features(rng, first, labels - 1, feature_dim, noise)
    if layout == "epgn":
        rows = lambda key: features[:, locs[key] - 1].T
        y = {k: labels[locs[k] - 1] for k in locs}
        write_epgn(folder, rows("trainval_loc"), rows("test_seen_loc"), rows("test_unseen_loc"),
                   first[:, seen - 1].T, first[:, unseen - 1].T,
                   np.searchsorted(seen, y["trainval_loc"]) + 1, np.searchsorted(seen, y["test_seen_loc"]) + 1,
                   np.searchsorted(unseen, y["test_unseen_loc"]) + 1)
        return folder
    # xlsa17's train/val split of the seen classes (val = a fifth of them), for completeness
    write_with_validation_classes(folder, rng, features, labels, seen, locs, atts, max(1, seen.size // 5))
    return folder


@dataclass(frozen=True)
class Hardness:
    """How hard a full-size stand-in is. Images vary in a `latent`-dimensional space that a fixed
    random map sends to the feature space (ResNet features of a class also vary along few
    directions), plus `pixel_noise` per feature dimension. A class's latent mean is
    sqrt(1 - residual^2) * (a fixed linear map of its semantic vector) + residual * (a direction of
    its own, which no semantic vector predicts), with unit spread per latent dimension; each image
    adds `noise` per latent dimension. Class sizes vary as a lognormal of `spread`.
    Chosen with bench.standin_hardness (bench/README.md, "Full-size stand-ins")."""
    noise: float
    residual: float
    latent: int = 64
    pixel_noise: float = 0.5
    spread: float = 0.5


FULL_HARDNESS = {
    "AWA2": Hardness(noise=1.5, residual=0.5),
    "APY": Hardness(noise=2.0, residual=0.7),
    "CUB": Hardness(noise=1.4, residual=0.6),
    "FLO": Hardness(noise=1.2, residual=0.65),
}


def class_sizes(rng: np.random.Generator, total: int, weights: np.ndarray, minimum: int) -> np.ndarray:
    """`total` images over the classes in proportion to `weights`, each class at least `minimum`
    (largest remainders, so the sizes add up to `total` exactly)."""
    share = (total - minimum * weights.size) * weights / weights.sum()
    sizes = np.floor(share).astype(np.int64)
    sizes[np.argsort(sizes - share)[:total - minimum * weights.size - sizes.sum()]] += 1
    return sizes + minimum


def make_full_features(rng: np.random.Generator, att: np.ndarray, labels0: np.ndarray, feature_dim: int,
                       hard: Hardness, chunk: int = 4096) -> np.ndarray:
    """(feature_dim, N) float32, non-negative, as `Hardness` says; built in chunks of images."""
    k = hard.latent
    semantic_map = rng.standard_normal((k, att.shape[0]))
    shared = semantic_map @ (att / np.linalg.norm(att, axis=0, keepdims=True))
    own = rng.standard_normal(shared.shape)
    means = np.sqrt(1 - hard.residual ** 2) * shared + hard.residual * own  # (k, C), unit spread
    to_features = (rng.standard_normal((feature_dim, k)) / np.sqrt(k)).astype(np.float32)
    x = np.empty((feature_dim, labels0.size), dtype=np.float32)
    for start in range(0, labels0.size, chunk):
        cols = labels0[start:start + chunk]
        latent = (means[:, cols] + hard.noise * rng.standard_normal((k, cols.size))).astype(np.float32)
        pixel = rng.standard_normal((feature_dim, cols.size), dtype=np.float32)
        np.maximum(to_features @ latent + hard.pixel_noise * pixel, 0, out=x[:, start:start + chunk])
    return x


def generate_full(folder: Path, dataset: str, seed: int = 0, feature_dim: int | None = None) -> Path:
    """Write `dataset` at its real size (every count of benchmarks.py) in the xlsa17 layout into `folder`."""
    spec, hard = BENCHMARKS[dataset], FULL_HARDNESS[dataset]
    rng = np.random.default_rng(seed)
    seen_weight, unseen_weight = (rng.lognormal(0, hard.spread, n) for n in (spec.seen, spec.unseen))
    per_seen = (class_sizes(rng, spec.trainval, seen_weight, 2), class_sizes(rng, spec.test_seen, seen_weight, 1))
    per_unseen = class_sizes(rng, spec.test_unseen, unseen_weight, 1)
    seen, unseen, labels, locs = make_split(rng, spec.seen, spec.unseen, per_seen, per_unseen)
    atts = {stem: make_semantics(rng, spec.classes, dim) for stem, dim in spec.semantic_dims.items()}
    first = next(iter(atts.values()))
    features = make_full_features(rng, first, labels - 1, feature_dim or spec.feature_dim, hard)
    write_with_validation_classes(folder, rng, features, labels, seen, locs, atts, spec.validation_classes)
    return folder


def features_for_real_splits(split_file: Path, folder: Path, seed: int = 0, feature_dim: int = 2048,
                             stem: str = "att") -> Path:
    """Copy a real `*_splits.mat` into `folder` with a generated `res101.mat` consistent with it.

    Labels follow the splits' structure: val_loc images get validation classes, train_loc
    images the other seen classes, test_unseen_loc images the unseen classes (round-robin),
    so the real loc vectors, counts and semantic matrix are exercised as they are.
    """
    rng = np.random.default_rng(seed)
    m = sio.loadmat(str(split_file))
    att = m["att"]
    loc = {k: m[k].reshape(-1).astype(np.int64) - 1
           for k in ("trainval_loc", "test_seen_loc", "test_unseen_loc", "train_loc", "val_loc")}
    n_images, n_classes = max(int(v.max()) for v in loc.values()) + 1, att.shape[1]
    spec = BENCHMARKS[split_file.name.split("_")[0]]
    n_unseen, n_val = spec.unseen, spec.validation_classes
    order = rng.permutation(np.arange(1, n_classes + 1))
    unseen, val, train = np.sort(order[:n_unseen]), np.sort(order[n_unseen:n_unseen + n_val]), \
        np.sort(order[n_unseen + n_val:])
    labels = np.full(n_images, train[0], dtype=np.int64)
    for key, classes in (("train_loc", train), ("val_loc", val), ("test_unseen_loc", unseen)):
        labels[loc[key]] = classes[np.arange(loc[key].size) % classes.size]
    features = make_features(rng, att, labels - 1, feature_dim).astype(np.float32)
    folder.mkdir(parents=True, exist_ok=True)
    write_xlsa17(folder, features, labels, {})
    sio.savemat(folder / f"{stem}_splits.mat", {k: v for k, v in m.items() if not k.startswith("__")})
    return folder


def ensure_benchmark(root: Path, dataset: str, seed: int = 6152, kind: str = "quick") -> Path:
    """Generate root/dataset once; later --synthetic runs (any training seed) reuse it."""
    folder = Path(root) / dataset
    marker = folder / f".synthetic_{'' if kind == 'quick' else kind + '_'}seed_{seed}"
    if not marker.exists():
        (generate_full if kind == "full" else generate)(folder, dataset, seed=seed)
        marker.touch()
    return folder


STANDIN_ROOTS = {"quick": "synthetic_data", "full": "synthetic_full"}  # under a run's --out_dir


def ensure_standin(out_dir: Path, dataset: str, kind: str) -> Path:
    """The --synthetic=`kind` stand-in of `dataset` under out_dir, generated on first use; returns
    the root that holds <dataset>/."""
    root = Path(out_dir) / STANDIN_ROOTS[kind]
    ensure_benchmark(root, dataset, kind=kind)
    return root


def write_archive(path: Path, source: str = "authors", datasets=None, seed: int = 0,
                  per_seen: tuple[int, int] = (4, 2), per_unseen: int = 3, feature_dim: int = 64,
                  noise: float = 2.0) -> Path:
    """A zip in the layout of `source`'s archive (benchmarks.SOURCES), small synthetic datasets inside."""
    top, layouts = SOURCES[source].top, SOURCES[source].holds
    with tempfile.TemporaryDirectory() as tmp, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for i, name in enumerate(datasets or layouts):
            folder = generate(Path(tmp) / name, name, seed + i, per_seen, per_unseen, feature_dim, noise,
                              layouts[name])
            if source == "xlsa17":
                (folder / "sent_splits.mat").unlink(missing_ok=True)  # xlsa17 has CUB's 312-d attributes only
            for f in sorted(folder.iterdir()):
                zf.write(f, f"{top}/{name}/{f.name}")
    return Path(path)


@dataclass
class SyntheticOptions:
    dataset: str = opt("", f"which stand-in: {' | '.join(BENCHMARKS)}", positional=True, dataset=True,
                       choices=("", *BENCHMARKS))
    out_root: str = opt("", "the folder that receives <DATASET>/", positional=True, path=True)
    seed: int = opt(0, "seed of the generator (runs with --synthetic use 6152)", low=0)
    full: bool = opt(False, "the benchmark's real size (every count of benchmarks.py), as --synthetic=full uses")


def main(argv: list[str]) -> Path:
    opts = SyntheticOptions(**cli.parse(cli.parser_for("synthetic.py", __doc__, (SyntheticOptions, None)), argv))
    if not (opts.dataset and opts.out_root):
        raise cli.ConfigError("usage: python synthetic.py DATASET OUT_ROOT [--full] (see --help)")
    folder = (generate_full if opts.full else generate)(Path(opts.out_root) / opts.dataset, opts.dataset,
                                                        seed=opts.seed)
    print(folder)
    return folder


if __name__ == "__main__":
    cli.main_guard(main, sys.argv[1:])
