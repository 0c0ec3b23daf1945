"""What produced a number: the data files a run read (the size and sha256 of each), the code's
commit and the CPU's model.

`data/prepare.py` writes a `SHA256SUMS` next to the files it places. Its hash lines are
`sha256sum -c` format; `# size BYTES NAME` comment lines (which `sha256sum -c` skips) record
the sizes. A run always computes each file's sha256 and says whether SHA256SUMS lists the same
one ("matches"), another ("differs": the file changed since it was placed) or none ("not listed").
This module imports nothing of the project's, so any script can use it.
"""
from __future__ import annotations

import hashlib
import platform
import subprocess
from pathlib import Path

SUMS_NAME = "SHA256SUMS"
ROOT = Path(__file__).resolve().parent


def git_commit() -> str:
    """HEAD's commit (12 hex digits) of this checkout, with " (with uncommitted changes)" when a tracked
    Python file differs from it; "unknown" outside a git checkout."""
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""
    head = git("rev-parse", "--short=12", "HEAD") or "unknown"
    dirty = head != "unknown" and git("status", "--porcelain", "--untracked-files=no", "--", "*.py")
    return head + (" (with uncommitted changes)" if dirty else "")


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo; elsewhere platform.processor())."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_sums(folder: Path, names: list[str], comments: list[str] = ()) -> Path:
    """Write folder/SHA256SUMS for `names` (files in `folder`), with `# comment` lines on top."""
    lines = [f"# {c}" for c in comments]
    hashes = []
    for name in sorted(names):
        lines.append(f"# size {(folder / name).stat().st_size} {name}")
        hashes.append(f"{sha256_of(folder / name)}  {name}")
    path = folder / SUMS_NAME
    path.write_text("\n".join(lines + hashes) + "\n")
    return path


def read_sums(folder: Path) -> dict[str, dict]:
    """{name: {"sha256": hex, "size": bytes or None}} from folder/SHA256SUMS ({} when absent)."""
    path = folder / SUMS_NAME
    if not path.is_file():
        return {}
    sums: dict[str, dict] = {}
    sizes: dict[str, int] = {}
    for line in path.read_text().splitlines():
        if line.startswith("# size "):
            size, _, name = line[len("# size "):].partition(" ")
            if size.isdigit():
                sizes[name] = int(size)
        elif line and not line.startswith("#"):
            digest, _, name = line.partition(" ")
            name = name[1:] if name[:1] in (" ", "*") else name  # text or binary mode marker
            if len(digest) == 64:
                sums[name] = {"sha256": digest.lower(), "size": None}
    for name, entry in sums.items():
        entry["size"] = sizes.get(name)
    return sums


def describe_files(paths) -> list[dict]:
    """One record per file: path, size, sha256 (always computed) and how it compares with SHA256SUMS.

    Always hashing, rather than trusting SHA256SUMS while the size (or the mtime) matches: a
    same-size rewrite keeps the size, and the mtime is no content check either (`cp -p`,
    `rsync -t`, `tar x` and `touch -r` carry it over; coarse file-system clocks hide a quick
    rewrite), so a shortcut on either could record a hash of bytes that are gone. The cost is
    small beside the run that reads these files: about 0.75 s per GB on this project's 2-core VM
    (1.3 GB/s measured), once per run, for files the loader then reads in full anyway.
    """
    records = []
    listed: dict[Path, dict] = {}
    for p in map(Path, paths):
        if p.parent not in listed:
            listed[p.parent] = read_sums(p.parent)
        digest, entry = sha256_of(p), listed[p.parent].get(p.name)
        sums = "not listed" if entry is None else "matches" if entry["sha256"] == digest else "differs"
        records.append({"path": str(p), "size": p.stat().st_size, "sha256": digest, "SHA256SUMS": sums})
    return records
