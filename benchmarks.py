"""The four benchmarks and where their files come from: the one table every module reads.

Counts are those of the proposed splits of Xian et al. (xlsa17), checked against the real
split files by tests/test_prepare.py. Adding a benchmark is one `Benchmark(...)` line here,
a `train_<NAME>.py` with its settings, and (for the one-command download) its archive below.
tests/test_layout.py fails if any of these counts is written anywhere else.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Benchmark:
    name: str
    images: int               # rows of res101.mat
    seen: int                 # classes with training images
    unseen: int               # classes with test images only
    semantic_dims: dict       # split-file stem -> dimension of its class vectors (first: the one the authors used)
    trainval: int             # rows of trainval_loc / test_seen_loc / test_unseen_loc
    test_seen: int
    test_unseen: int
    validation_classes: int   # seen classes xlsa17 holds out in val_loc (--validation's unseen classes)
    authors_layout: str       # how the authors' data archive ships it: xlsa17 | epgn
    feature_dim: int = 2048   # ResNet-101 pooled features

    @property
    def classes(self) -> int:
        return self.seen + self.unseen


BENCHMARKS = {b.name: b for b in (
    Benchmark("AWA2", images=37322, seen=40, unseen=10, semantic_dims={"att": 85},
              trainval=23527, test_seen=5882, test_unseen=7913, validation_classes=13, authors_layout="xlsa17"),
    Benchmark("APY", images=15339, seen=20, unseen=12, semantic_dims={"att": 64},
              trainval=5932, test_seen=1483, test_unseen=7924, validation_classes=5, authors_layout="xlsa17"),
    Benchmark("CUB", images=11788, seen=150, unseen=50, semantic_dims={"sent": 1024, "att": 312},
              trainval=7057, test_seen=1764, test_unseen=2967, validation_classes=50, authors_layout="epgn"),
    Benchmark("FLO", images=8189, seen=82, unseen=20, semantic_dims={"att": 1024},
              trainval=5631, test_seen=1403, test_unseen=1155, validation_classes=20, authors_layout="epgn"),
)}
NAMES = tuple(BENCHMARKS)


def canonical_name(name: str) -> str:
    """A benchmark's name as spelled here whatever its case (awa2 -> AWA2); other names unchanged."""
    return next((b for b in BENCHMARKS if b.lower() == name.lower()), name)


@dataclass(frozen=True)
class Source:
    """A downloadable archive holding some of the benchmarks (data/prepare.py)."""
    url: str
    top: str                  # the folder the datasets sit in inside the archive
    holds: dict               # dataset -> layout of its files in the archive (xlsa17 | epgn)
    what: str
    # The archive's sha256 (hex), checked on every download and every reuse of the cached copy.
    # None = not known to this project: the first download that opens as a zip then has its sha256
    # recorded next to it in the cache (<archive>.sha256, `sha256sum -c` format), and later runs
    # check the cached or downloaded archive against that record.
    sha256: str | None = None


SOURCES = {
    "authors": Source(
        url="https://www.dropbox.com/s/5sprhvavkb3pu5m/GSMFlow_data.zip?dl=1",
        top="GSMFlow_data/data",  # not documented: data/prepare.py finds datasets at any depth
        holds={name: b.authors_layout for name, b in BENCHMARKS.items()},
        what="the data archive linked from the authors' GSMFlow README, the data of the paper: "
             "xlsa17 res101.mat/att_splits.mat for AWA2 and APY, E-PGN data.mat/label.mat for CUB and FLO",
        # Unknown: the archive could not be downloaded where this was written. A maintainer pins it
        # with the hex digest `sha256sum` prints for a download `python -m data.prepare` accepted
        # (the same digest is in <cache>/<name>.sha256 and in each SHA256SUMS comment).
        sha256=None),
    "xlsa17": Source(
        url="https://datasets.d2.mpi-inf.mpg.de/xian/xlsa17.zip",
        top="xlsa17/data",
        holds={"AWA2": "xlsa17", "APY": "xlsa17", "CUB": "xlsa17"},
        what="Xian et al.'s proposed splits v2.0 (about 880 MB): AWA2, APY, and CUB with its 312-d attributes "
             "(train with --class_embedding=att); also AWA1 and SUN, not trained here; no FLO",
        sha256=None),  # unknown, as above
}
