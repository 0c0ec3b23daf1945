"""Speed and memory of the GSMFlow protocol at AWA2 shapes, each against a bound measured in the same process.

    python -m bench.bench                 # AWA2 sizes (bench/README.md gives measured wall times)
    python -m bench.bench --quick         # smaller synthesis/classifier sizes
    python -m bench.bench --device=cuda   # default: cuda when available, else cpu
    python -m bench.bench --out=FILE.json # default: bench/results-<device>[-quick].json

Each stage runs in a fresh child process, so its peak RSS is its own, and measures its
bound there: the stage's matrix products (recorded from the real calls: shapes, strides,
dtypes) replayed as plain `torch.mm`, plus the bytes it must move at the bandwidth of a
large tensor copy. Each round times the stage and, right after, its bound; the table shows the
medians over rounds and the median of the per-round ratios; the JSON keeps every sample.
See bench/README.md.
"""
from __future__ import annotations

import sys

if __name__ == "__main__" and not __package__:  # run by path: the project's imports below need `python -m`
    print("error: run it from the repository root as: python -m bench.bench", file=sys.stderr)
    raise SystemExit(2)

import json
import math
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]

import cli  # noqa: E402
import evaluate  # noqa: E402
import fast  # noqa: E402
import mt19937  # noqa: E402
import runs  # noqa: E402
import train  # noqa: E402
import train_AWA2  # noqa: E402
import util  # noqa: E402
from bench.environment import describe, environment as environment_record  # noqa: E402
from bench.measure import (Replay, copy_bandwidth, peak_device_bytes, peak_rss_bytes, record, summarize,  # noqa: E402
                           sync, timed)
from benchmarks import BENCHMARKS  # noqa: E402
from cli import opt  # noqa: E402
from config import Config  # noqa: E402
from models import ConditionalFlow, RelativePositioning  # noqa: E402

# AWA2's shapes (benchmarks.py): trainval / test-seen / test-unseen rows, classes, attribute and feature dims.
_B = BENCHMARKS["AWA2"]
AWA2 = dict(n_train=_B.trainval, n_test_seen=_B.test_seen, n_test_unseen=_B.test_unseen, seen=_B.seen,
            unseen=_B.unseen, att_dim=_B.semantic_dims["att"], dim=_B.feature_dim)
# The faithful AWA2 protocol (train_AWA2.py): iterations, evaluations, synthetic rows, classifier epochs.
_C = train_AWA2.config
PROTOCOL = dict(iterations=_C.total_iterations(_B.trainval), evaluations=len(_C.evaluations(_B.trainval)),
                n_sample=_C.nSample, classifier_epochs=_C.classifier_epochs)
# H200 figures for the projection (given in the issue; not measured here).
H200 = dict(fp32=67e12, tf32=495e12, bf16=790e12, copy_bytes_per_s=4.3e12)
EAGER_OP_SECONDS = 5e-6  # assumed host cost of one eager PyTorch op on a GPU (dispatch + launch)
CUDA_ADAM_OPS = 12       # torch.optim.Adam(foreach=True) on CUDA: about a dozen _foreach_ ops per step
RESULT_TAG = "BENCH_RESULT "


# ----------------------------------------------------------------------------- inputs

def fake_awa2(n_train=AWA2["n_train"], seed=0) -> util.GZSLData:
    """Random data with AWA2's shapes (values are irrelevant to speed)."""
    r = np.random.default_rng(seed)
    S, U, D = AWA2["seen"], AWA2["unseen"], AWA2["dim"]
    sem = np.abs(r.standard_normal((S + U, AWA2["att_dim"]))).astype(np.float32)
    sem /= np.linalg.norm(sem, axis=1, keepdims=True)
    feats = lambda n: np.abs(r.standard_normal((n, D), dtype=np.float32))
    return util.GZSLData("AWA2", "xlsa17", feats(n_train), np.arange(n_train) % S,
                         feats(AWA2["n_test_seen"]), np.arange(AWA2["n_test_seen"]) % S,
                         feats(AWA2["n_test_unseen"]), np.arange(AWA2["n_test_unseen"]) % U,
                         sem[:S], sem[S:], source="random AWA2-shaped arrays")


def variants(device, names):
    """Config overrides of each precision variant that applies on `device` (see skipped_variants)."""
    table = {"fp32": {}, "fused_adam": {"fused_adam": True}, "bf16": {"bf16": True}, "tf32": {"tf32": True}}
    return {n: table[n] for n in names if n not in skipped_variants(device)}


def skipped_variants(device) -> dict:
    """Variants that do not apply on `device`, with the reason printed in the table."""
    skipped = {}
    if device.type != "cuda":
        skipped["tf32"] = "TF32 is CUDA only"
        if fast.slow_bf16_matmul(device):
            skipped["bf16"] = ("this CPU has no native bf16 matrix products (oneDNN bf16 unsupported): "
                               "they would run a reference loop, hundreds of times slower than fp32")
    return skipped


def awa2_config(device, **kw) -> Config:
    return Config(dataset="AWA2", device=str(device), **kw)  # the AWA2 reference settings are the defaults


# ----------------------------------------------------------------------------- stages (children)

def lone_adam_step(trainer, measure):
    """measure(optimizer.step) for one step alone (Trainer.step frees the gradients after
    its step: give it some, and free them again)."""
    for p in trainer.params:
        p.grad = torch.full_like(p, 1e-3)
    result = measure(trainer.optimizer.step)
    trainer.optimizer.zero_grad(set_to_none=True)
    return result


def stage_train(args, device) -> dict:
    """One flow-training iteration (Trainer.step) per precision variant, and the Adam step alone."""
    data = fake_awa2()
    out = {}
    trainers = {}
    for name, opts in variants(device, args.variants).items():
        cfg = awa2_config(device, **opts)
        fast.apply_speed_options(cfg)
        runs.set_seeds(cfg.manualSeed)
        tr = train.Trainer(cfg, data, device)
        tr.step(1)  # warm-up (allocations, first touch)
        rec = record(lambda: tr.step(2))  # on CUDA an eager call still (fast.CUDAGraphed.WARMUP): all ops seen
        t_randn = min(timed(lambda: torch.randn(cfg.batchsize, AWA2["dim"]), torch.device("cpu")) for _ in range(5))
        n_params = sum(p.numel() for p in tr.params)
        adam_ops = lone_adam_step(tr, lambda step: record(step).ops)
        tr.step(3)  # on CUDA the graph's capture, outside the timings
        trainers[name] = (cfg, tr, rec, Replay(rec.matmuls, device))
        out[name] = dict(flops=rec.flops(), ops=rec.ops, adam_ops=adam_ops, matmuls=len(rec.matmuls), params=n_params,
                         optimizer_bytes=7 * 4 * n_params,  # read param, grad, m, v; write param, m, v (fp32)
                         host_randn_seconds=t_randn, step=[], mm=[], adam=[])
    steps = 1 if args.quick else 3
    for _ in range(args.rounds):
        for name, (cfg, tr, rec, replay) in trainers.items():
            r = out[name]
            fast.apply_speed_options(cfg)
            # each step right next to its replayed products: the pair sees the same machine
            pairs = [(timed(lambda: tr.step(4), device), timed(replay, device)) for _ in range(steps)]
            r["step"].append(sum(t for t, _ in pairs) / steps)
            r["mm"].append(sum(m for _, m in pairs) / steps)
            r.setdefault("copy_bytes_per_s", []).append(copy_bandwidth(device))
            r["adam"].append(lone_adam_step(tr, lambda step: timed(step, device)))
    for r in out.values():
        adam_bounds = [r["optimizer_bytes"] / bw for bw in r["copy_bytes_per_s"]]
        r.update(summarize(r["step"], [mm + a for mm, a in zip(r["mm"], adam_bounds)]))
        r["adam_summary"] = summarize(r["adam"], adam_bounds)
    return out


def stage_synth(args, device) -> dict:
    """evaluate.synthesize_unseen over all unseen classes, per precision variant."""
    torch.manual_seed(0)
    data = fake_awa2(n_train=1000)
    anchors = torch.from_numpy(data.seen_semantics[util.relative_positioning_anchors(data.seen_semantics)])
    flow = ConditionalFlow(AWA2["dim"], 1024, 3, 2048).to(device).eval()
    rp = RelativePositioning(anchors, 1024).to(device).eval()
    sem = torch.from_numpy(data.unseen_semantics).to(device)
    n = args.synth_rows_per_class
    buf = torch.empty(AWA2["unseen"] * n, AWA2["dim"], device=device)
    out, runs = {}, {}
    for name, opts in variants(device, [v for v in args.variants if v != "fused_adam"]).items():
        cfg = awa2_config(device, **opts)
        fast.apply_speed_options(cfg)
        chunk = evaluate.synthesis_chunk(device, cfg.synth_chunk, AWA2["dim"], cfg.input_dim, cfg.hidden_dim)
        threads = fast.host_draw_threads(cfg.host_rng_threads)
        synth = lambda cfg=cfg, chunk=chunk, threads=threads: evaluate.synthesize_unseen(
            flow, rp, sem, n, buf, chunk, cfg.bf16, cfg.device_noise, threads)
        rec = record(synth)  # also the warm-up
        runs[name] = (cfg, synth, Replay(rec.matmuls, device))
        out[name] = dict(rows=buf.shape[0], chunk=chunk, flops=rec.flops(), ops=rec.ops, time_s=[], mm=[])
    # the CPU generator's rate for one class's z: on one thread, and on CUDA's default host threads
    cpu_z, threads = torch.empty(AWA2["dim"] * 50000), fast.host_draw_threads(0)
    randn_rate = cpu_z.numel() / min(timed(cpu_z.normal_, torch.device("cpu")) for _ in range(2))
    threaded_rate = randn_rate if threads == 1 else cpu_z.numel() / min(
        timed(lambda: mt19937.parallel_normal_(cpu_z, threads), torch.device("cpu")) for _ in range(3))
    for _ in range(args.rounds):
        for name, (cfg, synth, replay) in runs.items():
            fast.apply_speed_options(cfg)
            out[name]["time_s"].append(timed(synth, device))
            out[name]["mm"].append(timed(replay, device))
    for r in out.values():
        r.update(summarize(r["time_s"], r["mm"]))
        r["rows_per_s"] = r["rows"] / r["time"]
        r["host_randn_per_s"] = randn_rate
        r.update(host_threads=threads, host_randn_per_s_threaded=threaded_rate)
    return out


def stage_eval(args, device) -> dict:
    """One AWA2 evaluation as a run does it (Evaluator), next to a trained-state Trainer.

    The flow Trainer (weights, gradients, Adam moments) is alive as in a real run, so the
    peak RSS is that of a run at evaluation time. Classifier epochs: `--eval_epochs` of the
    protocol's 30, timed one by one.
    """
    data = fake_awa2()
    cfg = awa2_config(device, nSample=args.n_sample, classifier_epochs=args.eval_epochs)
    fast.apply_speed_options(cfg)
    runs.set_seeds(cfg.manualSeed)
    trainer = train.Trainer(cfg, data, device)
    trainer.step(1)
    evaluator = evaluate.Evaluator(cfg, data, device)
    rss_before = peak_rss_bytes()
    t0 = time.perf_counter()
    evaluator(trainer.flow, trainer.rp)
    sync(device)
    wall = time.perf_counter() - t0
    rss = peak_rss_bytes()
    dev_peak = peak_device_bytes(device)
    timing = evaluator.timing
    # Bound of one classifier epoch: its recorded products, plus the gathered batches
    # (read + write of every batch's rows) at copy bandwidth.
    n_syn = data.n_unseen * cfg.nSample
    feats, labels = evaluator.features, evaluator.labels
    test = {"seen": evaluator.test_seen, "unseen": (evaluator.test_unseen[0], evaluator.test_unseen[1] + data.n_seen)}
    # Recorded eagerly (a graph's replay dispatches no op to record); timed as a run trains them: with
    # CUDA graphs, over 2 epochs of which the second is timed (the first holds the capture, once per classifier).
    graphs = evaluator.cuda_graphs
    epochs = {
        "gzsl": lambda n=1, g=False: evaluate.train_softmax(feats, labels, data.n_seen + data.n_unseen, test,
                                                            cfg.classifier_lr, n, cfg.classifier_batch, cuda_graphs=g),
        "zsl": lambda n=1, g=False: evaluate.train_softmax(feats[-n_syn:], labels[-n_syn:] - data.n_seen, data.n_unseen,
                                                           {"unseen": evaluator.test_unseen}, cfg.classifier_lr, n,
                                                           cfg.classifier_batch, cuda_graphs=g),
    }
    out = dict(n_rows=feats.shape[0], n_synthetic=n_syn, epochs_run=cfg.classifier_epochs, wall=wall,
               synthesis=timing["synthesis"], peak_rss=rss, peak_rss_before_eval=rss_before, peak_device=dev_peak)
    replays = {}
    for kind, fn in epochs.items():
        rec = record(fn)
        n_rows = feats.shape[0] if kind == "gzsl" else n_syn
        replays[kind] = Replay(rec.matmuls, device)
        out[kind] = dict(rows=n_rows, flops=rec.flops(), ops=rec.ops, epoch_times=list(timing[f"{kind}_epochs"]), mm=[],
                         gathered_bytes=2 * math.ceil(n_rows / cfg.classifier_batch) * cfg.classifier_batch * AWA2["dim"] * 4)
    for _ in range(args.rounds):  # single epochs, each next to its bound
        for kind, fn in epochs.items():
            r = out[kind]
            r.setdefault("timed_epochs", []).append(fn(2 if graphs else 1, graphs)[-1]["seconds"])
            r["mm"].append(timed(replays[kind], device))
            r.setdefault("copy_bytes_per_s", []).append(copy_bandwidth(device))
    for r in (out[kind] for kind in epochs):
        r.update(summarize(r["timed_epochs"], [mm + r["gathered_bytes"] / bw for mm, bw in zip(r["mm"], r["copy_bytes_per_s"])]))
    return out


STAGES = {"train": stage_train, "synth": stage_synth, "eval": stage_eval}


# ----------------------------------------------------------------------------- parent: table, projection

def gib(b):
    return f"{b / 2 ** 30:.2f} GiB" if b else "-"


def rows_of(res: dict) -> list[dict]:
    """The table: one row per figure."""
    rows = []
    tr, sy, ev = res.get("train", {}), res.get("synth", {}), res.get("eval", {})
    for name, r in tr.items():
        rows.append(dict(figure=f"flow training iteration ({name})", time=r["time"], bound=r["bound"], ratio=r["ratio"],
                         rss=r["peak_rss"], note=f"{r['flops'] / 1e9:.1f} GFLOP + Adam {r['optimizer_bytes'] / 1e9:.2f} GB"))
    for name, r in tr.items():
        if name in ("fp32", "fused_adam"):
            a = r["adam_summary"]
            rows.append(dict(figure=f"  of which Adam step ({name})", time=a["time"], bound=a["bound"], ratio=a["ratio"],
                             rss=None, note=f"{r['params'] / 1e6:.1f} M params at copy bandwidth"))
    for name, r in sy.items():
        rows.append(dict(figure=f"synthesis, {r['rows']:,} rows ({name})", time=r["time"], bound=r["bound"],
                         ratio=r["ratio"], rss=r["peak_rss"], note=f"{r['rows_per_s']:,.0f} rows/s, chunk {r['chunk']}"))
    if ev:
        for kind in ("gzsl", "zsl"):
            e = ev[kind]
            rows.append(dict(figure=f"classifier epoch, {kind.upper()} ({e['rows']:,} rows)", time=e["time"],
                             bound=e["bound"], ratio=e["ratio"], rss=None,
                             note=f"{e['flops'] / 1e9:.0f} GFLOP + {e['gathered_bytes'] / 1e9:.1f} GB gathered"))
        per_eval = ev["synthesis"] + PROTOCOL["classifier_epochs"] * (ev["gzsl"]["time"] + ev["zsl"]["time"])
        rows.append(dict(figure=f"evaluation ({ev['n_synthetic']:,} synthetic + {ev['n_rows'] - ev['n_synthetic']:,} real rows)",
                         time=ev["wall"], bound=None, rss=ev["peak_rss"],
                         note=f"{ev['epochs_run']} epochs each; with 30: {per_eval:.0f} s"))
    return rows


def projection(res: dict) -> dict:
    """Full faithful AWA2 protocol: measured here (per-unit times x counts) and on an H200 (FLOPs / peak rates)."""
    tr, sy, ev = res["train"]["fp32"], res["synth"]["fp32"], res["eval"]
    P = PROTOCOL
    syn_rows = AWA2["unseen"] * P["n_sample"] * P["evaluations"]
    syn_flop_per_row = sy["flops"] / sy["rows"]
    scale_gzsl = (AWA2["n_train"] + AWA2["unseen"] * P["n_sample"]) / ev["gzsl"]["rows"]
    scale_zsl = AWA2["unseen"] * P["n_sample"] / ev["zsl"]["rows"]
    epochs = P["evaluations"] * P["classifier_epochs"]
    here = {"flow training": P["iterations"] * tr["time"],
            # the evaluation stage's synthesis (the real Evaluator call, next to a Trainer), so that the
            # projection's evaluations are exactly `evaluations` x the evaluation row's "with 30" figure
            "synthesis": syn_rows * ev["synthesis"] / ev["n_synthetic"],
            "classifier": epochs * (scale_gzsl * ev["gzsl"]["time"] + scale_zsl * ev["zsl"]["time"])}
    flops = {"flow training": P["iterations"] * tr["flops"],
             "synthesis": syn_rows * syn_flop_per_row,
             "classifier": epochs * (scale_gzsl * ev["gzsl"]["flops"] + scale_zsl * ev["zsl"]["flops"])}
    moved = {"flow training": P["iterations"] * tr["optimizer_bytes"], "synthesis": 0.0,
             "classifier": epochs * (scale_gzsl * ev["gzsl"]["gathered_bytes"] + scale_zsl * ev["zsl"]["gathered_bytes"])}
    # Host work that the faithful default does on the CPU even with a GPU: torch's CPU
    # generator draws the perturbation noise and the synthesis z; every op is launched eagerly.
    # The flow's op count is the CPU step's, with its cache-blocked Adam (one op per block)
    # replaced by CUDA's foreach Adam (CUDA_ADAM_OPS list ops).
    flow_ops = tr["ops"] - tr["adam_ops"] + CUDA_ADAM_OPS
    launches = {"flow training": P["iterations"] * flow_ops * EAGER_OP_SECONDS,
                "synthesis": P["evaluations"] * AWA2["unseen"] * math.ceil(P["n_sample"] / sy["chunk"])
                * sy["ops"] / (sy["rows"] / sy["chunk"]) * EAGER_OP_SECONDS,
                "classifier": epochs * (scale_gzsl * ev["gzsl"]["ops"] + scale_zsl * ev["zsl"]["ops"]) * EAGER_OP_SECONDS}
    # on CUDA both are drawn on fast.host_draw_threads(0) threads (mt19937.py); older records: one thread
    rate = sy.get("host_randn_per_s_threaded", sy["host_randn_per_s"])
    cpu_noise = {"flow training": P["iterations"] * tr["host_randn_seconds"] * sy["host_randn_per_s"] / rate,
                 "synthesis": syn_rows * AWA2["dim"] / rate, "classifier": 0.0}
    host = {k: launches[k] + cpu_noise[k] for k in launches}
    gpu = {}
    for prec, host_part in (("fp32", host), ("tf32", host), ("bf16", host), ("fp32 --device_noise", launches)):
        device = {k: flops[k] / H200[prec.split()[0]] + moved[k] / H200["copy_bytes_per_s"] for k in flops}
        gpu[prec] = {k: max(device[k], host_part[k]) for k in flops}
        gpu[prec]["device-only"] = sum(device.values())
    return dict(here_seconds=here, flops=flops, bytes=moved, host_seconds=host, launch_seconds=launches, h200_seconds=gpu,
                assumptions=dict(H200=H200, eager_op_seconds=EAGER_OP_SECONDS, cuda_adam_ops=CUDA_ADAM_OPS, **P))


def print_rows(rows: list[dict]) -> None:
    print(f"{'figure':58s} {'time':>10s} {'bound':>10s} {'ratio':>6s} {'peak RSS':>10s}  note")
    for r in rows:
        ratio = f"{r['ratio']:.2f}" if r.get("bound") else "-"
        bound = f"{r['bound']:.3f} s" if r.get("bound") else "-"
        print(f"{r['figure']:58s} {r['time']:8.3f} s {bound:>10s} {ratio:>6s} {gib(r['rss']):>10s}  {r['note']}", flush=True)


def print_report(res: dict, rows: list[dict], proj: dict | None, env: dict) -> None:
    print(f"\n{env['device_name']}; torch {env['torch']}, {env['threads']} threads; "
          f"{'quick' if env['quick'] else 'full'} sizes")
    print_rows(rows)
    print(describe(env))
    if "fp32" in res.get("train", {}):
        base = res["train"]["fp32"]["time"]
        ups = [f"{n} x{base / r['time']:.2f}" for n, r in res["train"].items() if n != "fp32"]
        if "synth" in res and "bf16" in res["synth"]:
            ups.append(f"synthesis bf16 x{res['synth']['fp32']['time'] / res['synth']['bf16']['time']:.2f}")
        if ups:
            print("speed-up over fp32: " + ", ".join(ups))
    if proj:
        h = proj["here_seconds"]
        print(f"\nfull faithful AWA2 protocol ({PROTOCOL['iterations']:,} iterations, {PROTOCOL['evaluations']} evaluations "
              f"of {AWA2['unseen'] * PROTOCOL['n_sample']:,} synthetic rows, 30+30 classifier epochs each)")
        print(f"  here, from the measured unit times: " + ", ".join(f"{k} {v / 3600:.1f} h" for k, v in h.items())
              + f"; total {sum(h.values()) / 3600:.1f} h")
        print(f"  PROJECTION for one H200 (FLOPs and bytes counted here / peak rates; each part at least its host "
              f"time: CPU-drawn noise (none with --device_noise) + {EAGER_OP_SECONDS * 1e6:.0f} us per eager op):")
        for prec, g in proj["h200_seconds"].items():
            parts = {k: v for k, v in g.items() if k != "device-only"}
            print(f"    {prec}: " + ", ".join(f"{k} {v / 60:.1f} min" for k, v in parts.items())
                  + f"; total {sum(parts.values()) / 60:.1f} min (device work alone {g['device-only'] / 60:.1f} min)")


def environment(device, quick, argv) -> dict:
    """bench/environment.py's record (command, date, commit, CPU model and flags, bf16 kernels, GPU),
    plus the fields this table prints."""
    env = environment_record(["python", "-m", "bench.bench", *argv], device)
    name = env["gpu"] + f" (host: {env['cpu_model']})" if device.type == "cuda" else f"{env['cpu_model']}, {os.cpu_count()} cores"
    return dict(env, device_name=name, quick=quick)


@dataclass
class BenchOptions:
    quick: bool = opt(False, "fp32 only, smaller sizes, fewer rounds (under 2 minutes)")
    device: str = opt("auto", "auto | cpu | cuda | cuda:N")
    out: str = opt("", "JSON output (default bench/results-<device>[-quick].json)", path=True)
    stages: str = opt("train,synth,eval", "the stages to measure, comma-separated")
    variants: str = opt("", "precision variants (default fp32,fused_adam,bf16,tf32; quick: fp32, and tf32,bf16 "
                            "on CUDA); tf32 is CUDA only")
    rounds: int = opt(0, "timing rounds (0: 5, quick 2)", low=0)
    n_sample: int = opt(0, "synthetic rows per unseen class in the evaluation (0: 50000, quick 500)", low=0)
    eval_epochs: int = opt(0, "classifier epochs run in the evaluation, of 30 (0: 3, quick 1)", low=0)
    synth_rows_per_class: int = opt(0, "rows per unseen class in the synthesis stage (0: 1500, quick 100)", low=0)
    child: str = opt("", "internal: run one stage in this process", choices=("", "train", "synth", "eval"))


def main(argv=None) -> dict:
    return cli.main_guard(bench, sys.argv[1:] if argv is None else argv)


def bench(argv: list[str]) -> dict:
    args = BenchOptions(**cli.parse(cli.parser_for("python -m bench.bench", __doc__, (BenchOptions, None)), argv))
    device = runs.resolve_device(args.device)
    if not args.variants:
        args.variants = ("fp32,tf32,bf16" if device.type == "cuda" else "fp32") if args.quick else "fp32,fused_adam,bf16,tf32"
    args.variants = args.variants.split(",")
    defaults = dict(rounds=(2, 5), n_sample=(500, 50000), eval_epochs=(1, 3), synth_rows_per_class=(100, 1500))
    for k, (quick, full) in defaults.items():
        if not getattr(args, k):
            setattr(args, k, quick if args.quick else full)

    if args.child:  # one stage in this fresh process
        result = STAGES[args.child](args, device)
        for r in ([result] if args.child == "eval" else result.values()):
            r.setdefault("peak_rss", peak_rss_bytes())
        print(RESULT_TAG + json.dumps(result), flush=True)
        return result

    env = environment(device, args.quick, argv)
    for name, why in skipped_variants(device).items():
        if name in args.variants:
            print(f"skipped variant {name}: {why}", flush=True)
    out = Path(args.out) if args.out else ROOT / "bench" / f"results-{device.type}{'-quick' if args.quick else ''}.json"
    res = {}
    passthrough = [a for a in argv if not a.startswith("--stages")]
    for stage in args.stages.split(","):
        t0 = time.time()
        print(f"[{stage}] running in a child process ...", flush=True)
        proc = subprocess.run([sys.executable, "-m", "bench.bench", f"--child={stage}", *passthrough],
                              capture_output=True, text=True, cwd=ROOT)
        lines = [l for l in proc.stdout.splitlines() if l.startswith(RESULT_TAG)]
        if proc.returncode or not lines:
            sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
            raise SystemExit(f"stage {stage} failed (exit {proc.returncode})")
        res[stage] = json.loads(lines[-1][len(RESULT_TAG):])
        print(f"[{stage}] done in {time.time() - t0:.0f} s", flush=True)
        print_rows(rows_of({stage: res[stage]}))  # each stage's lines as soon as they are measured
        out.write_text(json.dumps(dict(environment=env, args=vars(args), stages=res), indent=1) + "\n")  # so far
    rows = rows_of(res)
    proj = projection(res) if {"train", "synth", "eval"} <= set(res) and "fp32" in res["train"] else None
    print_report(res, rows, proj, env)
    out.write_text(json.dumps(dict(environment=env, args=vars(args), table=rows, projection=proj, stages=res), indent=1) + "\n")
    print(f"\nwritten: {out}")
    return res


if __name__ == "__main__":
    main()
