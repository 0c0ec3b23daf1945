"""One dataset's whole protocol, one seed, timed end to end: the record of a measured run.

    python -m bench.full_run AWA2 --device=cuda                  # the full-size stand-in (--synthetic=full)
    python -m bench.full_run AWA2 --device=cuda --tf32 --json_dir=$OUT
    python -m bench.full_run FLO --synthetic --gen_nepoch=2       # any train_<DATASET>.py option

It runs train_<DATASET>.py's settings, with this command's options over them, in this process,
as the script would (--synthetic=full unless --synthetic is given). A stand-in is generated first,
untimed: it stands for data already on disk. Then `wall_seconds` is timed from loading the data
to summary.json, and on CUDA the peak GPU memory is read (torch.cuda.max_memory_allocated).
The record, <json_dir>/full-<DATASET>-<device>[-<options>].json, holds the dataset, where it
ran (device name, torch, CUDA and driver versions, commit, date, command: bench/environment.py),
the resolved options, wall_seconds, peak_gpu_bytes (null without CUDA), the paper-rule and last
U/S/H/T1, and the time spent in evaluations. `python -m bench.expected_time` shows the records
of faithful runs (no option that changes the schedule) next to its projections.
"""
from __future__ import annotations

import dataclasses
import importlib
import json
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import cli  # noqa: E402
import config  # noqa: E402
import runs  # noqa: E402
import train  # noqa: E402
from bench.environment import environment  # noqa: E402
from benchmarks import NAMES as BENCHMARKS  # noqa: E402
from cli import ConfigError, opt  # noqa: E402
from config import Config  # noqa: E402
from fileio import atomic_text  # noqa: E402

# Options that do not change what a run computes, nor how long its schedule is: a record with no
# other override is a faithful run of the protocol (`faithful` in the record).
KEEPS_THE_PROTOCOL = {*cli.names_where(Config, kind="speed"), *cli.names_where(Config, kind="run"),
                      *cli.names_where(Config, kind="place"), "synthetic"}
NOT_HERE = ("seeds", "resume", "eval_only")  # one run, from the start, per record
NAMED_OPTIONS = ("tf32", "bf16", "fused_adam", "device_noise")  # they change the numbers: in the file name


@dataclass
class FullRunOptions:
    dataset: str = opt("", f"{' | '.join(BENCHMARKS)}", positional=True, dataset=True, choices=tuple(BENCHMARKS))
    json_dir: str = opt("bench/gpu", "where the record goes: <json_dir>/full-<DATASET>-<device>[-<options>].json",
                        path=True)


def parse_command(argv: list[str]) -> tuple[FullRunOptions, list[str]]:
    """This command's options, and the train-script overrides (--synthetic=full unless given)."""
    parser = cli.parser_for("python -m bench.full_run", __doc__, (FullRunOptions, None), (Config, None))
    given = cli.parse(parser, argv)
    own = {f.name for f in dataclasses.fields(FullRunOptions)}
    opts = FullRunOptions(**{k: v for k, v in given.items() if k in own})
    if not opts.dataset:
        raise ConfigError(f"name a dataset: python -m bench.full_run {' | '.join(BENCHMARKS)}")
    overrides = {k: v for k, v in given.items() if k not in own}
    for key in NOT_HERE:
        if key in overrides:
            raise ConfigError(f"option --{key}: not for bench.full_run (one run of one seed, from the start)")
    args = [f"--{k}={v}" for k, v in overrides.items()]
    return opts, args if "synthetic" in overrides else ["--synthetic=full", *args]


def script_config(dataset: str, overrides: list[str]) -> Config:
    """train_<DATASET>.py's settings (its TMM block with --variant=tmm), the overrides over them."""
    module = importlib.import_module(f"train_{dataset}")
    defaults = train.variant_defaults(module.config, overrides, getattr(module, "TMM", None))
    return config.parse_overrides(defaults, overrides)


def stand_in(cfg: Config) -> str:
    """'full' or 'quick' for a generated stand-in, '' for the benchmark's own files."""
    return "full" if cfg.synthetic == "full" else "quick" if cfg.synthetic else ""


def file_name(dataset: str, env: dict, cfg: Config, faithful: bool) -> str:
    """full-<DATASET>-<device>[-<options>].json: the GPU's model (h200), or cpu; then the options
    that change the numbers, 'eager' without CUDA graphs, 'quick' on the small stand-in, 'custom'
    with a changed schedule."""
    device = "cpu" if not env.get("gpu") else re.sub(r"[^a-z0-9]+", "-", env["gpu"].lower().replace("nvidia", "")).strip("-")
    parts = [n for n in NAMED_OPTIONS if getattr(cfg, n)]
    parts += ["eager"] * (env.get("gpu") is not None and not cfg.cuda_graphs)
    parts += ["quick"] * (stand_in(cfg) == "quick") + ["custom"] * (not faithful)
    return "-".join(["full", dataset, device, *parts]) + ".json"


def timed_run(cfg: Config, device: torch.device) -> dict:
    """The protocol (train.run_protocol), timed from loading the data to summary.json."""
    prepared = time.perf_counter()
    if cfg.synthetic:
        train.prepare_data(cfg)  # generates the stand-in once (untimed): it stands for data on disk
    prepared = time.perf_counter() - prepared
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    summary = train.run_protocol(cfg)
    wall = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    rows = runs.read_jsonl(Path(summary["run_dir"]) / "metrics.jsonl")
    evaluations = sum(r["eval_seconds"] for r in rows)
    return dict(wall_seconds=round(wall, 1), stand_in_seconds=round(prepared, 1), peak_gpu_bytes=peak,
                peak_gpu_gib=None if peak is None else round(peak / 2 ** 30, 2),
                stages={"evaluations": len(rows), "evaluation_seconds": round(evaluations, 1),
                        "flow_training_and_setup_seconds": round(wall - evaluations, 1)},
                paper={k: summary.get("paper", {}).get(k) for k in ("T1", "U", "S", "H", "iteration")},
                last={k: summary.get("last", {}).get(k) for k in ("T1", "U", "S", "H", "iteration")},
                run_dir=summary["run_dir"])


def full_run(argv: list[str]) -> dict:
    opts, overrides = parse_command(argv)
    cfg = script_config(opts.dataset, overrides)
    device = runs.resolve_device(cfg.device)
    given = config.parse_args(overrides, cfg)
    faithful = set(given) <= KEEPS_THE_PROTOCOL
    env = environment(["python", "-m", "bench.full_run", *argv], device)
    record = dict(dataset=opts.dataset, stand_in=stand_in(cfg), faithful=faithful, overrides=overrides,
                  device_name=env["gpu"] or f"{env['cpu_model']} (CPU)", **env)
    record.update(timed_run(cfg, device), options=dataclasses.asdict(cfg))
    path = Path(opts.json_dir) if Path(opts.json_dir).is_absolute() else ROOT / opts.json_dir
    out = path / file_name(opts.dataset, env, cfg, faithful)
    atomic_text(out, json.dumps(record, indent=1) + "\n")
    peak = "-" if record["peak_gpu_gib"] is None else f"{record['peak_gpu_gib']} GiB"
    print(f"{opts.dataset} on {record['device_name']}: {record['wall_seconds']:.0f} s end to end, peak GPU memory "
          f"{peak}; paper rule {record['paper']}")
    print(f"written: {out}")
    return record


def main(argv=None) -> dict:
    return cli.main_guard(full_run, sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    main()
