"""The data: loaders of both layouts and their checks, preprocessing, the validation split,
class centroids, relative-positioning anchors, the batch sampler, and the metrics.

What the authors' util.py holds. Everything follows docs/method.md (the authors' reference
run); where the reference has a quirk that changes numbers, the quirk is kept and named in a
comment. Imports matfiles (MAT reading) and benchmarks (the counts) only.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics.pairwise import cosine_similarity
from sklearn.preprocessing import MinMaxScaler

from benchmarks import BENCHMARKS
from matfiles import DataError, check_finite, load_mat, mat_array, one_based_index  # noqa: F401 (DataError: util's API)


# ----------------------------------------------------------------------------- data I/O

@dataclass
class GZSLData:
    """One benchmark, preprocessed and with remapped labels (seen 0..S-1, unseen 0..U-1)."""
    name: str
    layout: str                    # 'xlsa17' or 'epgn'
    train_feature: np.ndarray      # (N_train, D) float32, seen classes only
    train_label: np.ndarray        # (N_train,) int64 in 0..S-1
    test_seen_feature: np.ndarray
    test_seen_label: np.ndarray    # 0..S-1
    test_unseen_feature: np.ndarray
    test_unseen_label: np.ndarray  # 0..U-1
    seen_semantics: np.ndarray     # (S, d_a) float32, row i = remapped seen class i
    unseen_semantics: np.ndarray   # (U, d_a) float32
    source: str = ""               # the files it came from, for the log
    seen_ids: np.ndarray | None = None    # the dataset's own 1-based class ids of seen class 0..S-1
    unseen_ids: np.ndarray | None = None
    rows: dict | None = None       # xlsa17: the 0-based image rows behind each split
    split: str = "proposed"        # or "validation": the leak-free split of trainval
    files: tuple = ()              # the files it was read from (their sha256 goes into the run's records)
    # Validation split only: the rows of the proposed split's training set (trainval). A run on this
    # split evaluates at the fractions of its schedule where a run on trainval would (Config.evaluations).
    reference_train: int = 0
    class_semantics: np.ndarray | None = None  # E-PGN: data.mat's `attribute`, every class in the file's own
                                               # order (the TMM code's all-class anchors); None in other layouts

    def signature(self) -> dict:
        """What a checkpoint must agree with to be used on this data."""
        return {"dataset": self.name, "n_seen": self.n_seen, "n_unseen": self.n_unseen,
                "feature_dim": self.feature_dim, "semantic_dim": int(self.seen_semantics.shape[1]),
                "n_train": len(self.train_label), "split": self.split}

    @property
    def n_seen(self) -> int:
        return self.seen_semantics.shape[0]

    @property
    def n_unseen(self) -> int:
        return self.unseen_semantics.shape[0]

    @property
    def feature_dim(self) -> int:
        return self.train_feature.shape[1]

    @property
    def all_semantics(self) -> np.ndarray:
        """Seen then unseen rows: the order the reference uses for APY's anchors."""
        return np.concatenate([self.seen_semantics, self.unseen_semantics])

    def describe(self) -> str:
        split = ", LEAK-FREE VALIDATION SPLIT of trainval" if self.split == "validation" else ""
        return (f"{self.name} ({self.layout}{split}): {self.n_seen} seen + {self.n_unseen} unseen classes, "
                f"semantic dim {self.seen_semantics.shape[1]}, feature dim {self.feature_dim}; "
                f"train {len(self.train_label)} / test seen {len(self.test_seen_label)} / "
                f"test unseen {len(self.test_unseen_label)} images")


def remap(labels: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Class ids -> positions in the sorted `classes` (the reference's map_label)."""
    return np.searchsorted(classes, labels).astype(np.int64)


def detect_layout(folder: Path, layout: str) -> str:
    if layout != "auto":
        return layout
    return "epgn" if (folder / "data.mat").is_file() else "xlsa17"


def load_dataset(dataroot: str, dataset: str, layout: str = "auto", image_embedding: str = "res101",
                 class_embedding: str = "att", validation: bool = False, val_seen_share: float = 0.2,
                 seed: int = 0) -> GZSLData:
    """Load `dataroot/dataset` in either layout (see data/README.md).

    With `validation`, the returned splits come from trainval alone (see `validation_rows`).
    """
    folder = Path(dataroot) / dataset
    layout = resolve_layout(folder, dataset, layout, class_embedding)
    if layout == "epgn":
        return load_epgn(folder, dataset, (val_seen_share, seed) if validation else None)
    return load_xlsa17(folder, dataset, image_embedding, class_embedding,
                       (val_seen_share, seed) if validation else None)


def resolve_layout(folder: Path, dataset: str, layout: str, class_embedding: str) -> str:
    """The layout load_dataset reads folder in: "xlsa17" or "epgn"."""
    if not folder.is_dir():
        raise DataError(f"{folder}: dataset folder not found (see data/README.md, or run with --synthetic)")
    if dataset == "CUB" and class_embedding == "att":
        # E-PGN's CUB data.mat holds the 1024-d sentences; the 312-d attributes are xlsa17 only
        if layout == "epgn":
            raise DataError(f"{folder / 'data.mat'}: the E-PGN layout holds CUB's 1024-d sentence vectors; "
                            f"--class_embedding=att (312-d attributes) needs res101.mat + att_splits.mat")
        return "xlsa17"
    return detect_layout(folder, layout)


def layout_files(folder: Path, layout: str, image_embedding: str = "res101",
                 class_embedding: str = "att") -> tuple[Path, Path]:
    """The two files of a dataset folder: (features, splits) in xlsa17, (data.mat, label.mat) in E-PGN."""
    if layout == "epgn":
        return folder / "data.mat", folder / "label.mat"
    return folder / f"{image_embedding}.mat", folder / f"{class_embedding}_splits.mat"


def dataset_files(dataroot: str, dataset: str, layout: str = "auto", image_embedding: str = "res101",
                  class_embedding: str = "att") -> tuple[Path, Path]:
    """The files load_dataset reads with these arguments, without reading them (reproduce.py hashes them)."""
    folder = Path(dataroot) / dataset
    return layout_files(folder, resolve_layout(folder, dataset, layout, class_embedding), image_embedding,
                        class_embedding)


def validation_rows(labels: np.ndarray, trainval: np.ndarray, val_loc: np.ndarray, share: float,
                    seed: int) -> dict[str, np.ndarray]:
    """A leak-free GZSL split of trainval alone (0-based image rows).

    Validation-unseen: the trainval images whose class is one of xlsa17's validation classes
    (the classes of val_loc, read only through val_loc rows that are in trainval: val_loc
    also holds test_seen images). Seen-validation: `share` of each other class's trainval
    images, drawn with `seed`. Training: the rest. No test row is touched.
    """
    val_classes = np.unique(labels[np.intersect1d(val_loc, trainval)])
    is_val = np.isin(labels[trainval], val_classes)
    rng = np.random.default_rng(seed)
    held, train = [], []
    others = trainval[~is_val]
    for c in np.unique(labels[others]):
        rows = others[labels[others] == c]
        k = share_count(share, rows.size)  # keep >= 1 training image
        pick = np.zeros(rows.size, bool)
        pick[rng.choice(rows.size, k, replace=False)] = True
        held.append(rows[pick])
        train.append(rows[~pick])
    return {"trainval_loc": np.sort(np.concatenate(train)), "test_seen_loc": np.sort(np.concatenate(held)),
            "test_unseen_loc": np.sort(trainval[is_val])}


def load_xlsa17(folder: Path, name: str, image_embedding: str = "res101", class_embedding: str = "att",
                validation: tuple[float, int] | None = None) -> GZSLData:
    """`res101.mat` + `<class_embedding>_splits.mat` of Xian et al.'s proposed splits.

    `validation=(share, seed)` replaces the three splits by `validation_rows` of trainval.
    """
    feat_path, split_path = layout_files(folder, "xlsa17", image_embedding, class_embedding)
    fmat = load_mat(feat_path)
    features = mat_array(fmat, "features", feat_path, ndim=2)
    n_labels = mat_array(fmat, "labels", feat_path).size
    if features.shape[1] != n_labels:
        hint = " (it looks transposed: xlsa17 stores one column per image)" if features.shape[0] == n_labels else ""
        raise DataError(f"{feat_path}: 'features' has {features.shape[1]} columns (images) "
                        f"but 'labels' has {n_labels} entries{hint}")
    smat = load_mat(split_path)
    att = mat_array(smat, "att", split_path, ndim=2)
    check_finite(att, split_path, "att")
    n_images, n_classes = features.shape[1], att.shape[1]
    labels = one_based_index(fmat, "labels", feat_path, n_classes,
                             f"'att' in {split_path.name} has columns (classes)")
    loc = lambda key: one_based_index(smat, key, split_path, n_images, f"the number of images in {feat_path.name}")
    locs = {key: loc(key) for key in ("trainval_loc", "test_seen_loc", "test_unseen_loc")}
    n_trainval = locs["trainval_loc"].size
    if validation is not None:
        locs = validation_rows(labels, locs["trainval_loc"], loc("val_loc"), *validation)
    used = np.concatenate(list(locs.values()))
    check_finite(features[:, used], feat_path, "features")

    seen = np.unique(labels[locs["trainval_loc"]])
    unseen = np.unique(labels[locs["test_unseen_loc"]])
    both = np.intersect1d(seen, unseen)
    if both.size:
        raise DataError(f"{split_path}: class ids {(both + 1).tolist()} are both seen (trainval_loc) "
                        f"and unseen (test_unseen_loc)")
    stray = np.setdiff1d(np.unique(labels[locs["test_seen_loc"]]), seen)
    if stray.size:
        raise DataError(f"{split_path}: test_seen_loc holds images of class ids {(stray + 1).tolist()} "
                        f"that have no trainval_loc image")

    x = features.T
    scaled = reference_scaling({k: x[locs[k]] for k in ("trainval_loc", "test_seen_loc", "test_unseen_loc")},
                               "xlsa17", f"{feat_path}: 'features' are constant over trainval_loc")
    train, test_seen, test_unseen = (torch.from_numpy(scaled[k]) for k in scaled)

    att_rows = torch.from_numpy(att.T).float().numpy()  # the reference casts before indexing
    split = "validation" if validation is not None else "proposed"
    return GZSLData(
        name=name, layout="xlsa17",
        train_feature=train.numpy(), train_label=remap(labels[locs["trainval_loc"]], seen),
        test_seen_feature=test_seen.numpy(), test_seen_label=remap(labels[locs["test_seen_loc"]], seen),
        test_unseen_feature=test_unseen.numpy(), test_unseen_label=remap(labels[locs["test_unseen_loc"]], unseen),
        seen_semantics=np.ascontiguousarray(att_rows[seen]),
        unseen_semantics=np.ascontiguousarray(att_rows[unseen]),
        seen_ids=seen + 1, unseen_ids=unseen + 1, rows=locs, split=split,
        source=f"{feat_path} + {split_path} ({split} split)", files=(feat_path, split_path),
        reference_train=n_trainval if validation is not None else 0)


def reference_scaling(parts: dict[str, np.ndarray], layout: str, constant_error: str) -> dict[str, np.ndarray]:
    """The reference's feature preprocessing; `parts`: training rows first, then the others (float32 out).

    xlsa17: a MinMaxScaler fitted on the training rows is applied to every part, then each is
    divided by the max of the scaled training rows (1.0 unless a dimension is constant: a no-op
    kept as the reference has it). E-PGN (quirk of the reference): the scaler is fitted but its
    output unused: the raw features are divided by that max. `constant_error`: the DataError's
    text when the training rows are constant.
    """
    train_key = next(iter(parts))
    scaler = MinMaxScaler()
    scaled_train = scaler.fit_transform(parts[train_key])
    if layout == "xlsa17":
        out = {k: torch.from_numpy(scaled_train if k == train_key else scaler.transform(v)).float()
               for k, v in parts.items()}
        mx = out[train_key].max()
        if not mx > 0:
            raise DataError(constant_error)
        return {k: t.mul_(1 / mx).numpy() for k, t in out.items()}
    mx = scaled_train.max()
    if not mx > 0:
        raise DataError(constant_error)
    return {k: torch.from_numpy(np.asarray(v * (1 / mx))).float().numpy() for k, v in parts.items()}


def share_count(share: float, n: int, keep: int = 1) -> int:
    """round(share * n), at least 1 and leaving at least `keep` of the n (the split helpers' clamp)."""
    return min(max(int(round(share * n)), 1), n - keep)


def load_epgn(folder: Path, name: str, validation: tuple[float, int] | None = None) -> GZSLData:
    """`data.mat` + `label.mat` as released with E-PGN (the authors' CUB and FLO runs).

    `validation=(share, seed)`: the leak-free split of the training images instead
    (`load_epgn_validation`); the test arrays are then never read.
    """
    if validation is not None:
        return load_epgn_validation(folder, name, *validation)
    data_path, label_path = layout_files(folder, "epgn")
    dmat = load_mat(data_path)
    feats = {k: mat_array(dmat, k, data_path, ndim=2) for k in ("train_fea", "test_seen_fea", "test_unseen_fea")}
    seen_pro = mat_array(dmat, "seen_pro", data_path, ndim=2)
    unseen_pro = mat_array(dmat, "unseen_pro", data_path, ndim=2)
    for key, arr in (("seen_pro", seen_pro), ("unseen_pro", unseen_pro), *feats.items()):
        check_finite(arr, data_path, key)
    widths = {k: v.shape[1] for k, v in feats.items()}
    if len(set(widths.values())) != 1:
        raise DataError(f"{data_path}: feature widths differ: {widths}")
    if seen_pro.shape[1] != unseen_pro.shape[1]:
        raise DataError(f"{data_path}: 'seen_pro' has {seen_pro.shape[1]} columns but 'unseen_pro' has "
                        f"{unseen_pro.shape[1]}")
    attribute = epgn_attribute(dmat, data_path, seen_pro.shape[1])

    lmat = load_mat(label_path)
    label_keys = {"train_fea": "train_idx", "test_seen_fea": "test_seen_idex", "test_unseen_fea": "test_unseen_idex"}
    labels = {}
    for fkey, lkey in label_keys.items():
        n = mat_array(lmat, lkey, label_path).size
        if n != feats[fkey].shape[0]:
            raise DataError(f"{label_path}: '{lkey}' has {n} labels but '{fkey}' in {data_path.name} "
                            f"has {feats[fkey].shape[0]} rows")
        labels[lkey] = one_based_index(lmat, lkey, label_path, 10**9, "the limit")
    n_seen, n_unseen = seen_pro.shape[0], unseen_pro.shape[0]
    # Reference: train labels index seen_pro directly; test labels are remapped by their sorted ids.
    if labels["train_idx"].max() >= n_seen:
        raise DataError(f"{label_path}: 'train_idx' reaches class {labels['train_idx'].max() + 1} but "
                        f"'seen_pro' in {data_path.name} has only {n_seen} rows (classes)")
    for lkey, pro_key, n_pro in (("test_seen_idex", "seen_pro", n_seen), ("test_unseen_idex", "unseen_pro", n_unseen)):
        n_cls = np.unique(labels[lkey]).size
        if n_cls != n_pro:
            raise DataError(f"{label_path}: '{lkey}' holds {n_cls} classes but '{pro_key}' in "
                            f"{data_path.name} has {n_pro} rows (classes)")
    shared = [i + 1 for i, row in enumerate(seen_pro) if (np.abs(unseen_pro - row).max(axis=1) == 0).any()]
    if shared:
        raise DataError(f"{data_path}: seen classes {shared} (rows of 'seen_pro') also appear in 'unseen_pro': "
                        f"a class cannot be both seen and unseen")
    if np.unique(labels["train_idx"]).size != n_seen:
        raise DataError(f"{label_path}: 'train_idx' holds {np.unique(labels['train_idx']).size} classes but "
                        f"'seen_pro' has {n_seen} rows: every seen class needs training images")

    scaled = reference_scaling(feats, "epgn", f"{data_path}: 'train_fea' is constant")
    ts, tu = labels["test_seen_idex"], labels["test_unseen_idex"]
    return GZSLData(
        name=name, layout="epgn",
        train_feature=scaled["train_fea"], train_label=labels["train_idx"],
        test_seen_feature=scaled["test_seen_fea"], test_seen_label=remap(ts, np.unique(ts)),
        test_unseen_feature=scaled["test_unseen_fea"], test_unseen_label=remap(tu, np.unique(tu)),
        seen_semantics=seen_pro.astype(np.float32), unseen_semantics=unseen_pro.astype(np.float32),
        seen_ids=np.arange(1, n_seen + 1), unseen_ids=np.arange(1, n_unseen + 1),
        source=f"{data_path} + {label_path}", files=(data_path, label_path), class_semantics=attribute)


def epgn_attribute(dmat: dict, data_path: Path, width: int) -> np.ndarray | None:
    """data.mat's `attribute` (all classes, the file's order) as float32, or None when the file has none.

    Read as it is: that it holds the classes of seen_pro and unseen_pro (as the published files
    do) is not assumed, only that its rows are class vectors of the same width."""
    if "attribute" not in dmat:
        return None
    attribute = mat_array(dmat, "attribute", data_path, ndim=2)
    check_finite(attribute, data_path, "attribute")
    if attribute.shape[1] != width:
        raise DataError(f"{data_path}: 'attribute' has {attribute.shape[1]} columns but 'seen_pro' has {width}")
    return attribute.astype(np.float32)


# E-PGN files have no val_loc, so --validation draws as many of their seen classes as xlsa17's
# val_loc holds (benchmarks.Benchmark.validation_classes).
OTHER_VALIDATION_SHARE = 0.25  # any other dataset name: a quarter of its seen classes (APY's 5/20, FLO's 20/82)


def validation_class_count(name: str, n_seen: int) -> int:
    """How many seen classes become validation-unseen: xlsa17's count, at least 1, at most n_seen - 1."""
    n = BENCHMARKS[name].validation_classes if name in BENCHMARKS else round(OTHER_VALIDATION_SHARE * n_seen)
    return min(max(n, 1), n_seen - 1)  # at least one class each side


def load_epgn_validation(folder: Path, name: str, share: float, seed: int) -> GZSLData:
    """The leak-free GZSL split of E-PGN's training images (`--validation` without val_loc).

    `validation_class_count` seen classes, drawn with `seed`, become validation-unseen (all
    their training images); `validation_rows` then holds out `share` of each other class's
    images as seen-validation, exactly as for xlsa17. Only `train_fea`, `seen_pro` and
    `train_idx` are read from the files: the test arrays are not loaded, checked or copied.
    """
    data_path, label_path = layout_files(folder, "epgn")
    dmat = load_mat(data_path, keys=["train_fea", "seen_pro"])
    features = mat_array(dmat, "train_fea", data_path, ndim=2)
    seen_pro = mat_array(dmat, "seen_pro", data_path, ndim=2)
    for key, arr in (("train_fea", features), ("seen_pro", seen_pro)):
        check_finite(arr, data_path, key)
    lmat = load_mat(label_path, keys=["train_idx"])
    n_labels = mat_array(lmat, "train_idx", label_path).size
    if n_labels != features.shape[0]:
        raise DataError(f"{label_path}: 'train_idx' has {n_labels} labels but 'train_fea' in {data_path.name} "
                        f"has {features.shape[0]} rows")
    n_seen = seen_pro.shape[0]
    labels = one_based_index(lmat, "train_idx", label_path, n_seen, f"the number of rows of 'seen_pro' in {data_path.name}")
    if np.unique(labels).size != n_seen or n_seen < 2:
        raise DataError(f"{label_path}: 'train_idx' holds {np.unique(labels).size} classes but 'seen_pro' has "
                        f"{n_seen} rows: every seen class needs training images (and --validation needs two)")

    n_val = validation_class_count(name, n_seen)
    why = (f"as many as xlsa17 holds out for {name}" if name in BENCHMARKS
           else f"a quarter of them ({name} is not an xlsa17 dataset)")
    unseen = np.sort(np.random.default_rng(seed).choice(n_seen, n_val, replace=False))
    every = np.arange(labels.size)
    locs = validation_rows(labels, every, every[np.isin(labels, unseen)], share, seed)
    seen = np.setdiff1d(np.arange(n_seen), unseen)
    scaled = reference_scaling({k: features[locs[k]] for k in ("trainval_loc", "test_seen_loc", "test_unseen_loc")},
                               "epgn", f"{data_path}: 'train_fea' is constant")
    part = scaled.__getitem__
    label = lambda key, classes: remap(labels[locs[key]], classes)
    return GZSLData(
        name=name, layout="epgn",
        train_feature=part("trainval_loc"), train_label=label("trainval_loc", seen),
        test_seen_feature=part("test_seen_loc"), test_seen_label=label("test_seen_loc", seen),
        test_unseen_feature=part("test_unseen_loc"), test_unseen_label=label("test_unseen_loc", unseen),
        seen_semantics=seen_pro[seen].astype(np.float32), unseen_semantics=seen_pro[unseen].astype(np.float32),
        seen_ids=seen + 1, unseen_ids=unseen + 1, rows=locs, split="validation", reference_train=labels.size,
        source=f"{data_path} + {label_path} (validation split: no val_loc in the E-PGN layout, so {n_val} of "
               f"the {n_seen} seen classes, drawn with seed {seed}, are validation-unseen, {why}; "
               f"test arrays not read)")


def class_centroids(features: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Mean feature of each class (float32 rows, as the reference computes them)."""
    return np.stack([features[labels == c].mean(axis=0) for c in range(n_classes)]).astype(np.float32)


# ------------------------------------------------------------------- relative positioning

def relative_positioning_anchors(semantics: np.ndarray) -> list[int]:
    """Rows with the smallest, the largest and the median cosine-similarity row sum.

    The median is element floor(n/2) of the sorted row sums; if several rows tie on that
    value the first is taken (the reference would fail on a tie).
    """
    row_sums = cosine_similarity(semantics, semantics).sum(-1)
    median_value = np.sort(row_sums)[len(row_sums) // 2]
    median = int(np.flatnonzero(row_sums == median_value)[0])
    return [int(np.argmin(row_sums)), int(np.argmax(row_sums)), median]


# ----------------------------------------------------------------------------- batching

class EpochPermutationSampler:
    """The reference's batch order, as index arrays.

    A numpy permutation of the training set is consumed `batch_size` rows at a time; a
    new one is drawn as soon as at most `batch_size` rows of the current one remain
    (that tail is skipped). Uses the global numpy RNG like the reference.
    """

    def __init__(self, n: int, batch_size: int):
        if batch_size >= n:
            raise DataError(f"batchsize {batch_size} must be smaller than the {n} training images")
        self.n, self.batch_size = n, batch_size
        self._shuffle()

    def _shuffle(self) -> None:
        self.perm = np.random.permutation(np.arange(self.n))
        self.cursor = 0

    def next(self) -> np.ndarray:
        if self.cursor + self.batch_size >= self.n:
            self._shuffle()
        idx = self.perm[self.cursor:self.cursor + self.batch_size]
        self.cursor += self.batch_size
        return idx

    def state_dict(self) -> dict:
        return {"perm": torch.from_numpy(self.perm.astype(np.int64)), "cursor": self.cursor}

    def load_state_dict(self, state: dict) -> None:
        self.perm, self.cursor = state["perm"].numpy().astype(np.int64), int(state["cursor"])


# ----------------------------------------------------------------------------- metrics

def per_class_accuracy(predicted: np.ndarray, labels: np.ndarray) -> float:
    """Mean over the classes present in `labels` of each class's top-1 accuracy."""
    predicted, labels = np.asarray(predicted), np.asarray(labels)
    return float(np.mean([(predicted[labels == c] == c).mean() for c in np.unique(labels)]))


def harmonic_mean(u: float, s: float) -> float:
    return 2 * u * s / (u + s) if u + s > 0 else 0.0
