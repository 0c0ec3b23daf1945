"""Which data files a run read: the size and sha256 of each, so a number says what produced it.

`data/prepare.py` writes a `SHA256SUMS` next to the files it places. Its hash lines are
`sha256sum -c` format; `# size BYTES NAME` comment lines (which `sha256sum -c` skips) record
the sizes. A run takes a file's sha256 from there when the file's size still matches, and
computes it otherwise (a file without SHA256SUMS, or one that changed since it was placed).
This module imports nothing of the project's, so any script can use it.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

SUMS_NAME = "SHA256SUMS"


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
    """One record per file: path, size, sha256 and where the sha256 came from."""
    records = []
    listed: dict[Path, dict] = {}
    for p in map(Path, paths):
        if p.parent not in listed:
            listed[p.parent] = read_sums(p.parent)
        size = p.stat().st_size
        entry = listed[p.parent].get(p.name)
        if entry is not None and entry["size"] == size:
            records.append({"path": str(p), "size": size, "sha256": entry["sha256"], "sha256_from": SUMS_NAME})
        else:  # no SHA256SUMS entry, or the file changed size since it was written
            records.append({"path": str(p), "size": size, "sha256": sha256_of(p), "sha256_from": "computed"})
    return records
