"""How hard a stand-in is, measured with a cheap proxy of a generative GZSL method.

    python -m bench.standin_hardness AWA2 APY CUB FLO          # the full-size stand-ins (--synthetic=full)
    python -m bench.standin_hardness CUB --kind=quick          # the small demo stand-in
    python -m bench.standin_hardness AWA2 --dataroot=data      # the real benchmark files, for comparison

The proxy replaces the flow by the simplest generator that uses the same information: a ridge
regression from a class's semantic vector to its mean feature, fitted on the seen classes, and
Gaussian features around each unseen class's predicted mean with the seen classes' pooled
per-dimension spread. The script's own softmax classifier (settings of train_<DATASET>.py, at most
`--n_sample` features per unseen class) is then trained and scored as an evaluation does, and the
paper rule (best H over classifier epochs) is printed. A stand-in is about as hard as its benchmark
when this proxy scores on it about what it scores on the real files (bench/README.md).
"""
from __future__ import annotations

import sys

if __name__ == "__main__" and not __package__:  # run by path: the project's imports below need `python -m`
    print("error: run it from the repository root as: python -m bench.standin_hardness", file=sys.stderr)
    raise SystemExit(2)

import importlib
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

import cli
import config
import evaluate
import synthetic
import util
from benchmarks import NAMES
from cli import opt


@dataclass
class HardnessOptions:
    datasets: list[str] = opt([], f"benchmarks ({' '.join(NAMES)})", positional=True, dataset=True)
    kind: str = opt("full", "stand-in: full | quick; ignored with --dataroot", choices=("full", "quick"))
    dataroot: str = opt("", "score the files under DATAROOT/<DATASET> instead of a stand-in", path=True)
    out_dir: str = opt("out", "where stand-ins are generated (as runs do: <out_dir>/synthetic_full)", path=True)
    n_sample: int = opt(2000, "generated features per unseen class (the scripts' nSample, at most this)", low=1)
    ridge: float = opt(1.0, "ridge penalty of the semantic -> mean-feature regression", low=0, low_open=True)
    seed: int = opt(0, "seed of the proxy's draws", low=0)


def proxy_generator(data: util.GZSLData, ridge: float) -> tuple[np.ndarray, np.ndarray]:
    """Predicted unseen class means (U, D) and the pooled within-class std of the seen classes (D,)."""
    means = util.class_centroids(data.train_feature, data.train_label, data.n_seen).astype(np.float64)
    a = data.seen_semantics.astype(np.float64)
    w = np.linalg.solve(a.T @ a + ridge * np.eye(a.shape[1]), a.T @ means)
    spread = (data.train_feature - means[data.train_label]).std(axis=0)
    return data.unseen_semantics @ w, spread


def score(data: util.GZSLData, cfg, n_sample: int, ridge: float, seed: int) -> dict:
    """The proxy's paper-rule GZSL U, S, H (percent) with the script's classifier settings."""
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    mean_u, spread = proxy_generator(data, ridge)
    n = min(cfg.nSample, n_sample)
    fake = np.concatenate([np.maximum(m + spread * rng.standard_normal((n, spread.size)), 0) for m in mean_u])
    x = torch.from_numpy(np.concatenate([data.train_feature, fake]).astype(np.float32))
    y = torch.from_numpy(np.concatenate([data.train_label, np.repeat(np.arange(data.n_unseen), n) + data.n_seen]))
    tests = {"seen": (torch.from_numpy(data.test_seen_feature), torch.from_numpy(data.test_seen_label)),
             "unseen": (torch.from_numpy(data.test_unseen_feature),
                        torch.from_numpy(data.test_unseen_label + data.n_seen))}
    history = evaluate.train_softmax(x, y, data.n_seen + data.n_unseen, tests, cfg.classifier_lr,
                                     cfg.classifier_epochs, cfg.classifier_batch)
    best = evaluate.best_gzsl_epoch(history)
    return {"U": 100 * best["U"], "S": 100 * best["S"], "H": 100 * best["H"], "n_sample": n}


def main(argv: list[str]) -> list[dict]:
    opts = HardnessOptions(**cli.parse(cli.parser_for("python -m bench.standin_hardness", __doc__,
                                                      (HardnessOptions, None)), argv))
    results = []
    for name in opts.datasets or NAMES:
        cfg = importlib.import_module(f"train_{name}").config
        t0 = time.time()
        if opts.dataroot:
            root, what = Path(opts.dataroot), f"files under {opts.dataroot}"
        else:  # the settings a --synthetic=KIND run uses (quick: the demo's nSample and classifier batch)
            root, what = synthetic.ensure_standin(Path(opts.out_dir), name, opts.kind), f"{opts.kind} stand-in"
            cfg = config.apply(cfg, {"synthetic": opts.kind})
        data = util.load_dataset(str(root), name, "auto", "res101", cfg.class_embedding)
        r = {"dataset": name, "data": what, **score(data, cfg, opts.n_sample, opts.ridge, opts.seed)}
        print(f"{name:5s} {what}: proxy GZSL U {r['U']:5.1f}  S {r['S']:5.1f}  H {r['H']:5.1f}  "
              f"({r['n_sample']} per unseen class, {time.time() - t0:.0f}s)", flush=True)
        results.append(r)
    return results


if __name__ == "__main__":
    cli.main_guard(main, sys.argv[1:])
