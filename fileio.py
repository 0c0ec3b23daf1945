"""Whole files or nothing: the one atomic-write helper every output goes through.

A file is written to a hidden temporary name in its own folder, flushed to disk (fsync),
then renamed over its final name, and the folder entry is synced too: a reader, a crash or
Ctrl-C sees the old file or the new one, never half of one. Imports nothing of ours.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable


def temporary_name(path: Path) -> Path:
    """Where `path` is written before the rename (a killed writer leaves this, never `path` half-done)."""
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


def atomic_write(path: Path, write: Callable[[Path], None]) -> Path:
    """`write(tmp)` writes the content to `tmp`; it becomes `path` only once complete and on disk.

    An OSError (a full or read-only disk) comes out naming `path`, not the temporary file."""
    path = Path(path)
    tmp = temporary_name(path)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        sync_folder(path.parent)
    except OSError as exc:
        raise naming(exc, path, f"not written; any earlier {path.name} is intact") from exc
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def atomic_text(path: Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def append_text(path: Path, text: str) -> None:
    """Append to a log; an OSError comes out naming `path` (a write error alone names no file)."""
    try:
        with open(path, "a") as f:
            f.write(text)
    except OSError as exc:
        raise naming(exc, path) from exc


def naming(exc: OSError, path: Path, note: str = "") -> OSError:
    """The same error (errno, so the same OSError subclass) with `path` as its file name, for cli's one line."""
    reason = exc.strerror or str(exc)
    return OSError(exc.errno, f"{reason} ({note})" if note else reason, str(path))


def sync_folder(folder: Path) -> None:
    """fsync a folder so that a rename in it survives a power loss (a no-op where unsupported)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
