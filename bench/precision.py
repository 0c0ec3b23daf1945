"""The precision table: `train_AWA2.py --synthetic` in fp32, --bf16 and --fused_adam over seeds.

    python -m bench.precision                       # fp32, bf16, fused_adam over seeds 6152,1,2
    python -m bench.precision --variants=fp32,fused_adam --seeds=6152,1
    OMP_NUM_THREADS=1 python -m bench.precision     # on a shared machine (what the README's table ran)

Each run is a subprocess of the real command, exactly as a user types it (`--manualSeed` is left out
for the script's own seed 6152, so that run is the README's quick start), so the numbers are what a
user gets. The script prints a table of mean ± std (sample std, ddof=1) over the seeds of the GZSL H
and ZSL T1 under the paper protocol, H under the `last` rule, and each run's wall time (data
generation included; the first run generates the stand-in under out/synthetic_data/), then the
environment: command, date, commit, CPU model and its AVX-512/AVX2/bf16 flags, whether oneDNN has
bf16 kernels, torch, threads, GPU. Everything goes to bench/results-precision-<device>.json (or --out).

On a CPU whose oneDNN has no bf16 kernels (`fast.slow_bf16_matmul`), bf16 matrix products run in a
reference loop hundreds of times slower than fp32, so a bf16 run would take hours: the bf16 variant is
skipped there, with the reason printed and recorded.
"""
from __future__ import annotations

import sys

if __name__ == "__main__" and not __package__:  # run by path: the project's imports below need `python -m`
    print("error: run it from the repository root as: python -m bench.precision", file=sys.stderr)
    raise SystemExit(2)

import json
import shlex
import statistics
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

import cli  # noqa: E402
import config  # noqa: E402
import fast  # noqa: E402
import runs  # noqa: E402
import train_AWA2  # noqa: E402
from bench.environment import describe, environment  # noqa: E402
from cli import opt  # noqa: E402

VARIANTS = {"fp32": [], "bf16": ["--bf16"], "fused_adam": ["--fused_adam"], "tf32": ["--tf32"]}
SCRIPT = "train_AWA2.py"


@dataclass
class PrecisionOptions:
    seeds: str = opt("6152,1,2", "seeds, comma-separated: one run per seed and variant")
    variants: str = opt("fp32,bf16,fused_adam", "variants, comma-separated, of " + ", ".join(VARIANTS)
                        + " (tf32: CUDA only)")
    device: str = opt("auto", "auto | cpu | cuda | cuda:N (passed to the runs unless auto)")
    out: str = opt("", "JSON output (default bench/results-precision-<device>.json)", path=True)


def skip_reason(variant: str, device: torch.device) -> str | None:
    if variant == "bf16" and fast.slow_bf16_matmul(device):
        return ("this CPU's oneDNN has no bf16 kernels (torch.ops.mkldnn._is_mkldnn_bf16_supported() is False; "
                "no AVX512-BF16/AMX): bf16 products run in a reference loop hundreds of times slower than fp32, "
                "so a run would take hours")
    if variant == "tf32" and device.type != "cuda":
        return "tf32 applies to CUDA matrix products only"
    return None


def one_run(variant: str, seed: int, device_arg: str) -> dict:
    cmd = ["python", SCRIPT, "--synthetic", "--quiet", *VARIANTS[variant]]
    if seed != train_AWA2.config.manualSeed:
        cmd.append(f"--manualSeed={seed}")
    if device_arg != "auto":
        cmd.append(f"--device={device_arg}")
    print(f"  {shlex.join(cmd)} ...", flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, *cmd[1:]], capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - t0
    rec = dict(variant=variant, seed=seed, command=shlex.join(cmd), exit_code=proc.returncode, wall_seconds=round(wall, 1))
    run_dirs = [l.split(":", 1)[1].strip() for l in proc.stdout.splitlines() if l.startswith("run directory:")]
    if proc.returncode or not run_dirs:
        rec["error"] = (proc.stderr.strip().splitlines() or ["no run directory printed"])[-1]
        print(f"    failed (exit {proc.returncode}): {rec['error']}", flush=True)
        return rec
    run_dir = Path(run_dirs[-1]) if Path(run_dirs[-1]).is_absolute() else ROOT / run_dirs[-1]
    summary = json.loads((run_dir / "summary.json").read_text())
    rec.update(run_dir=run_dirs[-1], H=summary["paper"]["H"], T1=summary["paper"]["T1"], H_last=summary["last"]["H"],
               T1_last=summary["last"]["T1"], run_wall_seconds=summary["wall_seconds"], stdout=proc.stdout)
    print(f"    H {rec['H']:.2f}  T1 {rec['T1']:.2f}  (last: H {rec['H_last']:.2f})  {wall:.0f} s", flush=True)
    return rec


def mean_std(values: list[float], digits: int = 2) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def table(runs_: list[dict], variants: list[str], skipped: dict) -> str:
    lines = ["| option | GZSL H (paper rule) | ZSL T1 (paper rule) | GZSL H (last) | wall time per run (s) | runs |",
             "|---|---|---|---|---|---|"]
    for v in variants:
        label = "fp32 (default)" if v == "fp32" else f"`--{v}`"
        if v in skipped:
            lines.append(f"| {label} | skipped: {skipped[v].split(':')[0]} | | | | 0 |")
            continue
        ok = [r for r in runs_ if r["variant"] == v and "H" in r]
        lines.append(f"| {label} | {mean_std([r['H'] for r in ok])} | {mean_std([r['T1'] for r in ok])} | "
                     f"{mean_std([r['H_last'] for r in ok])} | {mean_std([r['wall_seconds'] for r in ok], 0)} | "
                     f"{len(ok)} |")
    return "\n".join(lines)


def precision(argv: list[str]) -> dict:
    args = PrecisionOptions(**cli.parse(cli.parser_for("python -m bench.precision", __doc__,
                                                       (PrecisionOptions, None)), argv))
    seeds = config.seed_list(args.seeds, "seeds")
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    for v in variants:
        if v not in VARIANTS:
            raise cli.ConfigError(f"option --variants: unknown variant {v!r} (choose from {', '.join(VARIANTS)})")
    if not seeds or not variants:
        raise cli.ConfigError("options --seeds and --variants need at least one value each")
    device = runs.resolve_device(args.device)
    env = environment(["python", "-m", "bench.precision", *argv], device)
    out = Path(args.out) if args.out else ROOT / "bench" / f"results-precision-{device.type}.json"
    skipped = {v: why for v in variants if (why := skip_reason(v, device))}
    for v, why in skipped.items():
        print(f"skipped variant {v}: {why}", flush=True)
    results: list[dict] = []

    def write():
        out.write_text(json.dumps(dict(environment=env, seeds=seeds, variants=variants, skipped=skipped,
                                       table=table(results, variants, skipped),
                                       runs=[{k: v for k, v in r.items() if k != "stdout"} for r in results],
                                       logs={f"{r['variant']}-{r['seed']}": r.get("stdout", "") for r in results}),
                                  indent=1) + "\n")

    for v in variants:
        if v in skipped:
            continue
        print(f"[{v}]", flush=True)
        for seed in seeds:
            results.append(one_run(v, seed, args.device))
            write()
    write()
    print("\n" + table(results, variants, skipped))
    print("\nH and T1: mean ± sample std over seeds " + ",".join(map(str, seeds))
          + "; wall time: each run's command, data generation included.")
    for v, why in skipped.items():
        print(f"skipped {v}: {why}")
    print(describe(env))
    print(f"written: {out}")
    if any("error" in r for r in results):
        raise SystemExit(1)
    return dict(environment=env, runs=results)


def main(argv=None):
    return cli.main_guard(precision, sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    main()
