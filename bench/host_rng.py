"""How fast the CPU generator's noise is drawn: on one thread, and in parts on several (mt19937.py).

    python -m bench.host_rng                         # 1, 2, 4, 8 threads (as many as the cores allow)
    python -m bench.host_rng --threads=1,4,8,12 --out=bench/gpu/results-host-rng-h100.json
    python -m bench.host_rng --awa2_check      # also the CUDA path's draws at AWA2's real sizes, checked

On CUDA a faithful run draws all its noise on the CPU generator: AWA2's z, 10 classes x 50,000 x
2048 values at each of its 31 evaluations, and 256 x 2048 values per flow iteration. This times
one class's z (`--rows` x 2048 values) with torch's normal_ and with mt19937.parallel_normal_ at
each thread count (best of `--repeats`, after one warm-up draw), checks each threaded draw against
the one-thread draw bit for bit, and times one jump (the first of its length, then cached). The
rates are what bench.bench's projection uses for the host part of a CUDA run.
"""
from __future__ import annotations

import sys

if __name__ == "__main__" and not __package__:  # run by path: the project's imports below need `python -m`
    print("error: run it from the repository root as: python -m bench.host_rng", file=sys.stderr)
    raise SystemExit(2)

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

import cli
import evaluate
import fast
import mt19937
from bench.environment import describe, environment


@dataclass
class HostRngOptions:
    threads: str = cli.opt("", "thread counts, e.g. 1,2,4,8 (default: 1, 2, 4, 8 up to the cores)")
    rows: int = cli.opt(50_000, "rows of 2048 values per draw (AWA2's z of one class)", low=1)
    repeats: int = cli.opt(3, "timed draws per thread count (the best is kept)", low=1)
    out: str = cli.opt("", "write the results as JSON here (default: print only)", path=True)
    awa2_check: bool = cli.opt(False, "also draw one AWA2 evaluation's z (10 x 50,000 x 2048 values, 8 GB with "
                                      "its reference) and one 500-iteration span of flow noise as the CUDA path "
                                      "does (fast.HostNormals / PrefetchedNoise, unpinned) and compare them with "
                                      "the per-class and per-step torch.randn")


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def thread_counts(spec: str) -> list[int]:
    if spec:
        try:
            counts = [int(t) for t in spec.split(",")]
        except ValueError:
            raise cli.ConfigError(f"option --threads: a comma-separated list of counts, got {spec}") from None
        if any(t < 1 for t in counts):
            raise cli.ConfigError(f"option --threads: counts must be >= 1, got {spec}")
        return counts
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return [t for t in (1, 2, 4, 8) if t <= max(cores, 1)]


def awa2_check(threads: int) -> dict:
    """The CUDA path's draws at AWA2's real sizes, on this CPU, against the reference's draws."""
    n, dim, classes = 50_000, 2048, 10
    torch.manual_seed(6152)
    reference = torch.cat([torch.randn(n, dim).view(-1) for _ in range(classes)])
    after = torch.get_rng_state()
    torch.manual_seed(6152)
    pieces = fast.split_draw(n, dim, evaluate.HOST_DRAW_ROWS * threads) * classes
    draws, same, start = fast.HostNormals([rows * dim for rows in pieces], pin=False, threads=threads), True, 0
    for rows in pieces:
        same &= torch.equal(draws.take(), reference[start:start + rows * dim])
        draws.release()
        start += rows * dim
    z = dict(values=reference.numel(), pieces=sorted(set(pieces)), same_values=bool(same),
             same_state=torch.equal(torch.get_rng_state(), after))
    del reference
    torch.manual_seed(7)
    expected = [torch.randn(256, dim) for _ in range(500)]
    after = torch.get_rng_state()
    torch.manual_seed(7)
    noise = fast.PrefetchedNoise(256, dim, torch.device("cpu"), lambda it: 499, threads=threads)
    flow = dict(iterations=500, per_draw=noise.steps, same_values=all(torch.equal(noise(it), expected[it])
                                                                       for it in range(500)))
    flow["same_state"] = torch.equal(torch.get_rng_state(), after)
    print(f"AWA2 check on {threads} threads: one evaluation's z ({z['values']:,} values, pieces of {z['pieces']} "
          f"rows) same values {z['same_values']}, same generator state {z['same_state']}; one 500-iteration span "
          f"of flow noise ({flow['per_draw']} iterations per draw) same values {flow['same_values']}, same "
          f"generator state {flow['same_state']}")
    return dict(threads=threads, z=z, flow_noise=flow)


def main(argv: list[str]) -> dict:
    opts = HostRngOptions(**cli.parse(cli.parser_for("python -m bench.host_rng", __doc__, (HostRngOptions, None)),
                                      argv))
    counts = thread_counts(opts.threads)
    torch.set_num_threads(1)
    env = environment(["python", "-m", "bench.host_rng", *argv], torch.device("cpu"))
    n = opts.rows * 2048
    out, reference = torch.empty(n), torch.empty(n)
    g = torch.Generator().manual_seed(0)
    start = g.get_state()
    reference.normal_(generator=g)
    t0 = time.perf_counter()
    works = mt19937.parallel_draws_work()  # the once-per-process check, and the polynomial it builds
    setup = time.perf_counter() - t0
    window = mt19937.stream(np.arange(mt19937.N, dtype=np.uint32), mt19937.N)[mt19937.N:]
    jump_first = timed(lambda: mt19937.jump(window, 624 * 987_654))
    jump_cached = min(timed(lambda: mt19937.jump(window, 624 * 987_654)) for _ in range(5))
    rows = []
    for t in counts:
        g.set_state(start)
        mt19937.parallel_normal_(out, t, g)  # warm-up: pages, pool threads, this length's jumps
        same = torch.equal(out, reference)
        best = min(timed(lambda: mt19937.parallel_normal_(out, t, g)) for _ in range(opts.repeats))
        rows.append(dict(threads=t, parts=len(mt19937.parts(n, t)), seconds=best, values_per_s=n / best,
                         same_as_one_thread=same))
    base = rows[0]["values_per_s"] if counts[0] == 1 else None
    print(f"one draw of {n:,} values (AWA2's z of one class at --rows={opts.rows}); best of {opts.repeats}")
    print(f"{'threads':>7s} {'parts':>5s} {'time':>9s} {'M values/s':>11s} {'speed-up':>8s}  same numbers")
    for r in rows:
        up = f"x{r['values_per_s'] / base:.2f}" if base else "-"
        print(f"{r['threads']:7d} {r['parts']:5d} {r['seconds'] * 1e3:7.1f} ms {r['values_per_s'] / 1e6:11.0f} "
              f"{up:>8s}  {'yes' if r['same_as_one_thread'] else 'NO'}")
    print(f"self-check and polynomial: {setup * 1e3:.0f} ms (once per process; {'passed' if works else 'FAILED'}); "
          f"one jump: {jump_first * 1e3:.1f} ms the first time for its length, {jump_cached * 1e3:.1f} ms after")
    k = fast.host_draw_threads(0)
    print(f"CUDA runs here draw on {k} thread{'s' if k > 1 else ''} (--host_rng_threads=0)")
    print(describe(env))
    result = dict(environment=env, values=n, rows=rows, self_check_passed=works, self_check_seconds=setup,
                  jump_seconds_first=jump_first, jump_seconds_cached=jump_cached,
                  default_threads_on_cuda=fast.host_draw_threads(0))
    checked = awa2_check(max(counts)) if opts.awa2_check else None
    result["awa2_check"] = checked
    if opts.out:
        Path(opts.out).write_text(json.dumps(result, indent=1) + "\n")
        print(f"written: {opts.out}")
    if not works or not all(r["same_as_one_thread"] for r in rows) or (
            checked and not all(checked[k][f] for k in ("z", "flow_noise") for f in ("same_values", "same_state"))):
        raise SystemExit(1)
    return result


if __name__ == "__main__":
    cli.main_guard(main, sys.argv[1:])
