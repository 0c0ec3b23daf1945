"""Run bookkeeping: opening and closing a run, the run log, checkpoints, seeds, devices.

What a run leaves on disk (README "What a run writes") and how it is written: never over an
earlier run, every file whole (fileio.atomic_write), one process at a time per run directory.
`open_run` / `finish_run` are the one way a run starts and ends, for training, --resume,
--eval_only and each seed of --seeds. Imports: util, provenance, fileio; never train, evaluate
or report.
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

import provenance
from cli import CommandError, ConfigError
from fileio import append_text, atomic_text, atomic_write
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
        # A run saved on more GPUs than this machine has: the states of the GPUs here (a run uses one).
        for index, cuda_state in enumerate(state["cuda"][:torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state, index)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DataError(f"option --device={name}: CUDA is not available on this machine")
    device = torch.device(name)
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise DataError(f"option --device={name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


def make_run_dir(out_dir: str, dataset: str) -> Path:
    """A fresh directory out_dir/dataset/<UTC timestamp>[-k]; never reuses an existing one."""
    parent = Path(out_dir) / dataset
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        for k in range(1000):
            path = parent / (stamp if k == 0 else f"{stamp}-{k}")
            try:
                path.mkdir()
                return path
            except FileExistsError:
                continue
    except OSError as exc:  # --out_dir is a file, on a read-only or full disk, not ours to write
        raise ConfigError(f"option --out_dir: cannot create a run directory under {parent} "
                          f"({exc.strerror or exc})") from None
    raise RuntimeError(f"could not create a new run directory under {parent}")


class RunLog:
    """Prints and appends to run_dir/log.txt; JSON lines for evaluations and losses."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self.log_path = run_dir / "log.txt"
        self.metrics_path = run_dir / "metrics.jsonl"
        self.losses_path = run_dir / "losses.jsonl"

    def print(self, text: str = "", echo: bool = True) -> None:
        if echo:
            from tqdm import tqdm
            tqdm.write(text, file=sys.stdout)  # keeps an active progress bar intact
            sys.stdout.flush()
        append_text(self.log_path, text + "\n")

    def metrics(self, row: dict) -> None:
        self._append(self.metrics_path, row)

    def losses(self, row: dict) -> None:
        self._append(self.losses_path, row)

    @staticmethod
    def _append(path: Path, row: dict) -> None:
        append_text(path, json.dumps(row) + "\n")

    def rewind(self, rows: list[dict], iteration: int) -> None:
        """On resume: metrics as the checkpoint knows them; drop losses logged after it."""
        atomic_text(self.metrics_path, "".join(json.dumps(r) + "\n" for r in rows))
        kept = [l for l in read_jsonl(self.losses_path) if l["iteration"] <= iteration]
        atomic_text(self.losses_path, "".join(json.dumps(r) + "\n" for r in kept))


def write_config(run_dir: Path, cfg, data_files: list[dict]) -> None:
    """config.json: the resolved options, and the data files the run read (size, sha256)."""
    atomic_text(run_dir / "config.json", json.dumps({**dataclasses.asdict(cfg), "data_files": data_files},
                                                    indent=2) + "\n")


def read_config(run_dir: Path) -> dict:
    """A run's config.json as {option: value} (its data-file record under "data_files")."""
    path = run_dir / "config.json"
    if not path.is_file():
        raise DataError(f"{path}: not found (not a run directory)")
    saved = read_json(path)
    if not isinstance(saved, dict):
        raise DataError(f"{path}: not a JSON object of options")
    return saved


def read_json(path: Path):
    """A JSON file's content; one that does not parse is one DataError line naming it."""
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from None


def read_options(run_dir: Path) -> dict:
    """A run's options as config.json holds them (without its data-file record)."""
    saved = read_config(run_dir)
    saved.pop("data_files", None)
    return saved


def same_options_as_checkpoint(run_dir: Path, checkpoint: dict, may_change: tuple[str, ...]) -> None:
    """--resume: config.json must hold the options last.pt was trained with (a hand edit would mix
    settings within one run), but for the run-control options `may_change`; a missing key differs too."""
    saved = read_options(run_dir)
    absent = object()
    for key in sorted((set(saved) | set(checkpoint)) - set(may_change)):
        here, there = saved.get(key, absent), checkpoint.get(key, absent)
        if here != there:
            shown = lambda v: "missing" if v is absent else repr(v)
            raise DataError(f"{run_dir / 'config.json'}: key '{key}' is {shown(here)} there but {shown(there)} in "
                            f"last.pt, which the run was trained with (edited by hand?); restore it to resume")


def read_jsonl(path: Path) -> list[dict]:
    """The rows of a JSON-lines file; a last line cut short by a kill is left out, any other bad line
    is a DataError naming the file and line."""
    if not path.is_file():
        return []
    lines = path.read_text().splitlines()
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if number == len(lines):
                break  # the write a killed process did not finish
            raise DataError(f"{path}: line {number} is not valid JSON") from None
    return rows


def atomic_save(obj, path: Path) -> None:
    """torch.save, whole or not at all (fileio.atomic_write)."""
    def save(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a Python file: a full disk is then an OSError (a path: a bare RuntimeError)
            torch.save(obj, f)
    atomic_write(path, save)


def load_torch(path: Path, what: str):
    """torch.load(weights_only=True) on the CPU; a file that does not load is one DataError line."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise DataError(f"{path}: not a loadable {what} ({type(exc).__name__}: "
                        f"{(str(exc).splitlines() or [''])[0][:200]})") from None


def write_summary(run_dir: Path, summary: dict) -> Path:
    return atomic_text(run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")


def read_summary(run_dir: Path) -> dict | None:
    """A finished run's summary.json (finish_run writes it last), or None while the run is not finished."""
    path = run_dir / "summary.json"
    return read_json(path) if path.is_file() else None


PROTOCOL = "protocol.json"  # which half of a --select=val protocol a run is (train.run_protocol)


def read_protocol(run_dir: Path) -> dict:
    """The run's protocol.json, {} for a run on its own."""
    path = run_dir / PROTOCOL
    if not path.is_file():
        return {}
    record = read_json(path)
    required = {"validation": (), "test": ("validation_run", "validation_total_iterations")}
    if not (isinstance(record, dict) and record.get("half") in required
            and all(key in record for key in required[record["half"]])):
        raise DataError(f"{path}: not a record of a --select=val half (keys: 'half' validation, or 'half' test "
                        f"with 'validation_run' and 'validation_total_iterations')")
    return record


# ----------------------------------------------------------------------------- open and close

@dataclasses.dataclass
class Run:
    """An open run: its directory (locked by this process), log, data-file record and start time."""
    dir: Path
    log: RunLog
    data_files: list[dict]
    split: str
    started: float
    lock: object = None


def lock_run_dir(run_dir: Path):
    """Hold run_dir/.lock while this process writes the run; a second writer is refused at once."""
    import fcntl
    handle = open(run_dir / ".lock", "w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise DataError(f"{run_dir}: another process is writing this run (it holds {run_dir / '.lock'}); "
                        f"wait for it to stop") from None
    return handle


def same_data_as_before(run_dir: Path, data_files: list[dict]) -> None:
    """--resume: the data files must be those the run started with (sha256 in its config.json)."""
    before = {r["path"]: r for r in read_config(run_dir).get("data_files", [])}
    for now in data_files:
        then = before.get(now["path"])
        if then is not None and then.get("sha256") != now["sha256"]:
            raise DataError(f"{now['path']}: changed since {run_dir} started (sha256 {now['sha256'][:12]}... now, "
                            f"{then['sha256'][:12]}... in its config.json); start a new run")


def open_run(cfg, data: GZSLData, device: torch.device, resume_dir: Path | None = None,
             what: str = "", protocol: dict | None = None) -> Run:
    """Start a run (seeds, a new run directory, config.json, and `protocol` as protocol.json when it
    is a half of a --select=val protocol) or continue `resume_dir`; log the header."""
    data_files = provenance.describe_files(data.files)  # size + sha256: which features produced the numbers
    if resume_dir is None:
        set_seeds(cfg.manualSeed)
        run_dir = make_run_dir(cfg.out_dir, cfg.dataset)
        lock = lock_run_dir(run_dir)
        write_config(run_dir, cfg, data_files)
        if protocol:  # before any training: a kill from here on leaves a run that knows its protocol
            atomic_text(run_dir / PROTOCOL, json.dumps(protocol, indent=2) + "\n")
    else:
        run_dir = resume_dir
        lock = lock_run_dir(run_dir)
        same_data_as_before(run_dir, data_files)
        for stale in run_dir.glob(".*.tmp*"):  # a write a killed process never finished
            stale.unlink()
    log = RunLog(run_dir)
    log.print(f"run directory: {run_dir}{what}")
    log.print(f"device: {device}; seed {cfg.manualSeed}")
    log.print(f"data: {data.source}")
    log.print(data.describe())
    return Run(run_dir, log, data_files, data.split, time.time(), lock)


def finish_run(run: Run, summary: dict, **extra) -> dict:
    """Complete `summary` with the run's facts, write summary.json, release the run directory."""
    summary.update(wall_seconds=round(time.time() - run.started, 1), **extra, run_dir=str(run.dir),
                   split=run.split, data_files=run.data_files)
    write_summary(run.dir, summary)
    if run.lock is not None:
        run.lock.close()
        run.lock = None
    return summary


# ----------------------------------------------------------------------------- checkpoints

CHECKPOINT_FORMAT = "gsmflow-checkpoint-v1"


class NonFiniteError(CommandError, RuntimeError):
    """The loss or the parameters stopped being finite; the message names the iteration (exit code 3)."""
    exit_code = 3


def load_checkpoint(path: Path, data: GZSLData) -> dict:
    """torch.load(weights_only=True), refusing files for other data (one-line DataError)."""
    if not path.is_file():
        raise DataError(f"{path}: checkpoint not found")
    ckpt = load_torch(path, "checkpoint")
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
