"""Fetch, verify and place the benchmark files in one command.

    python data/prepare.py                 # all four datasets, the files the authors ran
    python data/prepare.py AWA2 APY        # some of them
    python data/prepare.py CUB --from=~/Downloads/GSMFlow_data.zip   # a zip or folder already here

Each dataset's files are found by folder name and file name anywhere in the archive,
unpacked into a temporary folder under the dataroot, loaded with the project's own loaders,
checked against the benchmark's counts (BENCHMARKS), hashed into <DATASET>/SHA256SUMS and only
then moved into place. On any error the dataroot is left as it was.
"""
from __future__ import annotations

import argparse
import datetime
import errno
import re
import shutil
import sys
import tempfile
import textwrap
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as `python data/prepare.py`: the project's modules live one level up
    sys.path.insert(0, str(ROOT))

import pooch  # noqa: E402
import requests  # noqa: E402

import provenance  # noqa: E402


@dataclass(frozen=True)
class Source:
    url: str
    holds: dict          # dataset -> layout of its files in the archive
    what: str


SOURCES = {
    "authors": Source(
        url="https://www.dropbox.com/s/5sprhvavkb3pu5m/GSMFlow_data.zip?dl=1",
        holds={"AWA2": "xlsa17", "APY": "xlsa17", "CUB": "epgn", "FLO": "epgn"},
        what="the data archive linked from the authors' GSMFlow README, the data of the paper: "
             "xlsa17 res101.mat/att_splits.mat for AWA2 and APY, E-PGN data.mat/label.mat for CUB and FLO"),
    "xlsa17": Source(
        url="http://datasets.d2.mpi-inf.mpg.de/xian/xlsa17.zip",
        holds={"AWA2": "xlsa17", "APY": "xlsa17", "CUB": "xlsa17"},
        what="Xian et al.'s proposed splits v2.0 (about 880 MB): AWA2, APY, and CUB with its 312-d attributes "
             "(train with --class_embedding=att); also AWA1 and SUN, not trained here; no FLO"),
}


@dataclass(frozen=True)
class Benchmark:
    """The counts of a dataset's proposed split (Xian et al.), checked on every placed xlsa17 file."""
    images: int
    seen: int
    unseen: int
    semantic_dims: dict  # split-file stem -> dimension of its class vectors
    trainval: int
    test_seen: int
    test_unseen: int
    feature_dim: int = 2048  # ResNet-101


# Images, split sizes, classes and semantic dimensions: the real split files in ../shared/xlsa17/
# (tests/test_prepare.py checks them there). The seen/unseen division (SPEC.md) needs the labels
# in res101.mat, and CUB's 312-d att_splits.mat is not in ../shared: those two come from SPEC.md.
BENCHMARKS = {
    "AWA2": Benchmark(images=37322, seen=40, unseen=10, semantic_dims={"att": 85},
                      trainval=23527, test_seen=5882, test_unseen=7913),
    "APY": Benchmark(images=15339, seen=20, unseen=12, semantic_dims={"att": 64},
                     trainval=5932, test_seen=1483, test_unseen=7924),
    "CUB": Benchmark(images=11788, seen=150, unseen=50, semantic_dims={"sent": 1024, "att": 312},
                     trainval=7057, test_seen=1764, test_unseen=2967),
    "FLO": Benchmark(images=8189, seen=82, unseen=20, semantic_dims={"att": 1024},
                     trainval=5631, test_seen=1403, test_unseen=1155),
}

LAYOUT_FILES = {"xlsa17": ("res101.mat", "att_splits.mat", "sent_splits.mat"), "epgn": ("data.mat", "label.mat")}
KNOWN_FILES = set(LAYOUT_FILES["xlsa17"] + LAYOUT_FILES["epgn"])


class PrepareError(Exception):
    """One line: what failed, naming the file, URL or option; data/ is left as it was."""


# ------------------------------------------------------------------------------- fetching

def short_reason(exc: BaseException) -> str:
    """The few words that matter in a requests/urllib3 error ('[Errno 111] Connection refused')."""
    text = str(exc)
    incomplete = re.search(r"IncompleteRead\((\d+) bytes read, (\d+) more expected\)", text)
    if incomplete:
        return f"{incomplete[1]} bytes received, {incomplete[2]} more expected"
    errno_text = re.findall(r"\[Errno -?\d+\] [^'\")]+", text)
    if errno_text:
        return errno_text[-1].strip()
    raised = re.search(r"\w+Error\((-?\d+), '([^']+)'\)", text)  # e.g. ConnectionResetError(104, '...')
    if raised:
        return f"[Errno {raised[1]}] {raised[2]}"
    return re.sub(r"\s+", " ", text)[:160] or type(exc).__name__


class ClosingProgress:
    """pooch's HTTP download with a progress bar that is closed even when the transfer fails,
    so the error line starts on a line of its own."""

    def __call__(self, url, output_file, fetcher):
        from tqdm import tqdm

        class Bar(tqdm):
            def __bool__(self):  # pooch asks `if progressbar:`; a tqdm is false while its total is 0
                return True

        bar = Bar(total=0, ncols=79, unit="B", unit_scale=True, leave=True)
        try:
            pooch.HTTPDownloader(progressbar=bar)(url, output_file, fetcher)
        finally:
            bar.close()


def download(url: str, cache: Path, retries: int, by_hand: str) -> Path:
    """The archive at `url`, through pooch: kept in `cache`, fetched again only when missing."""
    name = pooch.utils.unique_file_name(url)
    fetcher = pooch.create(path=cache, base_url="", registry={name: None}, urls={name: url},
                           retry_if_failed=retries)
    try:
        return Path(fetcher.fetch(name, downloader=ClosingProgress()))
    except requests.exceptions.HTTPError as exc:
        raise PrepareError(f"{url}: the server answered {exc.response.status_code} {exc.response.reason}; "
                           f"{by_hand}") from None
    except (requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError) as exc:
        raise PrepareError(f"{url}: the download broke off ({short_reason(exc)}); nothing was kept: run again, "
                           f"or {by_hand}") from None
    except requests.exceptions.RequestException as exc:
        broke = "Connection broken" in str(exc) or "IncompleteRead" in str(exc)
        what = "the download broke off" if broke else "cannot download it"
        raise PrepareError(f"{url}: {what} ({short_reason(exc)}); {by_hand}") from None
    except OSError as exc:  # the cache folder: no space, no permission
        raise PrepareError(f"{cache}: cannot write the download there ({exc.strerror or exc}); "
                           f"free some space or use --cache=DIR") from None


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


# ------------------------------------------------------------------------------ placement

def same_files(staged: Path, existing: Path) -> bool:
    """Same data files (names and sha256), SHA256SUMS aside."""
    names = lambda d: sorted(p.name for p in d.iterdir() if p.name != provenance.SUMS_NAME)
    if names(staged) != names(existing) or not all((existing / n).is_file() for n in names(existing)):
        return False
    return all(provenance.sha256_of(staged / n) == provenance.sha256_of(existing / n) for n in names(staged))


def free_bytes(path: Path) -> int:
    return shutil.disk_usage(path).free


def human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


# ---------------------------------------------------------------------------------- main

class OneLineParser(argparse.ArgumentParser):
    def error(self, message):
        self.exit(2, f"error: {message} (see --help)\n")


def source_table() -> str:
    wrap = lambda text: textwrap.fill(text, 88, initial_indent=" " * 11, subsequent_indent=" " * 11)
    return "\n".join(f"  {name:8s} {s.url}\n{wrap(s.what)}" for name, s in SOURCES.items())


def parse(argv) -> argparse.Namespace:
    parser = OneLineParser(
        prog="python data/prepare.py", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Fetch, verify and place the GZSL benchmark files under data/<DATASET>/, "
                    "then `python train_<DATASET>.py` runs on them.\n\nsources (--source):\n" + source_table(),
        epilog="examples:\n  python data/prepare.py\n  python data/prepare.py AWA2 APY\n"
               "  python data/prepare.py CUB --from=~/Downloads/GSMFlow_data.zip\n"
               "  python data/prepare.py --source=xlsa17 AWA2 --url=http://mirror.example/xlsa17.zip")
    parser.add_argument("datasets", nargs="*", metavar="DATASET",
                        help=f"any of {', '.join(BENCHMARKS)} (default: all the source holds)")
    parser.add_argument("--source", choices=SOURCES, default="authors", help="which archive (default: authors)")
    parser.add_argument("--from", dest="from_path", metavar="PATH",
                        help="a zip or folder you already have (any source); nothing is downloaded")
    parser.add_argument("--url", help="the source's archive from another address (a mirror, a lab cache)")
    parser.add_argument("--dataroot", default=str(Path(__file__).resolve().parent), metavar="DIR",
                        help="where the dataset folders go (default: this data/ folder, which the train scripts read)")
    parser.add_argument("--cache", metavar="DIR", help="where downloaded archives are kept "
                                                       "(default: the user cache folder, gsmflow/)")
    parser.add_argument("--force", action="store_true",
                        help="a data/<DATASET>/ holding different files is moved aside to "
                             "<DATASET>.replaced-<UTC time>/ instead of stopping")
    parser.add_argument("--retries", type=int, default=3, metavar="N", help="download retries (default 3)")
    args = parser.parse_args(argv)
    args.datasets = [d.upper() for d in args.datasets]
    for d in args.datasets:
        if d not in BENCHMARKS:
            parser.error(f"unknown dataset {d} (known: {', '.join(BENCHMARKS)})")
    if args.from_path and args.url:
        parser.error("--from and --url cannot be combined: --from reads a file here, --url downloads one")
    if args.retries < 0:
        parser.error(f"--retries must be >= 0, got {args.retries}")
    return args


def by_hand(datasets: list[str]) -> str:
    named = "".join(f"{d} " for d in datasets)
    return f"download it by hand (e.g. in a browser) and run: python data/prepare.py {named}--from=PATH_TO_THE_ZIP"


def open_source(args: argparse.Namespace, benchmarks: dict) -> tuple[Archive, Path | None, list[str], dict]:
    """(archive, its cache path if downloaded, the datasets to prepare, the source's layouts)."""
    if args.from_path:
        path = Path(args.from_path).expanduser()
        if not path.exists():
            raise PrepareError(f"--from={args.from_path}: no such file or folder")
        archive = Archive(path, str(path))
        datasets = args.datasets or [d for d in benchmarks if archive.folders(d)]
        if not datasets:
            raise PrepareError(f"{path}: no dataset folder in it ({', '.join(benchmarks)} holding res101.mat + "
                               f"att_splits.mat or data.mat + label.mat)")
        return archive, None, datasets, {}
    source = SOURCES[args.source]
    datasets = args.datasets or list(source.holds)
    missing = [d for d in datasets if d not in source.holds]
    if missing:
        raise PrepareError(f"--source={args.source}: its archive holds {', '.join(source.holds)}, not "
                           f"{', '.join(missing)}; use --source=authors or --from=PATH")
    url = args.url or source.url
    cache = Path(args.cache).expanduser() if args.cache else Path(pooch.os_cache("gsmflow"))
    downloaded = download(url, cache, args.retries, by_hand(args.datasets))
    if not zipfile.is_zipfile(downloaded):  # an error page or a broken file: not kept for next time
        head = downloaded.read_bytes()[:40]
        downloaded.unlink()
        raise PrepareError(f"{url}: what came back is not a zip archive (it starts with {head!r}); removed it "
                           f"from the cache: {by_hand(args.datasets)}")
    return Archive(downloaded, url), downloaded, datasets, source.holds


def stage(archive: Archive, downloaded: Path | None, dataset: str, files: dict[str, str], folder: Path) -> dict:
    """Copy the dataset's files into `folder`; returns {file name: where it came from}."""
    folder.mkdir()
    origin = {}
    for name, member in files.items():
        origin[name] = f"{archive.label}:{member}" if archive.zip else str(archive.path.parent / member)
        try:
            archive.copy(member, folder / name)
        except PrepareError as exc:
            if downloaded:  # a corrupt download leaves the cache, so that the next run fetches it again
                downloaded.unlink(missing_ok=True)
                raise PrepareError(f"{exc}; removed the archive from the cache: run again, or "
                                   f"{by_hand([dataset])}") from None
            raise
        except OSError as exc:
            space = "no space left on the device" if exc.errno == errno.ENOSPC else exc.strerror or str(exc)
            dataroot = folder.parent.parent  # folder is DATAROOT/.prepare-*/DATASET
            raise PrepareError(f"{dataroot}: cannot unpack {name} of {dataset} there ({space})") from None
    return origin


def prepare(args: argparse.Namespace, benchmarks: dict, dataroot: Path) -> list[str]:
    """Find, stage, verify and hash every dataset under `dataroot`/.prepare-*/, then place them all."""
    archive, downloaded, datasets, layouts = open_source(args, benchmarks)
    print(f"reading {archive.label}")
    found = {d: archive.find(d, layouts.get(d)) for d in datasets}
    need = sum(archive.size(m) for _, files in found.values() for m in files.values())
    if need > free_bytes(dataroot):
        raise PrepareError(f"{dataroot}: not enough disk space: the files need {human(need)}, "
                           f"{human(free_bytes(dataroot))} free")
    staging = Path(tempfile.mkdtemp(prefix=".prepare-", dir=dataroot))
    try:
        notes = []
        for d in datasets:
            folder, files = found[d]
            print(f"{d}: {folder}/ {', '.join(sorted(files))}")
            origin = stage(archive, downloaded, d, files, staging / d)
            for line in verify(staging / d, d, benchmarks[d], origin):
                print(line)
            when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
            archive_hash = f" (sha256 {provenance.sha256_of(downloaded)})" if downloaded else ""
            provenance.write_sums(staging / d, list(files), [f"written by data/prepare.py on {when}",
                                                             f"from {archive.label}{archive_hash}"])
            if d == "CUB" and layout_of(files) == "xlsa17" and "sent_splits.mat" not in files:
                notes.append("CUB has the 312-d attributes only: train with python train_CUB.py --class_embedding=att")
        return place(staging, datasets, dataroot, args.force) + notes
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def place(staging: Path, datasets: list[str], dataroot: Path, force: bool) -> list[str]:
    """Move each staged dataset into place; a different existing one stops all, unless `force`."""
    plan = {}
    for d in datasets:
        dest = dataroot / d
        if not dest.exists() or (dest.is_dir() and not any(dest.iterdir())):
            plan[d] = "new"
        elif dest.is_dir() and same_files(staging / d, dest):
            plan[d] = "same"
        elif force:
            plan[d] = "replace"
        else:
            raise PrepareError(f"{dest} already holds other files; not overwriting it: move it away, or run again "
                               f"with --force to keep it as {d}.replaced-<UTC time>/")
    lines = []
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    for d, action in plan.items():
        dest = dataroot / d
        if action == "same":
            if not (dest / provenance.SUMS_NAME).exists():
                shutil.copyfile(staging / d / provenance.SUMS_NAME, dest / provenance.SUMS_NAME)
            lines.append(f"{d}: {dest} already holds these files; left as it is")
            continue
        if action == "replace":
            aside = dest.with_name(f"{d}.replaced-{stamp}")
            dest.rename(aside)
            lines.append(f"{d}: moved the old {dest} aside to {aside}")
        elif dest.exists():
            dest.rmdir()  # an empty folder
        (staging / d).rename(dest)
        sizes = ", ".join(f"{p.name} {human(p.stat().st_size)}" for p in sorted(dest.iterdir())
                          if p.name != provenance.SUMS_NAME)
        lines.append(f"{d}: placed {dest} ({sizes})")
    return lines


def main(argv: list[str] | None = None, benchmarks: dict = BENCHMARKS) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    dataroot = Path(args.dataroot).expanduser()
    created = not dataroot.exists()
    try:
        if dataroot.exists() and not dataroot.is_dir():
            raise PrepareError(f"--dataroot={args.dataroot}: not a folder")
        dataroot.mkdir(parents=True, exist_ok=True)
        for line in prepare(args, benchmarks, dataroot):
            print(line)
    except PrepareError as exc:
        print(f"error: {exc}", file=sys.stderr)
        code = 1
    except OSError as exc:  # a folder we may not write, a rename refused: still one line
        print(f"error: {exc.filename or dataroot}: {exc.strerror or exc}", file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        print(f"error: interrupted; {dataroot} is as it was", file=sys.stderr)
        code = 130
    else:
        root_opt = "" if dataroot.resolve() == Path(__file__).resolve().parent else f" --dataroot={dataroot}"
        print(f"done: python train_<DATASET>.py{root_opt} now reads them")
        return 0
    if created and dataroot.is_dir() and not any(dataroot.iterdir()):
        dataroot.rmdir()
    return code


if __name__ == "__main__":
    sys.exit(main())
