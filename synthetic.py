"""Generate small GZSL benchmarks in the exact xlsa17 (or E-PGN) file layout.

The real feature files cannot be downloaded everywhere; these stand-ins have the real
benchmarks' classes, seen/unseen counts and semantic dimensions, fewer images, and
features whose class structure follows the semantic vectors (so a conditional flow can
learn to synthesise unseen classes). They are for smoke runs and tests, not for numbers.

    python synthetic.py AWA2 data_synthetic      # writes data_synthetic/AWA2/{res101,att_splits}.mat
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


def write_xlsa17(folder: Path, features: np.ndarray, labels: np.ndarray, splits: dict[str, dict]) -> None:
    """res101.mat (features D x N, labels N x 1) and one `<stem>_splits.mat` per entry of `splits`."""
    folder.mkdir(parents=True, exist_ok=True)
    n = labels.size
    files = np.empty((n, 1), dtype=object)
    files[:, 0] = [f"images/img_{i:06d}.jpg" for i in range(n)]
    sio.savemat(folder / "res101.mat", {"features": features, "labels": labels.reshape(-1, 1).astype(np.float64),
                                        "image_files": files})
    for stem, content in splits.items():
        out = {k: (np.asarray(v).reshape(-1, 1).astype(np.uint16) if k.endswith("_loc") else v)
               for k, v in content.items()}
        sio.savemat(folder / f"{stem}_splits.mat", out)


def write_epgn(folder: Path, train_fea, test_seen_fea, test_unseen_fea, seen_pro, unseen_pro,
               train_idx, test_seen_idex, test_unseen_idex) -> None:
    """data.mat + label.mat in E-PGN's layout (rows = images / classes, 1-based labels)."""
    folder.mkdir(parents=True, exist_ok=True)
    col = lambda v: np.asarray(v).reshape(-1, 1).astype(np.float64)
    sio.savemat(folder / "data.mat", {
        "train_fea": train_fea, "test_seen_fea": test_seen_fea, "test_unseen_fea": test_unseen_fea,
        "seen_pro": seen_pro, "unseen_pro": unseen_pro, "attribute": np.concatenate([seen_pro, unseen_pro]),
        "att_train": seen_pro[np.asarray(train_idx).reshape(-1) - 1]})
    sio.savemat(folder / "label.mat", {"train_idx": col(train_idx), "test_seen_idex": col(test_seen_idex),
                                       "test_unseen_idex": col(test_unseen_idex),
                                       "train_label_new": col(train_idx)})


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
    names = np.empty((n_classes, 1), dtype=object)
    names[:, 0] = [f"{i:03d}.class_{i}" for i in range(1, n_classes + 1)]
    # xlsa17's train/val split of the seen classes (val = a fifth of them), for completeness
    val_classes = rng.choice(seen, max(1, seen.size // 5), replace=False)
    tv = locs["trainval_loc"]
    in_val = np.isin(labels[tv - 1], val_classes)
    splits = {stem: {"att": att, "original_att": att * 100, "allclasses_names": names, **locs,
                     "train_loc": tv[~in_val], "val_loc": tv[in_val]} for stem, att in atts.items()}
    write_xlsa17(folder, features, labels, splits)
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


def ensure_benchmark(root: Path, dataset: str, seed: int = 6152) -> Path:
    """Generate root/dataset once; later --synthetic runs (any training seed) reuse it."""
    folder = Path(root) / dataset
    marker = folder / f".synthetic_seed_{seed}"
    if not marker.exists():
        generate(folder, dataset, seed=seed)
        marker.touch()
    return folder


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
    seed: int = opt(0, "seed of the generator", low=0)


def main(argv: list[str]) -> Path:
    opts = SyntheticOptions(**cli.parse(cli.parser_for("synthetic.py", __doc__, (SyntheticOptions, None)), argv))
    if not (opts.dataset and opts.out_root):
        raise cli.ConfigError("usage: python synthetic.py DATASET OUT_ROOT (see --help)")
    folder = generate(Path(opts.out_root) / opts.dataset, opts.dataset, seed=opts.seed)
    print(folder)
    return folder


if __name__ == "__main__":
    cli.main_guard(main, sys.argv[1:])
