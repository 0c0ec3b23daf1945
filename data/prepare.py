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
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for folder in (ROOT, ROOT / "data"):  # run as `python data/prepare.py`: the project's modules live one level up
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

import pooch  # noqa: E402
import requests  # noqa: E402

import provenance  # noqa: E402
from benchmarks import BENCHMARKS, SOURCES  # noqa: E402
from staging import Archive, PrepareError, layout_of, verify  # noqa: E402


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
