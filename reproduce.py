"""The paper's table in one command: every (dataset, seed) cell as a job, then mean +- std.

    python reproduce.py                                  # AWA2 APY CUB FLO, seeds 6152,1,2, one cell at a time
    python reproduce.py AWA2 APY --seeds=1,2 --parallel=2
    python reproduce.py --synthetic                      # the stand-in data: a demo, not benchmark numbers
    python reproduce.py --executor=slurm --slurm_partition=gpu --slurm_gpus_per_job=1
    python reproduce.py CUB --nSample=1200               # any train-script option, applied to every cell

A cell is one (dataset, seed): train_<DATASET>.py's `config`, this command's --key=value
overrides and --manualSeed=<seed>, run as --select=val does it (a run on the leak-free
validation split, then the run on the test split), so one cell gives all three rules:
paper protocol, val and last. Each cell is an independent submitit job, on this machine
(--executor=local, real subprocesses) or one SLURM job each (--executor=slurm).

Where things go (docs/reproduce.md):
    <out_dir>/reproduce/cells/<settings>/<DATASET>-seed<k>/   a cell: its run directories, cell.json,
                                                              result.json once it finished
    <out_dir>/reproduce/<name>/                               table.md, table.csv, table.png, cells.csv, jobs/
<settings> is <variant>[-synthetic][-<hash of the other overrides>]: commands with the same
settings share cells. <name> is <settings with seeds>[-<datasets>] unless --name is given.

A finished cell (result.json) is read, not run again, when its settings and the sha256 of
its data files are this command's (otherwise the command stops with one line); a killed one
continues from its last checkpoint (--resume, on by default). The same command again after
everything finished only rebuilds the table, from every cell's result.json as it is then.
"""
from __future__ import annotations

import contextlib
import csv
import ctypes
import dataclasses
import datetime
import fcntl
import hashlib
import importlib
import json
import multiprocessing
import os
import select
import signal
import socket
import sys
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock

import cli
import config
from fileio import atomic_text, atomic_write
from provenance import cpu_model, git_commit
import train
import util
from cli import ConfigError, opt
from config import BENCHMARKS, Config, parse_args, parse_overrides, seed_list

ROOT = Path(__file__).resolve().parent
RULES = ("paper", "val", "last")
RULE_NAMES = {"paper": "paper protocol", "val": "val", "last": "last"}
METRICS = ("T1", "U", "S", "H")

# Published numbers, per dataset: {"T1": .., "U": .., "S": .., "H": .., "source": URL}. Empty on
# purpose: neither the authors' README (github.com/uqzhichen/GSMFlow, .../GSMFlow_TMM) states
# them, and the paper's table could not be read where this was written. A column appears in
# the table only for numbers entered here with their source.
PUBLISHED: dict[str, dict] = {}

# Config options a cell sets itself, and what they are set with instead.
NOT_FOR_REPRODUCE = {
    "manualSeed": "one cell per seed: use --seeds=6152,1,2",
    "select": "every cell reports all three rules (paper protocol, val, last)",
    "validation": "every cell runs the validation split first, then the test split",
    "eval_only": "not for reproduce.py (use train_<DATASET>.py --eval_only)",
    "save_synthetic": "not for reproduce.py (use train_<DATASET>.py --save_synthetic)",
    "dataset": "name the datasets as arguments: python reproduce.py AWA2 APY",
}
# Options that say where or how a cell runs, not what it computes: not part of a cell's
# settings (tune.py's MACHINE_LOCAL, plus what reproduce.py sets per cell).
MACHINE_LOCAL = (*config.MACHINE_LOCAL, "validation", "manualSeed")
POLL_SECONDS = {"local": 0.5, "slurm": 2.0}  # how often the driver looks at its jobs
RESULT_KEYS = ("summary", "phases", "wall_seconds", "device", "host")  # what a complete result.json holds
PR_SET_PDEATHSIG = 1  # linux/prctl.h


@dataclass
class ReproduceOptions:
    datasets: list[str] = opt([], f"any of {', '.join(BENCHMARKS)} (default: all of them)", positional=True,
                              dataset=True, choices=tuple(BENCHMARKS))
    seeds: str = opt("6152,1,2", "comma-separated training seeds; one cell per dataset and seed")
    executor: str = opt("local", "local: cells as subprocesses on this machine | slurm: one SLURM job per cell",
                        choices=("local", "slurm"))
    parallel: int = opt(0, "cells at once (0: 1 with local, all with slurm)", low=0)
    name: str = opt("", "table folder under <out_dir>/reproduce/ (default: from the command; docs/reproduce.md)")
    resume: bool = opt(True, "continue a killed cell from its last checkpoint (false: start it again)")
    slurm_partition: str = opt("", "SLURM partition (default: the cluster's)")
    slurm_gpus_per_job: int = opt(1, "GPUs per cell job", low=0)
    slurm_cpus_per_task: int = opt(8, "CPU cores per cell job (also its torch threads)", low=1)
    slurm_mem_gb: int = opt(0, "memory per cell job in GB (0: the partition's default)", low=0)
    slurm_time: int = opt(4320, "time limit per cell job, minutes", low=1)
    slurm_account: str = opt("", "SLURM account")
    slurm_qos: str = opt("", "SLURM QOS")
    slurm_setup: str = opt("", "shell lines run before each job, separated by ';' (e.g. module load cuda)")


@dataclass
class Cell:
    dataset: str
    seed: int
    cfg: Config
    dir: Path

    @property
    def label(self) -> str:
        return f"{self.dataset} seed {self.seed}"


# ----------------------------------------------------------------------------- command line

def parse_command(argv: list[str]) -> tuple[list[str], ReproduceOptions, list[str]]:
    """DATASETs, reproduce.py's own options, and the --key=value Config overrides for every cell."""
    refuse_non_utf8(argv)
    own = {f.name for f in dataclasses.fields(ReproduceOptions)}
    parser = cli.parser_for(
        "reproduce.py", __doc__, (ReproduceOptions, None), (Config, None),
        epilog="Train-script options (config.py; the defaults shown are Config's, each dataset's script sets its "
               "own) apply to every cell. Not for reproduce.py: " + ", ".join(f"--{k}" for k in NOT_FOR_REPRODUCE))
    given = cli.parse(parser, argv)
    opts = ReproduceOptions(**{k: v for k, v in given.items() if k in own})
    explicit = {k: v for k, v in given.items() if k not in own}
    for key, why in NOT_FOR_REPRODUCE.items():
        if key in explicit:
            raise ConfigError(f"option --{key}: {why}")
    seed_list(opts.seeds, "seeds")
    datasets = list(dict.fromkeys(opts.datasets)) or list(BENCHMARKS)
    return datasets, opts, [f"--{k}={v}" for k, v in explicit.items()]


def refuse_non_utf8(argv: list[str]) -> None:
    """Every argument must be text: the table quotes the command, and a path with a byte that is not
    UTF-8 could not be written there. Refused now, not after the cells ran."""
    for arg in argv:
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError:
            name = arg.split("=", 1)[0] if arg.startswith("--") else "argument"
            raise ConfigError(f"option {name}: {os.fsencode(arg)!r} is not valid UTF-8 (the table quotes the "
                              f"command as text); rename that path") from None


def script_config(dataset: str, overrides: list[str]) -> Config:
    """train_<DATASET>.py's settings, its TMM block with --variant=tmm (as the script itself takes it)."""
    module = importlib.import_module(f"train_{dataset}")
    return train.variant_defaults(module.config, overrides, getattr(module, "TMM", None))


def short_hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:8]


def settings_name(overrides: list[str]) -> str:
    """<variant>[-synthetic[-full]][-<hash>]: what the cells compute, beyond the scripts' own settings."""
    given = parse_args(overrides)
    variant = given.get("variant", Config().variant)
    rest = {k: v for k, v in given.items() if k not in MACHINE_LOCAL and k not in ("variant", "synthetic")}
    standin = config.STANDIN_SUFFIX[config.standin(given.get("synthetic"))]
    return (f"{variant}{standin}"
            + (f"-{short_hash(rest)}" if rest else ""))


def table_name(settings: str, datasets: list[str], seeds: str) -> str:
    variant, _, rest = settings.partition("-")
    subset = "" if sorted(datasets) == sorted(BENCHMARKS) else "-" + "+".join(datasets)
    return f"{variant}-seeds{seeds}{subset}" + (f"-{rest}" if rest else "")


def cell_settings(cfg: Config) -> dict:
    return {k: v for k, v in dataclasses.asdict(cfg).items() if k not in MACHINE_LOCAL}


def cell_config(script_cfg: Config, seed: int, cell_dir: Path) -> Config:
    """A cell's Config: its script's with the command's overrides, this seed, the cell's folder as out_dir."""
    return dataclasses.replace(script_cfg, manualSeed=seed, out_dir=str(Path(cell_dir).resolve()), select="test",
                               seeds="")


def make_plan(datasets: list[str], opts: ReproduceOptions, overrides: list[str]) -> tuple[list[Cell], Path, Path]:
    """Every cell's config (bad overrides fail here, before anything runs) and directory."""
    configs = {d: parse_overrides(script_config(d, overrides), overrides) for d in datasets}
    if not configs[datasets[0]].out_dir.strip():
        raise ConfigError("option --out_dir: empty (it would write into the working directory); name a folder")
    out_root = Path(configs[datasets[0]].out_dir) / "reproduce"
    settings = settings_name(overrides)
    cells_root = out_root / "cells" / settings
    table_dir = out_root / (opts.name or table_name(settings, datasets, opts.seeds))
    cells = []
    for d in datasets:
        for seed in seed_list(opts.seeds):
            cell_dir = cells_root / f"{d}-seed{seed}"
            cfg = cell_config(configs[d], seed, cell_dir)
            check_same_settings(cell_dir, cfg)
            cells.append(Cell(d, seed, cfg, cell_dir))
    return cells, table_dir, cells_root


def check_same_settings(cell_dir: Path, cfg: Config) -> None:
    """A cell folder holds runs of one set of settings: refuse to mix in others (an edited script)."""
    record = read_record(cell_dir / "cell.json", ("settings",), warn=False)  # damaged: named when results are read
    if record is None:
        return
    saved, now = record["settings"], cell_settings(cfg)
    defaults = dataclasses.asdict(Config())
    diff = [k for k in sorted(set(saved) | set(now)) if saved.get(k, defaults.get(k)) != now.get(k, defaults.get(k))]
    if diff:
        k = diff[0]
        raise ConfigError(f"{cell_dir} was run with {k}={saved.get(k, defaults.get(k))!r}, this command has "
                          f"{k}={now.get(k, defaults.get(k))!r} (train_{cfg.dataset}.py changed?): remove that "
                          f"folder, or pass another --out_dir")


def check_same_data(cells: list[Cell]) -> None:
    """Refuse a cell computed on other files than this command reads (another --dataroot, files changed
    since): the sha256 that its runs recorded against that of the files now, each file hashed once."""
    import provenance
    digests: dict[Path, str] = {}
    for cell in cells:
        recorded = recorded_data_files(cell)
        if not recorded:
            continue
        try:
            now = {p.name: p for p in train.data_files(cell.cfg)}
            for path in now.values():
                digests[path] = digests.get(path) or provenance.sha256_of(path)
        except (util.DataError, OSError) as exc:  # e.g. a table rebuilt where the data is not
            warning(f"{cell.label}: its data files could not be compared with those it was computed on "
                 f"({cli_text(exc)}); its results are used as they are")
            continue
        for then in recorded:
            name = Path(then["path"]).name
            if name not in now or digests[now[name]] != then["sha256"]:
                reads = f"reads {now[name]} (sha256 {digests[now[name]][:12]}...)" if name in now else f"reads no {name}"
                raise ConfigError(f"{cell.dir} was computed on {then['path']} (sha256 {then['sha256'][:12]}...), "
                                  f"this command {reads}: pass the --dataroot it was computed on, remove that "
                                  f"folder, or pass another --out_dir")


def recorded_data_files(cell: Cell) -> list[dict]:
    """The data files (path, sha256) that the cell's runs recorded: their config.json, and its result.json."""
    records = [read_record(p, warn=False) for p in sorted((cell.dir / cell.dataset).glob("*/config.json"))]
    result = read_record(cell.dir / "result.json", RESULT_KEYS, warn=False)
    files = [f for r in records if r for f in r.get("data_files", [])]
    files += result["summary"].get("data_files", []) if result else []
    return [f for f in files if isinstance(f, dict) and "path" in f and "sha256" in f]


def read_record(path: Path, keys: tuple = (), warn: bool = True) -> dict | None:
    """A JSON record of a cell (cell.json, result.json, a run's config.json), None when absent or damaged.
    A damaged one (cut short, not JSON, lacking `keys`) is named in one warning line: its cell then counts
    as not finished, and runs again (a finished run in it is read, not run again)."""
    try:
        record = json.loads(path.read_text())
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (OSError, ValueError) as exc:  # ValueError: not JSON, or not text
        return _damaged(path, cli_text(exc), warn)
    lacking = [k for k in keys if k not in record] if isinstance(record, dict) else ["its fields: not an object"]
    if lacking:
        return _damaged(path, f"lacks {', '.join(lacking)}", warn)
    return record


def _damaged(path: Path, why: str, warn: bool) -> None:
    if warn:
        warning(f"{path}: damaged ({why}); its cell counts as not finished")


def finished_results(cells: list[Cell], warn: bool = True) -> dict:
    """{(dataset, seed): result} of the cells finished on disk now (result.json and cell.json both whole)."""
    results = {}
    for cell in cells:
        result = read_record(cell.dir / "result.json", RESULT_KEYS, warn)
        if read_record(cell.dir / "cell.json", ("settings",), warn) is not None and result is not None:
            results[(cell.dataset, cell.seed)] = result
    return results


def prepare_folders(*folders: Path) -> None:
    """The output folders, made and writable, before any cell runs."""
    for folder in folders:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"option --out_dir: cannot make {folder} ({exc.strerror})") from None
        if not os.access(folder, os.W_OK | os.X_OK):
            raise ConfigError(f"option --out_dir: {folder} is not writable")


def cli_text(exc: Exception) -> str:
    """An exception as one line: an OSError as 'file: reason', others as their message."""
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


# ----------------------------------------------------------------------------- one cell (the job)

def run_cell(dataset: str, seed: int, overrides: list[str], cell_dir: str, resume: bool = True,
             threads: int = 0, token: str = "", driver_pid: int = 0) -> dict:
    """One (dataset, seed) cell: the job. Its work (cell_work) runs in a child process, so that a cell
    killed by a signal is reported with it (the kernel's out-of-memory killer sends SIGKILL, which leaves
    no trace in the log); the child ends with this process (die_with_parent). `driver_pid` (the local
    executor): this job ends when the driver does, even by kill -9.

    Returns the cell's record (also cell_dir/result.json), or {"error": line, "exit_code": 2 or 3}.
    """
    # fork: this process has run nothing of torch yet (no thread pools to copy), and the child needs no
    # second import of torch, the project and the data
    context = multiprocessing.get_context("fork")
    receive, send = context.Pipe(duplex=False)
    worker = context.Process(target=_cell_process, name=f"cell {dataset} seed {seed}",
                             args=(send, os.getpid(), dataset, seed, overrides, cell_dir, resume, threads, token))
    worker.start()
    send.close()
    if driver_pid:
        end_with(driver_pid)
    try:
        outcome = receive.recv()
    except EOFError:  # the child ended without a word
        outcome = None
    worker.join()
    return outcome if outcome is not None else {"error": ended_how(worker.exitcode), "exit_code": 2, "see_log": True}


def _cell_process(send, parent: int, *args) -> None:
    die_with_parent(parent)
    try:
        outcome = cell_work(*args)
    except Exception as exc:  # a bug: its traceback goes to the job's log, its last line to the driver
        traceback.print_exc()
        outcome = {"error": traceback.format_exception_only(exc)[-1].strip(), "exit_code": 2, "see_log": True}
    send.send(outcome)


def ended_how(exitcode: int) -> str:
    if exitcode >= 0:
        return f"its process ended with exit code {exitcode} and no result"
    try:
        name = signal.Signals(-exitcode).name
    except ValueError:
        name = "a signal"
    why = ": the kernel's out-of-memory killer, or a kill -9" if -exitcode == signal.SIGKILL else ""
    return f"killed by signal {-exitcode} ({name}{why})"


def die_with_parent(parent: int) -> None:
    """Linux: the kernel sends this process SIGKILL when its parent ends (prctl PR_SET_PDEATHSIG)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL))
    except (OSError, AttributeError):  # not Linux
        return
    if os.getppid() != parent:  # it ended before the line above
        os._exit(1)


def end_with(driver_pid: int) -> None:
    """End this job when the driver process ends. Its child, submitit's local controller, outlives a
    driver killed with kill -9 and waits for this job: a pidfd of the driver becomes readable when it ends."""
    try:
        pidfd = os.pidfd_open(driver_pid)
    except ProcessLookupError:  # it ended already
        os.kill(os.getpid(), signal.SIGKILL)
    except (AttributeError, OSError):  # no pidfd (not Linux >= 5.3): the job outlives a killed driver
        return

    def watch():
        select.select([pidfd], [], [])
        os.kill(os.getpid(), signal.SIGKILL)  # and the cell's process with it (die_with_parent)
    threading.Thread(target=watch, name="end with the driver", daemon=True).start()


def cell_work(dataset: str, seed: int, overrides: list[str], cell_dir: str, resume: bool, threads: int,
              token: str) -> dict:
    """The cell: the validation run, then the test run. A run of this cell that was killed continues from
    its last.pt (resume=True) or starts again. Bad data or a non-finite loss come back as
    {"error": line, "exit_code": 2 or 3}; so does a full or read-only disk."""
    import torch

    import report
    import runs
    if threads:
        torch.set_num_threads(threads)
    started, folder, host = time.time(), Path(cell_dir), socket.gethostname()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with cell_lock(folder, host):
            cfg = cell_config(parse_overrides(script_config(dataset, overrides), overrides), seed, folder)
            _atomic_json(folder / "cell.json", {"dataset": dataset, "seed": seed, "overrides": overrides,
                                                "settings": cell_settings(cfg)})
            finished = read_record(folder / "result.json", RESULT_KEYS)
            if finished is not None:
                return finished
            commit = git_commit()  # the code this process runs
            _atomic_json(folder / "started.json", {"token": token, "host": host, "pid": os.getpid(),
                                                   "job_id": os.environ.get("SLURM_JOB_ID", ""), "time": time.time()})
            phases = {}
            val, phases["validation"] = _run_phase(dataclasses.replace(cfg, validation=True, save_synthetic=""), resume)
            test, phases["test"] = _run_phase(dataclasses.replace(cfg, validation=False), resume)
            if "paper" in val and "paper" in test:  # --select=val's rule, as train.run_protocol applies it
                rows = lambda s: runs.read_jsonl(Path(s["run_dir"]) / "metrics.jsonl")
                test["val"] = report.choose_on_validation(rows(val), val["total_iterations"], rows(test),
                                                          test["total_iterations"])
                test["validation_run_dir"] = val["run_dir"]
            device = runs.resolve_device(cfg.device)
            result = {"dataset": dataset, "seed": seed, "summary": test, "phases": phases,
                      "wall_seconds": round(time.time() - started, 1), "device": describe_device(device, torch),
                      "host": host, "commit": commit,
                      "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
            _atomic_json(folder / "result.json", result)
            return result
    except (ConfigError, util.DataError) as exc:
        return {"error": str(exc), "exit_code": 2}
    except runs.NonFiniteError as exc:
        return {"error": str(exc), "exit_code": 3}
    except OSError as exc:  # a full or read-only disk
        return {"error": cli_text(exc), "exit_code": 2}


@contextlib.contextmanager
def cell_lock(folder: Path, host: str):
    """Hold folder/.lock while this process runs the cell. The file names its holder, for a second job,
    which is refused (the kernel releases the lock of a process that ended, however it ended)."""
    with open(folder / ".lock", "a+") as handle:  # a+: opening it must not erase the holder's name
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "it has not written its name yet"
            raise util.DataError(f"{folder}: another job is running this cell now ({holder}); wait until it "
                                 f"ends, or stop it, then run the command again") from None
        handle.truncate(0)
        job = os.environ.get("SLURM_JOB_ID")
        handle.write(f"pid {os.getpid()} on {host}{f', SLURM job {job}' if job else ''}\n")
        handle.flush()
        yield


def _run_phase(cfg: Config, resume: bool) -> tuple[dict, str]:
    """The run of this phase (validation or test split): read if finished, else resumed or started."""
    parent = Path(cfg.out_dir) / cfg.dataset
    mine = []
    for run_dir in parent.iterdir() if parent.is_dir() else ():
        record = read_record(run_dir / "config.json", warn=False)  # damaged: not a run to continue
        if record is not None and record.get("validation") == cfg.validation:
            mine.append(run_dir)
    mine.sort(key=lambda p: (p.name.split("-")[:2], int(p.name.split("-")[2]) if p.name.count("-") == 2 else 0))
    if mine:
        latest = mine[-1]
        if (latest / "summary.json").is_file():
            return json.loads((latest / "summary.json").read_text()), "done earlier"
        if resume and (latest / "last.pt").is_file():
            try:
                return train.resume(cfg, [f"--resume={latest}", f"--device={cfg.device}", "--quiet"]), "resumed"
            except (ConfigError, util.DataError) as exc:  # it would fail the same way on every rerun
                raise type(exc)(f"{exc}; this cell continues {latest} on every rerun: --resume=false starts "
                                f"that run again (keeping that folder)") from None
    return train.run(cfg), "run"


def describe_device(device, torch) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    threads = torch.get_num_threads()
    return f"cpu ({cpu_model()}, {threads} thread{'s' if threads > 1 else ''})"


def _atomic_json(path: Path, obj) -> None:
    atomic_text(path, json.dumps(obj, indent=2) + "\n")


# ----------------------------------------------------------------------------- running the cells

def make_executor(opts: ReproduceOptions, folder: Path, any_cuda: bool):
    import submitit
    if opts.executor == "slurm":
        ex = submitit.SlurmExecutor(folder=folder)
        params = dict(time=opts.slurm_time, cpus_per_task=opts.slurm_cpus_per_task, ntasks_per_node=1,
                      gpus_per_node=opts.slurm_gpus_per_job if any_cuda else 0,
                      setup=[s.strip() for s in opts.slurm_setup.split(";") if s.strip()])
        for key in ("partition", "account", "qos"):
            if getattr(opts, f"slurm_{key}"):
                params[key] = getattr(opts, f"slurm_{key}")
        if opts.slurm_mem_gb:
            params["mem"] = f"{opts.slurm_mem_gb}GB"
        ex.update_parameters(**params)
        return ex
    ex = submitit.LocalExecutor(folder=folder)
    ex.update_parameters(timeout_min=60 * 24 * 365)  # no limit (submitit's default is 2 minutes)
    return ex


def local_gpus() -> list[int]:
    """The GPU ids a local cell may be given (submitit sets CUDA_VISIBLE_DEVICES per job)."""
    import torch
    if not torch.cuda.is_available():
        return []
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible:
        try:
            return [int(x) for x in visible.split(",")]
        except ValueError:
            pass
    return list(range(torch.cuda.device_count()))


def fmt_duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def say(text: str) -> None:
    print(text, flush=True)


def warning(text: str) -> None:
    print(f"warning: {text}", file=sys.stderr, flush=True)


class Progress:
    """The ETA of the cells not finished yet, from the wall times of finished ones."""

    def __init__(self, n_total: int, concurrency: int):
        self.n_total, self.concurrency, self.durations = n_total, max(1, concurrency), []
        self.finished = 0

    def eta(self, pending: int, running_elapsed: list[float]) -> str:
        left = pending + len(running_elapsed)
        if not left:
            return "none left"
        if not self.durations:
            return f"{left} left, ETA after the first cell finishes"
        mean = sum(self.durations) / len(self.durations)
        work = pending * mean + sum(max(mean - e, 0.0) for e in running_elapsed)
        seconds = work / min(self.concurrency, left)
        at = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=seconds)).strftime("%H:%M UTC")
        return f"{left} left, ETA {fmt_duration(seconds)} (~{at})"


def run_cells(cells: list[Cell], results: dict, opts: ReproduceOptions, overrides: list[str],
              jobs_dir: Path) -> list:
    """Run the cells not in `results` (those finished earlier) as submitit jobs. Returns the failures:
    [(cell, {"error": line, "exit_code": code})]."""
    failures, todo = [], []
    n = len(cells)
    for i, cell in enumerate(cells, 1):
        r = results.get((cell.dataset, cell.seed))
        if r is not None:
            say(f"[{i}/{n} done] {cell.label}: finished earlier ({fmt_duration(r['wall_seconds'])}), read from {cell.dir}")
        else:
            todo.append(cell)
    if not todo:
        return failures
    any_cuda = any(c.cfg.device != "cpu" for c in todo)
    gpus = local_gpus() if opts.executor == "local" and any_cuda else []
    limit = opts.parallel or (1 if opts.executor == "local" else len(todo))
    threads = 0
    if opts.executor == "slurm":
        threads = opts.slurm_cpus_per_task
    elif limit > 1 and "OMP_NUM_THREADS" not in os.environ:
        threads = max(1, (os.cpu_count() or 1) // limit)
    executor = make_executor(opts, jobs_dir, any_cuda)
    import reproduce  # the job function by reference (not by value from __main__)
    progress = Progress(n, limit)
    progress.durations = [r["wall_seconds"] for r in results.values() if "resumed" not in r["phases"].values()]
    pending, running, done_count = list(todo), {}, n - len(todo)
    free_slots = list(range(limit))
    try:
        while pending or running:
            while pending and len(running) < limit:
                cell = pending.pop(0)
                slot = free_slots.pop(0)
                if opts.executor == "local":
                    executor.update_parameters(gpus_per_node=1 if gpus else 0,
                                               visible_gpus=[gpus[slot % len(gpus)]] if gpus else [])
                else:
                    executor.update_parameters(job_name=f"gsmflow-{cell.dataset}-seed{cell.seed}")
                token = uuid.uuid4().hex
                with mock.patch.dict(os.environ, job_environment()):  # what the job inherits, not this process
                    job = executor.submit(reproduce.run_cell, cell.dataset, cell.seed, overrides,
                                          str(cell.dir.resolve()), opts.resume, threads, token,
                                          os.getpid() if opts.executor == "local" else 0)
                running[job.job_id] = dict(job=job, cell=cell, slot=slot, token=token, started=None,
                                           submitted=time.time())
                if opts.executor == "local":
                    running[job.job_id]["started"] = time.time()
                    say(f"[start] {cell.label} (pid {job.job_id}, log {job.paths.stdout}); "
                        f"{progress.eta(len(pending), [0.0] * len(running))}")
                else:
                    say(f"[queue] {cell.label}: SLURM job {job.job_id} (log {job.paths.stdout})")
            time.sleep(POLL_SECONDS[opts.executor])
            now = time.time()
            for job_id, entry in list(running.items()):
                job, cell = entry["job"], entry["cell"]
                if entry["started"] is None and _started_token(cell.dir) == entry["token"]:
                    entry["started"] = now
                    info = json.loads((cell.dir / "started.json").read_text())
                    say(f"[start] {cell.label} on {info['host']} (SLURM job {job_id}); "
                        f"{progress.eta(len(pending), [now - (e['started'] or now) for e in running.values()])}")
                if not job.done():
                    continue
                del running[job_id]
                free_slots.append(entry["slot"])
                done_count += 1
                try:
                    result = job.result()
                except Exception as exc:  # a crash in the job: its traceback is in the job's log
                    lines = [l for l in str(exc).strip().splitlines() if l.strip()]
                    result = {"error": lines[-1] if lines else type(exc).__name__, "exit_code": 2, "see_log": True}
                if result.pop("see_log", False):
                    result["error"] += f" (log: {job.paths.stderr})"
                elapsed = now - (entry["started"] or entry["submitted"])
                running_elapsed = [now - (e["started"] or now) for e in running.values()]
                if "error" in result:
                    failures.append((cell, result))
                    say(f"[{done_count}/{n} done] {cell.label}: FAILED after {fmt_duration(elapsed)}: {result['error']}; "
                        f"{progress.eta(len(pending), running_elapsed)}")
                    continue
                if "resumed" not in result["phases"].values():
                    progress.durations.append(result["wall_seconds"])
                s = result["summary"]
                scores = ", ".join(f"{rule} H {s[rule]['H']:.2f}" for rule in RULES if rule in s)
                resumed = " (resumed)" if "resumed" in result["phases"].values() else ""
                say(f"[{done_count}/{n} done] {cell.label}: finished in {fmt_duration(result['wall_seconds'])}{resumed} "
                    f"on {result['device']}: {scores or 'no evaluation ran'}; "
                    f"{progress.eta(len(pending), running_elapsed)}")
    except KeyboardInterrupt:
        for entry in running.values():
            entry["job"].cancel(check=False)
        raise
    return failures


def job_environment() -> dict:
    """The jobs import this file and the project's modules from ROOT, wherever the command was started
    (PYTHONSAFEPATH: `python -m submitit...` would put the working directory, maybe another checkout, first)."""
    return {"PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
            "PYTHONSAFEPATH": "1"}


def share_synthetic_data(cells: list[Cell]) -> None:
    """--synthetic: generate each stand-in once, next to the cells, and link every cell to it
    (a run reads <out_dir>/synthetic_data, or synthetic_full; the cells' out_dir is their own folder)."""
    import synthetic
    for cell in cells:
        if not cell.cfg.synthetic:
            continue
        synthetic.ensure_standin(cell.dir.parent, cell.dataset, cell.cfg.synthetic)
        folder = synthetic.STANDIN_ROOTS[cell.cfg.synthetic]
        cell.dir.mkdir(parents=True, exist_ok=True)
        link = cell.dir / folder
        if not link.exists():
            link.symlink_to(Path("..") / folder, target_is_directory=True)


def _started_token(cell_dir: Path) -> str:
    try:
        return json.loads((cell_dir / "started.json").read_text()).get("token", "")
    except (OSError, ValueError):
        return ""


# ----------------------------------------------------------------------------- the table

def table_rows(cells: list[Cell], results: dict) -> list[dict]:
    """One row per dataset and rule: mean +- std over the dataset's finished cells (report.seed_table)."""
    import report
    rows = []
    for dataset in dict.fromkeys(c.dataset for c in cells):
        seeds = [c.seed for c in cells if c.dataset == dataset]
        done = [results[(dataset, s)] for s in seeds if (dataset, s) in results]
        table = report.seed_table([r["summary"] for r in done]) if done else {}
        walls = [r["wall_seconds"] for r in done]
        devices = sorted({r["device"] for r in done})
        for rule in RULES:
            if rule not in table:
                continue
            rows.append({"dataset": dataset, "rule": rule, "n_seeds": len(done), "of_seeds": len(seeds),
                         "seeds": ",".join(str(r["seed"]) for r in done), **table[rule],
                         "wall_seconds_per_cell": round(sum(walls) / len(walls), 1),
                         "resumed_cells": sum("resumed" in r["phases"].values() for r in done),
                         "devices": "; ".join(devices)})
    return rows


def fmt_stat(stat, n: int) -> str:
    if not stat:
        return "–"
    return f"{stat[0]:.2f} ± {stat[1]:.2f}" if n > 1 else f"{stat[0]:.2f}"  # no std from one seed


def commit_line(cells: list[Cell], results: dict) -> str:
    """The commit(s) the finished cells ran (each records its own): one, or each with its cells."""
    by_commit: dict[str, list[str]] = {}
    for c in cells:
        if (c.dataset, c.seed) in results:
            by_commit.setdefault(results[(c.dataset, c.seed)].get("commit", "not recorded"), []).append(c.label)
    if len(by_commit) > 1:
        return "Commits: " + ", ".join(f"{commit} ({', '.join(labels)})" for commit, labels in by_commit.items())
    return f"Commit: {next(iter(by_commit), '– (no cell finished)')}"


def data_lines(cells: list[Cell], results: dict) -> list[str]:
    """The data files each dataset's finished cells were computed on, as their test runs recorded them."""
    lines = ["## Data", "", "The files the finished cells were computed on (as their runs recorded them):", ""]
    for dataset in dict.fromkeys(c.dataset for c in cells):
        files = dict.fromkeys(f"`{f['path']}` (sha256 {f['sha256'][:12]}...)" for c in cells if c.dataset == dataset
                              for f in results.get((c.dataset, c.seed), {}).get("summary", {}).get("data_files", []))
        lines.append(f"- {dataset}: {', '.join(files) or 'none recorded'}")
    return lines


def write_table(table_dir: Path, cells: list[Cell], results: dict, command: str, synthetic: bool) -> list[Path]:
    import report
    table_dir.mkdir(parents=True, exist_ok=True)
    rows = table_rows(cells, results)
    published = {d: PUBLISHED[d] for d in dict.fromkeys(c.dataset for c in cells) if d in PUBLISHED}
    seeds = ",".join(dict.fromkeys(str(c.seed) for c in cells))
    header = ["dataset", "rule", "seeds", "ZSL T1", "GZSL U", "GZSL S", "GZSL H", "wall time per cell", "device"]
    if published and not synthetic:
        header.append("published T1 / U / S / H")
    lines = [f"# GSMFlow: {table_dir.name}", "",
             f"Command: `{command}`  ", f"{commit_line(cells, results)}  ",
             f"Written: {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}  ",
             f"Data: {'SYNTHETIC stand-in (synthetic.py): NOT benchmark numbers' if synthetic else 'the benchmark files'}",
             "", f"Mean ± std (sample std, ddof=1) over seeds {seeds}; percentages. "
             "`seeds` counts the finished cells.", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        first = r["rule"] == "paper" or not any(x["dataset"] == r["dataset"] and x["rule"] == "paper" for x in rows)
        wall = fmt_duration(r["wall_seconds_per_cell"]) + (f" ({r['resumed_cells']} resumed)" if r["resumed_cells"] else "")
        cols = [r["dataset"] if first else "", RULE_NAMES[r["rule"]], f"{r['n_seeds']}/{r['of_seeds']}",
                *(fmt_stat(r.get(m), r["n_seeds"]) for m in METRICS), wall, r["devices"]]
        if len(header) > len(cols):
            p = published.get(r["dataset"])
            cols.append(" / ".join(f"{p[m]:.1f}" for m in METRICS) + f" ([source]({p['source']}))"
                        if p and r["rule"] == "paper" else "")
        lines.append("| " + " | ".join(cols) + " |")
    lines += ["", "Rules:", *(f"- {text}." for text in (report.PAPER_RULE, report.VAL_RULE, report.LAST_RULE)), ""]
    for dataset in dict.fromkeys(c.dataset for c in cells):
        done = [results[(c.dataset, c.seed)] for c in cells if c.dataset == dataset and (c.dataset, c.seed) in results]
        for rule in RULES:
            lacking = [r for r in done if rule not in r["summary"]]
            if lacking:
                why = ("its validation run made no evaluation (no iteration above --eval_start is a multiple of "
                       "--evl_interval on the smaller validation split)" if rule == "val" and all("paper" in r["summary"]
                       for r in lacking) else "no evaluation ran")
                lines.append(f"No {RULE_NAMES[rule]} row for {dataset}: in {len(lacking)} of {len(done)} cells {why}.  ")
    lines.append("")
    if synthetic:
        lines.append("Published numbers: not compared; these runs are on generated stand-in data.")
    elif not published:
        lines.append("Published numbers: not shown. Neither authors' README "
                     "(https://github.com/uqzhichen/GSMFlow, https://github.com/uqzhichen/GSMFlow_TMM) states them, "
                     "and no table of the paper could be checked when this script was written (reproduce.PUBLISHED).")
    lines += ["", "## Cells", "", "| dataset | seed | ZSL T1 (paper) | H (paper) | H (val) | H (last) | wall time | device | "
              "host | commit | cell |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in cells:
        r = results.get((c.dataset, c.seed))
        if r is None:
            lines.append(f"| {c.dataset} | {c.seed} | not finished | | | | | | | | `{c.dir}` |")
            continue
        s = r["summary"]
        get = lambda rule, m: f"{s[rule][m]:.2f}" if rule in s and m in s[rule] else "–"
        wall = fmt_duration(r["wall_seconds"]) + (" (resumed)" if "resumed" in r["phases"].values() else "")
        lines.append(f"| {c.dataset} | {c.seed} | {get('paper', 'T1')} | {get('paper', 'H')} | {get('val', 'H')} | "
                     f"{get('last', 'H')} | {wall} | {r['device']} | {r['host']} | {r.get('commit', 'not recorded')} | "
                     f"`{c.dir}` |")
    lines += ["", *data_lines(cells, results)]
    written = [table_dir / "table.md", table_dir / "table.csv", table_dir / "cells.csv", table_dir / "table.png"]
    atomic_text(written[0], "\n".join(lines) + "\n")
    _write_csv(written[1], [{"dataset": r["dataset"], "rule": r["rule"], "n_seeds": r["n_seeds"], "seeds": r["seeds"],
                             **{f"{m}_{k}": (round(r[m][i], 4) if m in r else "") for m in METRICS
                                for i, k in enumerate(("mean", "std"))},
                             "wall_seconds_per_cell": r["wall_seconds_per_cell"], "device": r["devices"],
                             "synthetic": synthetic} for r in rows])
    cell_rows = []
    for c in cells:
        r = results.get((c.dataset, c.seed))
        row = {"dataset": c.dataset, "seed": c.seed, "finished": r is not None}
        for rule in RULES:
            for m in METRICS:
                row[f"{rule}_{m}"] = round(r["summary"][rule][m], 4) if r and m in r["summary"].get(rule, {}) else ""
        row.update(wall_seconds=r["wall_seconds"] if r else "", resumed="resumed" in r["phases"].values() if r else "",
                   device=r["device"] if r else "", host=r["host"] if r else "",
                   commit=r.get("commit", "not recorded") if r else "", cell_dir=str(c.dir))
        cell_rows.append(row)
    _write_csv(written[2], cell_rows)
    plot_h(written[3], rows, table_dir.name, synthetic)
    return written


def _write_csv(path: Path, rows: list[dict]) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as f:
            if rows:
                out = csv.DictWriter(f, fieldnames=list(rows[0]))
                out.writeheader()
                out.writerows(rows)
    atomic_write(path, write)


def plot_h(path: Path, rows: list[dict], title: str, synthetic: bool) -> None:
    """GZSL H per dataset, one bar per rule, error bars = std over seeds."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 + 1.9 * len(datasets)), 4.6))
    width, colors = 0.26, {"paper": "tab:red", "val": "tab:blue", "last": "tab:gray"}
    top = 0.0
    for k, rule in enumerate(RULES):
        xs, means, stds = [], [], []
        for i, d in enumerate(datasets):
            r = next((x for x in rows if x["dataset"] == d and x["rule"] == rule), None)
            if r and "H" in r:
                xs.append(i + (k - 1) * width)
                means.append(r["H"][0])
                stds.append(r["H"][1])
        if xs:
            ax.bar(xs, means, width, yerr=stds, capsize=3, color=colors[rule], label=RULE_NAMES[rule],
                   error_kw={"elinewidth": 1})
            for x, m, s in zip(xs, means, stds):
                ax.text(x, m + s + 0.8, f"{m:.1f}", ha="center", va="bottom", fontsize=7)
                top = max(top, m + s)
        for d in datasets:
            p = PUBLISHED.get(d)
            if p and not synthetic and rule == "paper":
                i = datasets.index(d)
                ax.plot([i - 1.5 * width, i + 1.5 * width], [p["H"]] * 2, "k--", lw=1)
    ax.set_xticks(range(len(datasets)), datasets)
    ax.set_ylabel("GZSL H (%)")
    ax.set_ylim(0, max(10.0, top * 1.15 + 2))
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=8, loc="lower center", ncol=3, frameon=False)
    ax.set_title(title + ("\nSYNTHETIC stand-in data: not benchmark numbers" if synthetic else "")
                 + "\nGZSL H, mean ± std over seeds (the paper protocol selects on the TEST set)", fontsize=9)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    plt.close(fig)


# ----------------------------------------------------------------------------- entry point

class CellsFailed(cli.CommandError):
    """Some cells failed: the table holds the others (exit 2, or 3 when a loss became non-finite)."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.exit_code = code


def main(argv: list[str] | None = None) -> dict:
    return cli.main_guard(reproduce, sys.argv[1:] if argv is None else argv)


def reproduce(argv: list[str]) -> dict:
    datasets, opts, overrides = parse_command(argv)
    cells, table_dir, cells_root = make_plan(datasets, opts, overrides)
    synthetic = cells[0].cfg.synthetic
    say(f"{len(cells)} cells: {', '.join(datasets)} x seeds {opts.seeds}; cells in {cells_root}, "
        f"table in {table_dir}; executor {opts.executor}")
    t0 = time.time()
    prepare_folders(cells_root, table_dir / "jobs")
    try:
        share_synthetic_data(cells)
        check_same_data(cells)
        failures = run_cells(cells, finished_results(cells), opts, overrides, table_dir / "jobs")
        # The table from what is on disk now: a cell that another driver (same --out_dir) finished counts.
        results = finished_results(cells, warn=False)
        failures = [(c, r) for c, r in failures if (c.dataset, c.seed) not in results]
        command = "python reproduce.py " + " ".join(argv)
        written = write_table(table_dir, cells, results, command.strip(), synthetic)
    except KeyboardInterrupt:
        print("\nrunning cells cancelled; run the same command again to continue them", file=sys.stderr)
        raise
    except OSError as exc:  # a full disk, a folder made read-only meanwhile: the cells written so far stay
        raise cli.CommandError(f"{cli_text(exc)}; the finished cells are kept in {cells_root}: run the same "
                               f"command again once that is mended") from None
    say(f"written: {', '.join(str(p) for p in written)} ({fmt_duration(time.time() - t0)})")
    if failures:
        listed = "; ".join(f"{c.label}: {r['error']}" for c, r in failures)
        raise CellsFailed(f"{len(failures)} of {len(cells)} cells failed ({listed}); the table holds the others. "
                          f"Run the same command again to retry them", max(r["exit_code"] for _, r in failures))
    return {"table_dir": str(table_dir), "results": results}


if __name__ == "__main__":
    main()
