"""Cost of GSMFlow-TMM's boundary-sample mining (mining.py) at AWA2 shapes.

    python -m bench.bench_mining                 # 2 batches x 3 SGD steps, 2 relation iterations
    python -m bench.bench_mining --batches=92 --loops=30 --relation_iters=4551   # the full AWA2 cost
    python -m bench.bench_mining --device=cuda   # default: cuda when available, else cpu

AWA2 shapes: 23,527 x 2048 training features, 40 seen classes, 85-d attributes, batches of 256
(relation_batchsize), a 2048-wide relation network. Mining runs one batch at a time; one SGD step
is a forward + backward pass of the relation network over the batch's B x C pairs: two
(B*C) x (D + d_a) x H products, against which the step is compared (`torch.mm` of that shape). The bench mines
`--batches` batches with `--loops` steps each, times the relation training for `--relation_iters`
iterations, and projects the times of the authors' AWA2 settings: a pass of 91 batches x 30 steps, after 91 x 50 + 1 = 4,551 relation iterations. Memory: peak
resident memory (CPU) or peak allocated memory (CUDA) of the mining against the chunk bound
W = B*C*(D + d_a + H) * 4 bytes (one pair matrix and one hidden layer of one batch).
The relation network is freshly initialised (the cost does not depend on its weights).
"""
from __future__ import annotations

import sys

if __name__ == "__main__" and not __package__:  # run by path: the project's imports below need `python -m`
    print("error: run it from the repository root as: python -m bench.bench_mining", file=sys.stderr)
    raise SystemExit(2)

import datetime
import json
import resource
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

import cli
import mining
import train_AWA2
import util
from benchmarks import BENCHMARKS
from cli import opt
from models import RelationNet
from provenance import cpu_model, git_commit

# AWA2's shapes (benchmarks.py) and the TMM block of train_AWA2.py (the authors' AWA2 settings)
_B, _T = BENCHMARKS["AWA2"], train_AWA2.TMM
N, D, C, DA = _B.trainval, _B.feature_dim, _B.seen, _B.semantic_dims["att"]
B, H = _T["relation_batchsize"], train_AWA2.config.hidden_dim
FULL_BATCHES = N // _T["batchsize"]                     # docs/tmm.md: AWA2 mines 91 batches
FULL_LOOPS = _T["loops_adv"]
FULL_RELATION_ITERS = (N // _T["batchsize"]) * _T["relation_nepoch"] + 1


@dataclass
class MiningBenchOptions:
    batches: int = opt(2, "batches mined (the authors' AWA2 pass: 91)", low=1, high=N // B)
    loops: int = opt(3, "SGD steps per batch (the authors' AWA2: 30)", low=1)
    relation_iters: int = opt(2, "relation-network iterations timed (the authors' AWA2: 4,551)", low=1)
    device: str = opt("auto", "auto | cpu | cuda | cuda:N")
    out: str = opt("", "also write the result as JSON here", path=True)


def peak_bytes(device) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv: list[str] | None = None):
    return cli.main_guard(bench, sys.argv[1:] if argv is None else argv)


def bench(argv: list[str]):
    args = MiningBenchOptions(**cli.parse(cli.parser_for("python -m bench.bench_mining", __doc__,
                                                         (MiningBenchOptions, None)), argv))
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)
    torch.manual_seed(0)
    np.random.seed(0)
    rng = np.random.default_rng(0)
    features = torch.from_numpy(rng.random((N, D), dtype=np.float32)).to(device)
    labels = torch.from_numpy(rng.integers(0, C, N)).to(device)
    semantics = torch.from_numpy(rng.random((C, DA), dtype=np.float32)).to(device)
    net = RelationNet(DA, D, H).to(device)

    # mining first, in a fresh process: its peak memory is then its own (ru_maxrss only grows)
    sampler = util.EpochPermutationSampler(N, B)
    sampler.cursor = N - args.batches * B  # so that the pass takes exactly --batches batches
    if mining.mined_batches(N, B, sampler.cursor) != args.batches:
        raise RuntimeError(f"the mining pass would take {mining.mined_batches(N, B, sampler.cursor)} batches, "
                           f"not --batches={args.batches}")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    net.eval()
    sync(device)
    t0 = time.perf_counter()
    mined, _, stats = mining.mine(net, sampler, features, labels, semantics, lr=100.0, loops=args.loops,
                                  entropy_weight=20.0)
    sync(device)
    seconds = time.perf_counter() - t0
    peak = peak_bytes(device)

    net.train()
    sync(device)
    t0 = time.perf_counter()
    mining.train_relation_net(net, sampler, features, labels, semantics, args.relation_iters, 3e-4, 3e-6)
    sync(device)
    per_relation_iter = (time.perf_counter() - t0) / args.relation_iters

    # (after the mining, whose peak memory is measured) the bound of one SGD step:
    # its two big products, (B*C) x (D + d_a) x H, as plain torch.mm
    a = torch.rand(B * C, D + DA, device=device)
    w = torch.rand(D + DA, H, device=device)
    torch.mm(a, w)
    sync(device)
    t0 = time.perf_counter()
    for _ in range(2):
        torch.mm(a, w)
    sync(device)
    mm_seconds = (time.perf_counter() - t0) / 2
    del a, w

    per_step = seconds / (args.batches * args.loops)
    bound = B * C * (D + DA + H) * 4
    result = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "device": str(device), "cpu": cpu_model(), "torch": torch.__version__,
        "command": "python -m bench.bench_mining " + " ".join(argv),
        "commit": git_commit(),
        "shapes": {"N": N, "D": D, "classes": C, "d_a": DA, "batch": B, "hidden": H},
        "measured": {"batches": args.batches, "loops": args.loops, "mining_seconds": round(seconds, 2),
                     "seconds_per_sgd_step": round(per_step, 3), "two_mm_seconds": round(2 * mm_seconds, 3),
                     "gflops_per_s_of_mm": round(2 * B * C * (D + DA) * H / mm_seconds / 1e9, 1),
                     "relation_iters": args.relation_iters,
                     "seconds_per_relation_iter": round(per_relation_iter, 3),
                     "mining_peak_bytes_over_start": peak - base if device.type == "cpu" else peak,
                     "chunk_bound_W_bytes": bound},
        "projected_awa2": {"mining_pass_seconds": round(per_step * FULL_BATCHES * FULL_LOOPS, 1),
                           "relation_training_seconds": round(per_relation_iter * FULL_RELATION_ITERS, 1)},
    }
    m = result["measured"]
    print(f"{device} ({result['cpu'] if device.type == 'cpu' else torch.cuda.get_device_name(device)}), "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"mining: {args.batches} batches x {args.loops} steps in {seconds:.1f}s = {per_step:.3f}s per SGD step "
          f"(B={B}, C={C}: {B * C} pairs of {D + DA})")
    print(f"  bound: its two (B*C) x (D+d_a) x H products as torch.mm: {2 * mm_seconds:.3f}s "
          f"({m['gflops_per_s_of_mm']:.0f} GFLOP/s); step / bound = {per_step / (2 * mm_seconds):.2f}")
    print(f"relation training: {per_relation_iter:.3f}s per iteration (bound: its forward and weight-gradient "
          f"products, {2 * mm_seconds:.3f}s; ratio {per_relation_iter / (2 * mm_seconds):.2f})")
    print(f"peak memory of mining: {m['mining_peak_bytes_over_start'] / 2**20:.0f} MiB "
          f"{'over the resident set before it' if device.type == 'cpu' else 'allocated (features included)'}; "
          f"chunk bound W = {bound / 2**20:.0f} MiB")
    p = result["projected_awa2"]
    print(f"projected AWA2 (authors' settings): mining pass {FULL_BATCHES} x {FULL_LOOPS} steps ~ "
          f"{p['mining_pass_seconds']:.0f}s; relation training {FULL_RELATION_ITERS} iterations ~ "
          f"{p['relation_training_seconds']:.0f}s")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
