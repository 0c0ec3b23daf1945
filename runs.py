"""Run bookkeeping: run directories, the run log, atomic writes, checkpoints, seeds, devices.

What a run leaves on disk (README "What a run prints and writes") and how it is written:
never over an earlier run, and checkpoints only whole (a temp file, then a rename).
Imports: util (DataError, GZSLData) only; never train, evaluate or report.
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import os
import random
import sys
from pathlib import Path

import numpy as np
import torch

from util import DataError, GZSLData


def set_seeds(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)


def rng_state() -> dict:
    """Python, numpy, torch CPU and CUDA generator states, as checkpointable values."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {"python": random.getstate(),
            "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "cached": float(cached)},
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DataError(f"option --device={name}: CUDA is not available on this machine")
    return torch.device(name)


def make_run_dir(out_dir: str, dataset: str) -> Path:
    """A fresh directory out_dir/dataset/<UTC timestamp>[-k]; never reuses an existing one."""
    parent = Path(out_dir) / dataset
    parent.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
    for k in range(1000):
        path = parent / (stamp if k == 0 else f"{stamp}-{k}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise RuntimeError(f"could not create a new run directory under {parent}")


class RunLog:
    """Prints and appends to run_dir/log.txt; JSON lines for evaluations and losses."""

    def __init__(self, run_dir: Path, echo: bool = True):
        self.run_dir, self.echo = run_dir, echo
        self.log_path = run_dir / "log.txt"
        self.metrics_path = run_dir / "metrics.jsonl"
        self.losses_path = run_dir / "losses.jsonl"

    def print(self, text: str = "", echo: bool = True) -> None:
        if echo:
            from tqdm import tqdm
            tqdm.write(text, file=sys.stdout)  # keeps an active progress bar intact
            sys.stdout.flush()
        with open(self.log_path, "a") as f:
            f.write(text + "\n")

    def metrics(self, row: dict) -> None:
        self._append(self.metrics_path, row)

    def losses(self, row: dict) -> None:
        self._append(self.losses_path, row)

    @staticmethod
    def _append(path: Path, row: dict) -> None:
        with open(path, "a") as f:
            f.write(json.dumps(row) + "\n")

    def rewind(self, rows: list[dict], iteration: int) -> None:
        """On resume: metrics as the checkpoint knows them; drop losses logged after it."""
        _atomic_text(self.metrics_path, "".join(json.dumps(r) + "\n" for r in rows))
        kept = [l for l in read_jsonl(self.losses_path) if l["iteration"] <= iteration]
        _atomic_text(self.losses_path, "".join(json.dumps(r) + "\n" for r in kept))


def write_config(run_dir: Path, cfg, data_files: list[dict]) -> None:
    """config.json: the resolved options, and the data files the run read (size, sha256)."""
    (run_dir / "config.json").write_text(json.dumps({**dataclasses.asdict(cfg), "data_files": data_files},
                                                    indent=2) + "\n")


def read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def atomic_save(obj, path: Path) -> None:
    """torch.save to a temp file in the same folder, then rename over `path`."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


# ----------------------------------------------------------------------------- checkpoints

CHECKPOINT_FORMAT = "gsmflow-checkpoint-v1"


class NonFiniteError(RuntimeError):
    """The loss or the parameters stopped being finite; the message names the iteration."""


def load_checkpoint(path: Path, data: GZSLData) -> dict:
    """torch.load(weights_only=True), refusing files for other data (one-line DataError)."""
    if not path.is_file():
        raise DataError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise DataError(f"{path}: not a loadable checkpoint ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0][:200]})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise DataError(f"{path}: not a GSMFlow checkpoint (no '{CHECKPOINT_FORMAT}' marker)")
    theirs, ours = ckpt["data"], data.signature()
    if theirs["dataset"] != ours["dataset"]:
        raise DataError(f"{path}: checkpoint is for {theirs['dataset']}, this run is {ours['dataset']}")
    diff = [f"{k} {theirs.get(k)} (checkpoint) vs {v} (here)" for k, v in ours.items() if theirs.get(k) != v]
    if diff:
        raise DataError(f"{path}: trained on other data: {'; '.join(diff)}")
    return ckpt


def all_finite(module_params) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in module_params)



def save_checkpoint(path: Path, cfg, data: GZSLData, trainer, rows: list[dict],
                    full: bool) -> None:
    """last.pt holds the whole training state; best.pt only the weights (for --eval_only)."""
    it = trainer.next_iteration - 1
    if not all_finite(trainer.params):
        raise NonFiniteError(f"iteration {it}: parameters are not finite; not writing {path}")
    payload = {"format": CHECKPOINT_FORMAT, "iteration": it, "config": dataclasses.asdict(cfg),
               "data": data.signature(), "rows": rows}
    if full:
        payload["trainer"] = trainer.state_dict()
    else:
        payload.update(flow=trainer.flow.state_dict(), relative_positioning=trainer.rp.state_dict())
    atomic_save(payload, path)



def progress_bar(iterable, cfg, **kw):
    """tqdm on stderr, off with --quiet or when stderr is not a terminal."""
    from tqdm import tqdm
    return tqdm(iterable, disable=cfg.quiet or not sys.stderr.isatty(), dynamic_ncols=True, **kw)



def fail(message: str, code: int = 2) -> None:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(code)
