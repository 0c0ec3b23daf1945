"""Staging the benchmark files, for data/prepare.py: their two layouts, finding a dataset's files
in a zip or folder (Archive), and the verification of staged files against the benchmark's
counts (benchmarks.py, the project's one table) with the project's own loaders.
"""
from __future__ import annotations

import shutil
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from benchmarks import Benchmark
from cli import CommandError


LAYOUT_FILES = {"xlsa17": ("res101.mat", "att_splits.mat", "sent_splits.mat"), "epgn": ("data.mat", "label.mat")}
KNOWN_FILES = set(LAYOUT_FILES["xlsa17"] + LAYOUT_FILES["epgn"])


class PrepareError(CommandError):
    """One line: what failed, naming the file, URL or option; data/ is left as it was (exit code 2)."""


# --------------------------------------------------------------------- finding the files

class Archive:
    """A zip or a folder; `members()` maps archive paths (posix) to what `copy` needs."""

    def __init__(self, path: Path, label: str):
        self.path, self.label = path, label
        self.zip = None
        if path.is_dir():
            self._members = {p.relative_to(path.parent).as_posix(): p for p in path.rglob("*.mat") if p.is_file()}
        else:
            try:
                self.zip = zipfile.ZipFile(path)
            except (zipfile.BadZipFile, OSError) as exc:
                raise PrepareError(f"{label}: not a zip archive ({exc})") from None
            self._members = {i.filename: i for i in self.zip.infolist() if not i.is_dir()}

    def size(self, member: str) -> int:
        m = self._members[member]
        return m.file_size if self.zip else m.stat().st_size

    def copy(self, member: str, dest: Path) -> None:
        if self.zip is None:
            shutil.copyfile(self._members[member], dest)
            return
        try:
            with self.zip.open(self._members[member]) as src, open(dest, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
        except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
            raise PrepareError(f"{self.label}: {member} is corrupt ({exc})") from None
        except (NotImplementedError, RuntimeError):  # encrypted, or a compression method zipfile lacks
            self.check(member)
            raise

    # compression methods zipfile cannot unpack (APPNOTE.TXT 4.4.5), for the error line
    METHODS = {6: "Implode", 8: "Deflate", 9: "Deflate64", 12: "bzip2", 14: "LZMA", 93: "Zstandard", 95: "xz",
               97: "WavPack", 98: "PPMd", 99: "AES encryption"}

    def check(self, member: str) -> None:
        """Stop with one line on a zip member Python's zipfile cannot unpack: an encrypted one, or one
        compressed with a method (Deflate64, PPMd, ...) or flag it does not support. A corrupt member is
        left to copy(), which names it and drops a downloaded archive from the cache."""
        if self.zip is None:
            return
        info = self._members[member]
        try:
            with self.zip.open(info):
                return
        except NotImplementedError as exc:  # (a RuntimeError: first)
            method = self.METHODS.get(info.compress_type)
            what = (f"uses compression method {info.compress_type}" + (f" ({method})" if method else "")
                    if str(exc) == "That compression method is not supported" else f"cannot be unpacked ({exc})")
        except RuntimeError as exc:
            what = "is encrypted" if info.flag_bits & 0x1 else f"cannot be unpacked ({exc})"
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError):
            return
        raise PrepareError(f"{self.label}: {member} {what}, which Python's zipfile cannot unpack: unpack the "
                           f"archive with another tool (e.g. 7z x) and pass the folder with --from=FOLDER")

    def folders(self, dataset: str) -> dict[str, dict[str, str]]:
        """{folder: {file name: member}} for every folder named like `dataset` (any depth, any case)
        that holds benchmark files."""
        folders: dict[str, dict[str, str]] = {}
        for member in self._members:
            p = PurePosixPath(member)
            if p.name in KNOWN_FILES and p.parent.name.lower() == dataset.lower() and "__MACOSX" not in p.parts:
                folders.setdefault(str(p.parent), {})[p.name] = member
        return folders

    def find(self, dataset: str, preferred: str | None = None) -> tuple[str, dict[str, str]]:
        """(folder, {file name: member}) of the one folder holding a complete layout of `dataset`;
        `preferred` (the source's layout for it) wins when there are several."""
        folders = self.folders(dataset)
        complete = {f: kept for f, kept in ((f, complete_files(files)) for f, files in folders.items()) if kept}
        if not complete and folders:
            folder, files = next(iter(folders.items()))
            raise PrepareError(f"{self.label}: {folder}/ holds only {', '.join(sorted(files))}: neither "
                               f"res101.mat + att_splits.mat/sent_splits.mat (xlsa17) nor data.mat + label.mat (E-PGN)")
        if not complete:
            found = sorted({PurePosixPath(m).parent.name for m in self._members if PurePosixPath(m).name in KNOWN_FILES})
            raise PrepareError(f"{self.label}: no {dataset} in it (no folder named {dataset} holding res101.mat + "
                               f"att_splits.mat or data.mat + label.mat); datasets found: {', '.join(found) or 'none'}")
        if len(complete) > 1 and preferred:
            complete = {f: files for f, files in complete.items() if layout_of(files) == preferred} or complete
        if len(complete) > 1:
            raise PrepareError(f"{self.label}: {dataset} is in several folders ({', '.join(sorted(complete))}); "
                               f"unpack it and pass the one you want with --from=FOLDER")
        return next(iter(complete.items()))


def complete_files(files: dict[str, str]) -> dict[str, str]:
    """The files of `files` that belong to a complete layout (a lone data.mat is left out)."""
    keep = {}
    if "res101.mat" in files and ({"att_splits.mat", "sent_splits.mat"} & files.keys()):
        keep.update({n: m for n, m in files.items() if n in LAYOUT_FILES["xlsa17"]})
    if {"data.mat", "label.mat"} <= files.keys():
        keep.update({n: m for n, m in files.items() if n in LAYOUT_FILES["epgn"]})
    return keep


def layout_of(files) -> str:
    return "epgn" if "data.mat" in files else "xlsa17"


# -------------------------------------------------------------------------- verification

def verify(folder: Path, dataset: str, expected: Benchmark, origin: dict[str, str]) -> list[str]:
    """Load every layout in `folder` with the project's loaders and check the counts.

    xlsa17 counts must equal the benchmark's; E-PGN's are not documented anywhere, so a
    difference is a warning. Returns the lines to print. `origin` maps a staged file name to
    where it came from, for the error messages.
    """
    import util  # the project's loaders (torch comes with them: not imported for --help)
    lines = []
    try:
        if (folder / "res101.mat").is_file():
            for stem in ("att", "sent"):
                if (folder / f"{stem}_splits.mat").is_file():
                    data = util.load_xlsa17(folder, dataset, "res101", stem)
                    check_xlsa17(folder, dataset, stem, data, expected, origin)
                    lines.append(f"{dataset} (xlsa17, {stem}_splits.mat): {counts(data)}: the benchmark's counts")
        if (folder / "data.mat").is_file():
            data = util.load_epgn(folder, dataset)
            if data.feature_dim != expected.feature_dim:
                raise PrepareError(f"{origin['data.mat']}: 'train_fea' has {data.feature_dim} columns (feature "
                                   f"dimension), expected {expected.feature_dim}")
            lines.append(f"{dataset} (E-PGN): {counts(data)}")
            lines += [f"warning: {w}" for w in epgn_differences(dataset, data, expected, origin)]
    except util.DataError as exc:
        message = str(exc)
        for name, where in origin.items():
            message = message.replace(str(folder / name), where)
        raise PrepareError(message) from None
    return lines


def counts(data) -> str:
    return (f"{data.n_seen} seen + {data.n_unseen} unseen classes, {data.seen_semantics.shape[1]}-d class vectors, "
            f"{data.feature_dim}-d features, trainval {len(data.train_label)} / test seen "
            f"{len(data.test_seen_label)} / test unseen {len(data.test_unseen_label)} images")


def check_xlsa17(folder: Path, dataset: str, stem: str, data, expected: Benchmark,
                 origin: dict[str, str]) -> None:
    """The first count that differs from the benchmark's, as one line naming the file."""
    import scipy.io as sio
    shapes = lambda name: {key: shape for key, shape, _ in sio.whosmat(str(folder / name))}  # headers only
    features, att = shapes("res101.mat")["features"], shapes(f"{stem}_splits.mat")["att"]
    splits = f"{stem}_splits.mat"
    checks = [
        ("res101.mat", "'features' has {} columns (images)", features[1], expected.images),
        ("res101.mat", "'features' has {} rows (feature dimension)", features[0], expected.feature_dim),
        (splits, "'att' has {} columns (classes)", att[1], expected.seen + expected.unseen),
        (splits, "'att' has {} rows (semantic dimension)", att[0], expected.semantic_dims.get(stem, att[0])),
        (splits, "'trainval_loc' covers {} seen classes", data.n_seen, expected.seen),
        (splits, "'test_unseen_loc' covers {} unseen classes", data.n_unseen, expected.unseen),
        (splits, "'trainval_loc' has {} rows", len(data.train_label), expected.trainval),
        (splits, "'test_seen_loc' has {} rows", len(data.test_seen_label), expected.test_seen),
        (splits, "'test_unseen_loc' has {} rows", len(data.test_unseen_label), expected.test_unseen),
    ]
    for name, what, found, want in checks:
        if found != want:
            raise PrepareError(f"{origin[name]}: {what.format(found)}, the {dataset} benchmark has {want}")


def epgn_differences(dataset: str, data, expected: Benchmark, origin: dict[str, str]) -> list[str]:
    where = origin["data.mat"]
    found = [("seen classes ('seen_pro' rows)", data.n_seen, expected.seen),
             ("unseen classes ('unseen_pro' rows)", data.n_unseen, expected.unseen),
             ("'train_fea' rows", len(data.train_label), expected.trainval),
             ("'test_seen_fea' rows", len(data.test_seen_label), expected.test_seen),
             ("'test_unseen_fea' rows", len(data.test_unseen_label), expected.test_unseen)]
    out = [f"{where}: {what} {n}, xlsa17's {dataset} split has {want} (kept: E-PGN's counts are not documented)"
           for what, n, want in found if n != want]
    dim = data.seen_semantics.shape[1]
    if dim not in expected.semantic_dims.values():
        out.append(f"{where}: class vectors are {dim}-d, xlsa17's {dataset} has "
                   f"{' or '.join(map(str, expected.semantic_dims.values()))} (kept)")
    return out
