"""Fetch, verify and place the benchmark files in one command.

    python -m data.prepare                 # all four datasets, the files the authors ran
    python -m data.prepare AWA2 APY        # some of them
    python -m data.prepare CUB --from=~/Downloads/GSMFlow_data.zip   # a zip or folder already here

Each dataset's files are found by folder name and file name anywhere in the archive,
unpacked into a temporary folder under the dataroot, loaded with the project's own loaders,
checked against the benchmark's counts (BENCHMARKS), hashed into <DATASET>/SHA256SUMS and only
then moved into place. On any error the dataroot is left as it was.
"""
from __future__ import annotations

import sys

if __name__ == "__main__" and not __package__:  # run by path: the project's imports below need `python -m`
    print("error: run it from the repository root as: python -m data.prepare", file=sys.stderr)
    raise SystemExit(2)

import contextlib
import datetime
import errno
import os
import re
import shutil
import signal
import tempfile
import textwrap
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no flock, so leftover .prepare-* folders are not cleaned there
    fcntl = None

import pooch
import requests

import cli
import provenance
from benchmarks import BENCHMARKS, SOURCES
from cli import opt
from data.staging import Archive, PrepareError, layout_of, verify


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


def record_of(archive: Path) -> Path:
    """Where the sha256 of an unpinned archive is recorded: beside it in the cache."""
    return archive.with_name(archive.name + ".sha256")


def forget(archive: Path) -> None:
    """Remove a cached archive that is not usable, and its record, so that the next run fetches it afresh."""
    archive.unlink(missing_ok=True)
    record_of(archive).unlink(missing_ok=True)


def download(url: str, cache: Path, retries: int, by_hand: str, pinned: str | None = None) -> tuple[Path, str]:
    """(the archive at `url`, its sha256), through pooch: kept in `cache`, fetched again only when
    missing or when the cached copy's sha256 is not the pinned one (`pinned`) or, without a pin,
    not the one recorded at its first download."""
    name = pooch.utils.unique_file_name(url)
    path, record = cache / name, record_of(cache / name)
    recorded = (record.read_text().split() or [None])[0] if not pinned and record.is_file() else None
    expected = pinned or recorded
    which = "the pinned {} (Source.sha256)" if pinned else f"the {{}} recorded in {record} at the first download"
    if path.is_file() and expected:
        if provenance.sha256_of(path) == expected:
            return path, expected
        print(f"note: the cached {path} differs from its sha256 ({'pinned' if pinned else 'recorded'}); "
              f"downloading it again")
        path.unlink()
    fetcher = pooch.create(path=cache, base_url="", registry={name: None}, urls={name: url},
                           retry_if_failed=retries)
    try:
        path = Path(fetcher.fetch(name, downloader=ClosingProgress()))
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
    digest = provenance.sha256_of(path)
    if expected and digest != expected:
        path.unlink()
        accept = "" if pinned else f"; if the archive was updated upstream, delete {record} to accept the new one"
        raise PrepareError(f"{url}: the download's sha256 is {digest}, not {which.format(expected)}; removed it "
                           f"from the cache{accept}; or {by_hand}")
    return path, digest


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

def source_table() -> str:
    wrap = lambda text: textwrap.fill(text, 88, initial_indent=" " * 11, subsequent_indent=" " * 11)
    return "\n".join(f"  {name:8s} {s.url}\n{wrap(s.what)}" for name, s in SOURCES.items())


@dataclass
class PrepareOptions:
    datasets: list[str] = opt([], f"any of {', '.join(BENCHMARKS)} (default: all the source holds)", positional=True,
                              dataset=True, choices=tuple(BENCHMARKS))
    source: str = opt("authors", "which archive (see the sources above)", choices=tuple(SOURCES))
    from_path: str = opt("", "a zip or folder you already have (any source); nothing is downloaded", path=True,
                         flag="--from")
    url: str = opt("", "the source's archive from another address (a mirror, a lab cache)")
    dataroot: str = opt(str(Path(__file__).resolve().parent), "where the dataset folders go (default: this data/ "
                                                             "folder, which the train scripts read)", path=True)
    cache: str = opt("", "where downloaded archives are kept (default: the user cache folder, gsmflow/)", path=True)
    force: bool = opt(False, "a data/<DATASET>/ holding different files is moved aside to "
                             "<DATASET>.replaced-<UTC time>/ instead of stopping")
    retries: int = opt(3, "download retries", low=0)


def parse(argv) -> PrepareOptions:
    parser = cli.parser_for(
        "python -m data.prepare",
        "Fetch, verify and place the GZSL benchmark files under data/<DATASET>/, "
        "then `python train_<DATASET>.py` runs on them.\n\nsources (--source):\n" + source_table(),
        (PrepareOptions, None),
        epilog="examples:\n  python -m data.prepare\n  python -m data.prepare AWA2 APY\n"
               "  python -m data.prepare CUB --from=~/Downloads/GSMFlow_data.zip\n"
               "  python -m data.prepare --source=xlsa17 AWA2 --url=https://mirror.example/xlsa17.zip")
    args = PrepareOptions(**cli.parse(parser, argv))
    if args.from_path and args.url:
        raise cli.ConfigError("--from and --url cannot be combined: --from reads a file here, --url downloads one")
    return args


def by_hand(datasets: list[str]) -> str:
    named = "".join(f"{d} " for d in datasets)
    return f"download it by hand (e.g. in a browser) and run: python -m data.prepare {named}--from=PATH_TO_THE_ZIP"


def open_source(args: PrepareOptions, benchmarks: dict) -> tuple[Archive, Path | None, list[str], dict]:
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
    downloaded, digest = download(url, cache, args.retries, by_hand(args.datasets), source.sha256)
    if not zipfile.is_zipfile(downloaded):  # an error page or a broken file: not kept for next time
        head = downloaded.read_bytes()[:40]
        forget(downloaded)
        raise PrepareError(f"{url}: what came back is not a zip archive (it starts with {head!r}); removed it "
                           f"from the cache: {by_hand(args.datasets)}")
    try:
        archive = Archive(downloaded, url)
    except PrepareError as exc:  # an end record, but no readable central directory: not kept either
        forget(downloaded)
        raise PrepareError(f"{exc}; removed it from the cache: {by_hand(args.datasets)}") from None
    if not source.sha256 and not record_of(downloaded).is_file():  # trust on first use, checked from now on
        record_of(downloaded).write_text(f"{digest}  {downloaded.name}\n")
    archive.sha256 = digest
    return archive, downloaded, datasets, source.holds


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
                forget(downloaded)
                raise PrepareError(f"{exc}; removed the archive from the cache: run again, or "
                                   f"{by_hand([dataset])}") from None
            raise
        except OSError as exc:
            space = "no space left on the device" if exc.errno == errno.ENOSPC else exc.strerror or str(exc)
            dataroot = folder.parent.parent  # folder is DATAROOT/.prepare-*/DATASET
            raise PrepareError(f"{dataroot}: cannot unpack {name} of {dataset} there ({space})") from None
    return origin


def prepare(args: PrepareOptions, benchmarks: dict, dataroot: Path) -> list[str]:
    """Find, stage, verify and hash every dataset under `dataroot`/.prepare-*/, then place them all."""
    archive, downloaded, datasets, layouts = open_source(args, benchmarks)
    print(f"reading {archive.label}")
    found = {d: archive.find(d, layouts.get(d)) for d in datasets}
    for _, files in found.values():
        for member in files.values():
            archive.check(member)  # encrypted, or a compression method zipfile lacks: before unpacking anything
    removed = remove_stale_staging(dataroot)
    if removed:
        print(f"removed {removed} staging folder(s) left by interrupted runs ({dataroot}/.prepare-*)")
    need = sum(archive.size(m) for _, files in found.values() for m in files.values())
    if need > free_bytes(dataroot):
        raise PrepareError(f"{dataroot}: not enough disk space: the files need {human(need)}, "
                           f"{human(free_bytes(dataroot))} free")
    staging = Path(tempfile.mkdtemp(prefix=".prepare-", dir=dataroot))
    lock = lock_staging(staging)
    try:
        notes = []
        for d in datasets:
            folder, files = found[d]
            print(f"{d}: {folder}/ {', '.join(sorted(files))}")
            origin = stage(archive, downloaded, d, files, staging / d)
            for line in verify(staging / d, d, benchmarks[d], origin):
                print(line)
            when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
            archive_hash = f" (sha256 {archive.sha256})" if downloaded else ""
            provenance.write_sums(staging / d, list(files), [f"written by data/prepare.py on {when}",
                                                             f"from {archive.label}{archive_hash}"])
            if d == "CUB" and layout_of(files) == "xlsa17" and "sent_splits.mat" not in files:
                notes.append("CUB has the 312-d attributes only: train with python train_CUB.py --class_embedding=att")
        return place(staging, datasets, dataroot, args.force) + notes
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if lock is not None:
            os.close(lock)


# A run holds an flock on <staging>/.lock while it works; the kernel drops it when the process dies,
# even by SIGKILL, so an unlocked .lock marks a folder that no run will finish or remove.
LOCK_NAME = ".lock"
STALE_WITHOUT_LOCK_S = 3600  # a .prepare-* of a version without locks: removed once this old


def lock_staging(staging: Path) -> int | None:
    """Hold an exclusive flock on staging/.lock (the fd; None where there is no flock). The file is
    locked under a temporary name and renamed, so that no other run ever sees it unlocked."""
    if fcntl is None:
        return None
    tmp = staging / f"{LOCK_NAME}.{os.getpid()}"
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.rename(tmp, staging / LOCK_NAME)
    except OSError:  # a file system without flock (some NFS): then the folder is cleaned by age only
        os.close(fd)
        tmp.unlink(missing_ok=True)
        return None
    return fd


def remove_stale_staging(dataroot: Path) -> int:
    """Remove the .prepare-* folders of runs that died (SIGKILL, power loss); returns how many."""
    if fcntl is None:
        return 0
    removed = 0
    for folder in sorted(dataroot.glob(".prepare-*")):
        if not folder.is_dir() or folder.is_symlink():
            continue
        lock = folder / LOCK_NAME
        try:
            if not lock.exists():
                if time.time() - folder.stat().st_mtime < STALE_WITHOUT_LOCK_S:
                    continue  # just created by a run that is about to lock it
                shutil.rmtree(folder)
                removed += 1
                continue
            fd = os.open(lock, os.O_RDONLY)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # held: another run is at work in it
            os.close(fd)
            continue
        try:
            shutil.rmtree(folder)
            removed += 1
        except OSError:
            pass
        finally:
            os.close(fd)
    return removed


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
    # All or nothing: every step is journaled and undone in reverse when a later one fails; Ctrl-C is
    # held back while the renames run (they are quick) and then undoes them too.
    lines, undo = [], []
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    with held_back_ctrl_c() as interrupted:
        try:
            for d, action in plan.items():
                if interrupted():
                    raise KeyboardInterrupt
                dest = dataroot / d
                if action == "same":
                    if not (dest / provenance.SUMS_NAME).exists():
                        shutil.copyfile(staging / d / provenance.SUMS_NAME, dest / provenance.SUMS_NAME)
                        undo.append(("remove", dest / provenance.SUMS_NAME, None))
                    lines.append(f"{d}: {dest} already holds these files; left as it is")
                    continue
                if action == "replace":
                    aside = dest.with_name(f"{d}.replaced-{stamp}")
                    os.rename(dest, aside)
                    undo.append(("move", aside, dest))
                    lines.append(f"{d}: moved the old {dest} aside to {aside}")
                elif dest.exists():
                    dest.rmdir()  # an empty folder
                    undo.append(("mkdir", dest, None))
                os.rename(staging / d, dest)
                undo.append(("move", dest, staging / d))
                sizes = ", ".join(f"{p.name} {human(p.stat().st_size)}" for p in sorted(dest.iterdir())
                                  if p.name != provenance.SUMS_NAME)
                lines.append(f"{d}: placed {dest} ({sizes})")
            if interrupted():
                raise KeyboardInterrupt
        except BaseException as exc:
            left = roll_back(undo)
            if left:
                reason = "interrupted" if isinstance(exc, KeyboardInterrupt) else \
                    (f"{exc.filename}: {exc.strerror}" if isinstance(exc, OSError) and exc.strerror else str(exc))
                raise PrepareError(f"placing the datasets failed ({reason}) and could not be undone: "
                                   + "; ".join(left)) from None
            raise
    return lines


def roll_back(undo: list) -> list[str]:
    """Undo place()'s steps, newest first; returns what could not be undone, as 'what is where'."""
    left = []
    for step, path, back in reversed(undo):
        try:
            if step == "move":
                os.rename(path, back)
            elif step == "mkdir":
                path.mkdir()
            else:
                path.unlink()
        except OSError as exc:
            where = {"move": f"{back.name} is at {path}", "mkdir": f"the empty folder {path} is gone",
                     "remove": f"{path} was added"}[step]
            left.append(f"{where} ({exc.strerror or exc})")
    return left


@contextlib.contextmanager
def held_back_ctrl_c():
    """Inside: Ctrl-C (SIGINT) is noted, not raised; `interrupted()` says whether it came."""
    came = []
    try:
        previous = signal.signal(signal.SIGINT, lambda signum, frame: came.append(signum))
    except ValueError:  # not the main thread: signals go elsewhere anyway
        yield lambda: False
        return
    try:
        yield lambda: bool(came)
    finally:
        signal.signal(signal.SIGINT, previous)


def main(argv: list[str] | None = None, benchmarks: dict = BENCHMARKS) -> int:
    """The exit code (cli.py's convention): 0 placed, 2 bad option or data, 130 interrupted."""
    args = cli.main_guard(parse, sys.argv[1:] if argv is None else argv)
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
        code = PrepareError.exit_code
    except OSError as exc:  # a folder we may not write, a rename refused: still one line
        print(f"error: {exc.filename or dataroot}: {exc.strerror or exc}", file=sys.stderr)
        code = PrepareError.exit_code
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
