"""The GSMFlow protocol shared by every train_<DATASET>.py: train the flow, evaluate, report.

    python train_AWA2.py [--key=value ...]      # see config.py for the keys
"""
from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

import util
from config import RUN_CONTROL, Config, ConfigError, parse_args, parse_overrides, validate
from models import ConditionalFlow, RelativePositioning

PAPER_RULE = ("paper protocol: best over classifier epochs and over evaluations, "
              "selected on the TEST set as the authors do")
LAST_RULE = "last: final evaluation, last classifier epoch"


def build_models(cfg: Config, data: util.GZSLData, device: torch.device):
    """Flow first, then relative positioning: the reference's order of RNG draws."""
    anchor_pool = data.seen_semantics if cfg.anchors == "seen" else data.all_semantics
    anchors = torch.from_numpy(anchor_pool[util.relative_positioning_anchors(anchor_pool)])
    flow = ConditionalFlow(data.feature_dim, cfg.input_dim, cfg.num_coupling_layers, cfg.hidden_dim)
    rp = RelativePositioning(anchors, cfg.input_dim)
    return flow.to(device), rp.to(device)


def progress_bar(iterable, cfg: Config, **kw):
    """tqdm on stderr, off with --quiet or when stderr is not a terminal."""
    from tqdm import tqdm
    return tqdm(iterable, disable=cfg.quiet or not sys.stderr.isatty(), dynamic_ncols=True, **kw)


class Evaluator:
    """Synthesises unseen features and trains the GZSL and ZSL softmax classifiers."""

    def __init__(self, cfg: Config, data: util.GZSLData, device: torch.device):
        self.cfg, self.data = cfg, data
        as_tensor = lambda a: torch.from_numpy(a).to(device)
        n_train, n_syn = len(data.train_label), data.n_unseen * cfg.nSample
        # One buffer holds [real seen | synthetic unseen]: the rows the GZSL classifier sees,
        # in the reference's order; the ZSL classifier uses the synthetic part as a view.
        self.features = torch.empty(n_train + n_syn, data.feature_dim, device=device)
        self.features[:n_train] = as_tensor(data.train_feature)
        syn_labels = torch.arange(data.n_unseen).repeat_interleave(cfg.nSample)
        self.labels = torch.cat([torch.from_numpy(data.train_label), syn_labels + data.n_seen]).to(device)
        self.n_train = n_train
        self.unseen_semantics = as_tensor(data.unseen_semantics)
        self.test_seen = (as_tensor(data.test_seen_feature), as_tensor(data.test_seen_label))
        self.test_unseen = as_tensor(data.test_unseen_feature), as_tensor(data.test_unseen_label)

    def __call__(self, flow, rp) -> dict:
        cfg, data = self.cfg, self.data
        flow.eval(), rp.eval()
        bar = progress_bar(None, cfg, desc="evaluation", unit="epoch", leave=False,
                           total=cfg.classifier_epochs * (2 if cfg.eval_zsl else 1))
        synthetic = self.features[self.n_train:]
        util.release_free_memory()  # the training step's freed blocks: room for the synthetic rows
        t0 = time.perf_counter()
        util.synthesize_unseen(flow, rp, self.unseen_semantics, cfg.nSample, synthetic,
                               cfg.synth_chunk, cfg.bf16, cfg.device_noise)
        self.timing = {"synthesis": time.perf_counter() - t0}
        x_u, y_u = self.test_unseen
        gzsl = util.train_softmax(self.features, self.labels, data.n_seen + data.n_unseen,
                                  {"seen": self.test_seen, "unseen": (x_u, y_u + data.n_seen)},
                                  cfg.classifier_lr, cfg.classifier_epochs, cfg.classifier_batch,
                                  bf16=cfg.bf16, on_epoch=bar.update)
        self.timing["gzsl_epochs"] = [h["seconds"] for h in gzsl]
        best = util.best_gzsl_epoch(gzsl)
        last = gzsl[-1]
        row = {"U": best["U"], "S": best["S"], "H": best["H"],
               "U_last": last["unseen"], "S_last": last["seen"],
               "H_last": util.harmonic_mean(last["unseen"], last["seen"]),
               "gzsl_epochs": [[h["unseen"], h["seen"]] for h in gzsl]}
        if cfg.eval_zsl:
            # The reference runs no ZSL classifier here: fork the RNG so the GZSL numbers
            # and the rest of training draw exactly what they would without it.
            devices = [self.features.device] if self.features.device.type == "cuda" else []
            with torch.random.fork_rng(devices=devices):
                zsl = util.train_softmax(synthetic, self.labels[self.n_train:] - data.n_seen, data.n_unseen,
                                         {"unseen": self.test_unseen},
                                         cfg.classifier_lr, cfg.classifier_epochs, cfg.classifier_batch,
                                         bf16=cfg.bf16, on_epoch=bar.update)
            self.timing["zsl_epochs"] = [h["seconds"] for h in zsl]
            row["T1"] = max([0.0] + [h["unseen"] for h in zsl])
            row["T1_last"] = zsl[-1]["unseen"]
            row["zsl_epochs"] = [h["unseen"] for h in zsl]
        bar.close()
        flow.train(), rp.train()
        return percent(row)

    @property
    def synthetic(self) -> torch.Tensor:
        """The last evaluation's synthetic unseen features (class-major rows)."""
        return self.features[self.n_train:]


def percent(value):
    """Fractions -> percentages, through lists (per-epoch histories)."""
    return {k: percent(v) for k, v in value.items()} if isinstance(value, dict) else \
        [percent(v) for v in value] if isinstance(value, list) else 100 * value


def fmt_eval(m: dict) -> str:
    zsl = f"ZSL T1 {m['T1']:.2f}% | " if "T1" in m else ""
    return (f"{zsl}GZSL U {m['U']:.2f}% S {m['S']:.2f}% H {m['H']:.2f}% "
            f"(last epoch: U {m['U_last']:.2f}% S {m['S_last']:.2f}% H {m['H_last']:.2f}%)")


def summarize(rows: list[dict]) -> dict:
    """Paper-protocol and last-evaluation numbers from the per-evaluation rows."""
    if not rows:
        return {}
    best_h = rows[0]
    for r in rows[1:]:
        if r["H"] > best_h["H"]:  # strict: the first evaluation with the best H, as the reference
            best_h = r
    out = {"paper": {"iteration": best_h["iteration"], "U": best_h["U"], "S": best_h["S"], "H": best_h["H"]},
           "last": {"iteration": rows[-1]["iteration"], "U": rows[-1]["U_last"], "S": rows[-1]["S_last"],
                    "H": rows[-1]["H_last"]}}
    if "T1" in rows[0]:
        best_t = max(rows, key=lambda r: r["T1"])
        out["paper"].update(T1=best_t["T1"], T1_iteration=best_t["iteration"])
        out["last"]["T1"] = rows[-1]["T1_last"]
    return out


def prepare_data(cfg: Config) -> util.GZSLData:
    """The benchmark under dataroot, or with --synthetic a generated stand-in under out_dir."""
    split = dict(validation=cfg.validation, val_seen_share=cfg.val_seen_share, seed=cfg.manualSeed)
    if cfg.synthetic:
        import synthetic
        root = Path(cfg.out_dir) / "synthetic_data"
        synthetic.ensure_benchmark(root, cfg.dataset)
        data = util.load_dataset(str(root), cfg.dataset, "xlsa17", "res101", cfg.class_embedding, **split)
        data.source += " (SYNTHETIC stand-in generated by synthetic.py: not benchmark numbers)"
        return data
    return util.load_dataset(cfg.dataroot, cfg.dataset, cfg.layout, cfg.image_embedding, cfg.class_embedding,
                             **split)


class Trainer:
    """Flow-training state: models, optimizer, scheduler, batch sampler and the iteration.

    `state_dict()` holds everything needed to continue a run bit for bit (RNG states
    included); `step(it)` is one training iteration of the reference.
    """

    def __init__(self, cfg: Config, data: util.GZSLData, device: torch.device):
        self.cfg, self.device = cfg, device
        n_train = len(data.train_label)
        # Reference order of random draws: the batch permutation (numpy), then model init (torch).
        self.sampler = util.EpochPermutationSampler(n_train, cfg.batchsize)
        self.flow, self.rp = build_models(cfg, data, device)
        self.params = list(self.flow.parameters()) + list(self.rp.parameters())
        self.optimizer = util.flow_optimizer(self.params, cfg.lr, cfg.weight_decay, device, cfg.fused_adam)
        self.scheduler = torch.optim.lr_scheduler.StepLR(self.optimizer, step_size=cfg.lr_step, gamma=cfg.lr_gamma)
        self.train_x = torch.from_numpy(data.train_feature).to(device)
        self.train_y = torch.from_numpy(data.train_label).to(device)
        self.seen_sem = torch.from_numpy(data.seen_semantics).to(device)
        self.centroids = torch.from_numpy(
            util.class_centroids(data.train_feature, data.train_label, data.n_seen)).to(device)
        self.proto_z = torch.zeros(data.n_seen, data.feature_dim, device=device)
        self.total = (n_train // cfg.batchsize) * cfg.gen_nepoch
        self.iters_per_epoch = math.ceil(n_train / cfg.batchsize)  # what StepLR counts (not the sampler's epochs)
        self.next_iteration = 0

    def step(self, it: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One iteration: NLL + prototype loss, one Adam step; returns both losses (tensors)."""
        cfg, flow, dim = self.cfg, self.flow, self.train_x.shape[1]
        autocast = util.autocast(self.device, cfg.bf16)
        idx = torch.from_numpy(self.sampler.next()).to(self.device)  # batches are index gathers on the device
        with autocast:
            x, cond = self.train_x.index_select(0, idx), self.rp(self.seen_sem[self.train_y[idx]])
            # Visual perturbation: N(0, pi^2) noise under one mask shared by the whole batch.
            noise = cfg.pi * (torch.randn(cfg.batchsize, dim, device=self.device) if cfg.device_noise
                              else torch.randn(cfg.batchsize, dim).to(self.device))  # the reference: CPU generator
            mask = torch.empty(dim, device=self.device).uniform_() > cfg.dropout
            z, log_det = flow(x + mask * noise, cond)
            nll = torch.mean(z ** 2) / 2 - torch.mean(log_det) / dim
        self.optimizer.zero_grad(set_to_none=True)
        nll.backward()
        proto = torch.zeros((), device=self.device)
        if cfg.prototype > 0:
            with torch.no_grad(), autocast:  # quirk: relative positioning gets no gradient from this term
                proto_cond = self.rp(self.seen_sem)
            with autocast:
                x_proto = flow.reverse(self.proto_z, proto_cond)
                proto = cfg.prototype * torch.nn.functional.mse_loss(x_proto, self.centroids)
            proto.backward()  # a second backward adds into .grad, in the reference's order
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)  # not needed until the next backward: free them for evaluations
        if it % self.iters_per_epoch == 0:
            self.scheduler.step()
        self.next_iteration = it + 1
        return nll.detach(), proto.detach()

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def state_dict(self) -> dict:
        return {"next_iteration": self.next_iteration, "flow": self.flow.state_dict(),
                "relative_positioning": self.rp.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "sampler": self.sampler.state_dict(),
                "rng": util.rng_state()}

    def load_state_dict(self, state: dict) -> None:
        self.flow.load_state_dict(state["flow"])
        self.rp.load_state_dict(state["relative_positioning"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.sampler.load_state_dict(state["sampler"])
        util.set_rng_state(state["rng"])
        self.next_iteration = state["next_iteration"]


def apply_speed_options(cfg: Config) -> None:
    """Process-wide settings of the speed options (config.py): TF32 (CUDA only) and the allocator."""
    torch.backends.cuda.matmul.fp32_precision = "tf32" if cfg.tf32 else "ieee"
    if cfg.keep_freed_memory:
        util.keep_freed_memory()


def save_checkpoint(path: Path, cfg: Config, data: util.GZSLData, trainer: Trainer, rows: list[dict],
                    full: bool) -> None:
    """last.pt holds the whole training state; best.pt only the weights (for --eval_only)."""
    it = trainer.next_iteration - 1
    if not util.all_finite(trainer.params):
        raise util.NonFiniteError(f"iteration {it}: parameters are not finite; not writing {path}")
    payload = {"format": util.CHECKPOINT_FORMAT, "iteration": it, "config": dataclasses.asdict(cfg),
               "data": data.signature(), "rows": rows}
    if full:
        payload["trainer"] = trainer.state_dict()
    else:
        payload.update(flow=trainer.flow.state_dict(), relative_positioning=trainer.rp.state_dict())
    util.atomic_save(payload, path)


def run(cfg: Config, resume_dir: Path | None = None, on_evaluation=None) -> dict:
    """Train and evaluate once (or continue `resume_dir`); returns the summary (also in summary.json).

    `on_evaluation(row, run_dir)`, if given, is called after each evaluation's row is logged and
    its checkpoints written (tune.py reports it to Optuna); an exception it raises ends the run.
    """
    device = util.resolve_device(cfg.device)
    data = prepare_data(cfg)  # bad input fails here, before a run directory exists
    if cfg.batchsize >= len(data.train_label):
        raise ConfigError(f"option --batchsize={cfg.batchsize}: must be smaller than the "
                          f"{len(data.train_label)} training images")
    if cfg.save_synthetic and Path(cfg.save_synthetic).exists():
        raise ConfigError(f"option --save_synthetic: {cfg.save_synthetic} exists; not overwriting it")
    state = util.load_checkpoint(resume_dir / "last.pt", data) if resume_dir else None
    apply_speed_options(cfg)
    if state is None:
        util.set_seeds(cfg.manualSeed)
        run_dir = util.make_run_dir(cfg.out_dir, cfg.dataset)
        (run_dir / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2) + "\n")
    else:
        run_dir = resume_dir
    log = util.RunLog(run_dir)
    log.print(f"run directory: {run_dir}")
    log.print(f"device: {device}; seed {cfg.manualSeed}")
    log.print(f"data: {data.source}")
    log.print(data.describe())

    trainer = Trainer(cfg, data, device)
    evaluate = Evaluator(cfg, data, device)
    rows: list[dict] = []
    if state is not None:
        trainer.load_state_dict(state["trainer"])
        rows = state["rows"]
        log.rewind(rows, state["iteration"])
        log.print(f"resumed from {run_dir / 'last.pt'}: continuing at iteration {trainer.next_iteration}")
    log.print(f"flow: {cfg.num_coupling_layers} GLOW coupling blocks, "
              f"{sum(p.numel() for p in trainer.params):,} parameters (flow + relative positioning)")
    total = trainer.total
    log.print(f"training: {total} iterations (+1, as the reference counts 0..{total}); evaluations at "
              f"multiples of {cfg.evl_interval} above {cfg.eval_start}; {cfg.nSample} samples per unseen class")
    best_h = max([r["H"] for r in rows], default=-1.0)
    last_saved, t0 = (state["iteration"] if state else -1), time.time()
    bar = progress_bar(range(trainer.next_iteration, total + 1), cfg, desc="flow", unit="it",
                       initial=trainer.next_iteration, total=total + 1)
    for it in bar:
        nll, proto = (v.item() for v in trainer.step(it))
        if not (math.isfinite(nll) and math.isfinite(proto)):
            where = f"{run_dir / 'last.pt'} (iteration {last_saved})" if last_saved >= 0 else "none written"
            raise util.NonFiniteError(f"iteration {it}: loss is not finite (nll {nll}, prototype {proto}); "
                                      f"stopped. Last good checkpoint: {where}")
        bar.set_postfix(nll=f"{nll:.3f}", proto=f"{proto:.4f}", refresh=False)
        if it and it % cfg.disp_interval == 0:
            log.losses({"iteration": it, "nll": nll, "prototype_loss": proto, "lr": trainer.lr})
            log.print(f"iter {it}/{total}  nll {nll:.3f}  prototype {proto:.4f}  lr {trainer.lr:.2e}  "
                      f"({time.time() - t0:.0f}s)", echo=bar.disable)
        if it % cfg.evl_interval == 0 and it > cfg.eval_start:
            t_eval = time.time()
            row = {"iteration": it, **evaluate(trainer.flow, trainer.rp), "nll": nll, "prototype_loss": proto}
            row["eval_seconds"] = round(time.time() - t_eval, 2)
            rows.append(row)
            log.metrics(row)
            log.print(f"eval @ {it}: {fmt_eval(row)}  [{row['eval_seconds']:.0f}s]")
            if row["H"] > best_h:
                best_h = row["H"]
                save_checkpoint(run_dir / "best.pt", cfg, data, trainer, rows, full=False)
            save_checkpoint(run_dir / "last.pt", cfg, data, trainer, rows, full=True)
            last_saved = it
            if on_evaluation is not None:
                on_evaluation(row, run_dir)
    bar.close()
    if last_saved != total:
        save_checkpoint(run_dir / "last.pt", cfg, data, trainer, rows, full=True)
    if cfg.save_synthetic and rows:
        util.save_synthetic(Path(cfg.save_synthetic), evaluate.synthetic, cfg.nSample, data)
        log.print(f"synthetic features of the evaluation at iteration {rows[-1]['iteration']}: {cfg.save_synthetic}")

    summary = summarize(rows)
    summary.update(wall_seconds=round(time.time() - t0, 1), total_iterations=total, run_dir=str(run_dir),
                   split=data.split)
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print_summary(log, summary, len(rows))
    return summary


def print_summary(log: util.RunLog, s: dict, n_evals: int) -> None:
    log.print("")
    if not s.get("paper"):
        log.print("no evaluation ran: no iteration is a multiple of evl_interval above eval_start")
        return
    where = "VALIDATION split (leak-free, from trainval)" if s.get("split") == "validation" else "test split"
    log.print(f"=== summary over {n_evals} evaluations on the {where}, {s['wall_seconds']:.0f}s ===")
    for rule, text in (("paper", PAPER_RULE), ("last", LAST_RULE)):
        log.print(f"[{text}]")
        log.print("  " + fmt_row(s[rule]))


def fmt_row(d: dict) -> str:
    t1 = f"ZSL T1 {d['T1']:6.2f}  " if "T1" in d else ""
    return f"{t1}GZSL U {d['U']:6.2f}  S {d['S']:6.2f}  H {d['H']:6.2f}   (iteration {d['iteration']})"


ARCHITECTURE = ("num_coupling_layers", "hidden_dim", "input_dim", "anchors", "class_embedding", "image_embedding")
VAL_RULE = ("val: training length and classifier epoch chosen on the leak-free validation split; "
            "numbers on the test split")


def resume(defaults: Config, argv: list[str]) -> dict:
    """Continue RUN_DIR with its own config.json; only run-control options may change."""
    updates = parse_args(argv)
    run_dir = Path(updates["resume"])
    config_path = run_dir / "config.json"
    if not config_path.is_file():
        raise util.DataError(f"{config_path}: not found (--resume takes a run directory)")
    saved = json.loads(config_path.read_text())
    if saved.get("dataset") != defaults.dataset:
        raise ConfigError(f"option --resume: {run_dir} is a {saved.get('dataset')} run; "
                          f"use train_{saved.get('dataset')}.py")
    changed = sorted(k for k, v in updates.items() if k not in RUN_CONTROL and saved.get(k) != v)
    if changed:
        raise ConfigError(f"option --{changed[0]} cannot change when resuming (only {', '.join(RUN_CONTROL)} can)")
    cfg = validate(Config(**{**saved, **{k: v for k, v in updates.items() if k != "resume"}}))
    if not (run_dir / "last.pt").is_file():
        raise util.DataError(f"{run_dir / 'last.pt'}: no checkpoint yet (the run stopped before its first "
                             f"evaluation's checkpoint was written); start the run again")
    for stale in run_dir.glob(".*.tmp*"):  # a checkpoint write the killed process never finished
        stale.unlink()
    return run(cfg, resume_dir=run_dir)


def eval_only(cfg: Config) -> dict:
    """Evaluate a saved flow (best.pt or last.pt) on this script's data; no training."""
    device = util.resolve_device(cfg.device)
    data = prepare_data(cfg)
    path = Path(cfg.eval_only)
    ckpt = util.load_checkpoint(path, data)
    if cfg.save_synthetic and Path(cfg.save_synthetic).exists():
        raise ConfigError(f"option --save_synthetic: {cfg.save_synthetic} exists; not overwriting it")
    cfg = dataclasses.replace(cfg, **{k: ckpt["config"][k] for k in ARCHITECTURE})  # build what was trained
    apply_speed_options(cfg)
    util.set_seeds(cfg.manualSeed)
    flow, rp = build_models(cfg, data, device)
    weights = ckpt.get("trainer", ckpt)
    flow.load_state_dict(weights["flow"])
    rp.load_state_dict(weights["relative_positioning"])
    run_dir = util.make_run_dir(cfg.out_dir, cfg.dataset)
    (run_dir / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2) + "\n")
    log = util.RunLog(run_dir)
    log.print(f"run directory: {run_dir} (evaluation only)")
    log.print(f"checkpoint: {path} (iteration {ckpt['iteration']}); data: {data.source}")
    evaluate = Evaluator(cfg, data, device)
    t0 = time.time()
    row = {"iteration": ckpt["iteration"], **evaluate(flow, rp)}
    row["eval_seconds"] = round(time.time() - t0, 2)
    log.metrics(row)
    log.print(f"eval: {fmt_eval(row)}")
    if cfg.save_synthetic:
        util.save_synthetic(Path(cfg.save_synthetic), evaluate.synthetic, cfg.nSample, data)
        log.print(f"synthetic features: {cfg.save_synthetic}")
    summary = summarize([row])
    summary.update(wall_seconds=row["eval_seconds"], run_dir=str(run_dir), split=data.split)
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print_summary(log, summary, 1)
    return summary


def choose_on_validation(val_rows: list[dict], val_total: int, test_rows: list[dict], test_total: int) -> dict:
    """The val rule: the (evaluation, classifier epoch) with the best validation H, carried to
    the test run at the same fraction of the training schedule; ZSL T1 likewise."""
    def best(rows, score):
        top = (-1.0, 0, 0)
        for i, r in enumerate(rows):
            for e, v in enumerate(score(r)):
                if v > top[0]:
                    top = (v, i, e)
        return top

    def at_same_fraction(i):
        frac = val_rows[i]["iteration"] / val_total
        return min(range(len(test_rows)), key=lambda j: abs(test_rows[j]["iteration"] / test_total - frac))

    _, i, e = best(val_rows, lambda r: [util.harmonic_mean(u, s) for u, s in r["gzsl_epochs"]])
    row = test_rows[at_same_fraction(i)]
    u, s_ = row["gzsl_epochs"][e]
    out = {"iteration": row["iteration"], "classifier_epoch": e + 1, "U": u, "S": s_, "H": util.harmonic_mean(u, s_),
           "val_iteration": val_rows[i]["iteration"]}
    if "zsl_epochs" in row:
        _, i, e = best(val_rows, lambda r: r["zsl_epochs"])
        out["T1"] = test_rows[at_same_fraction(i)]["zsl_epochs"][e]
    return out


def run_protocol(cfg: Config) -> dict:
    """One run, or with --select=val a validation run that chooses and a test run that reports."""
    if cfg.select != "val":
        return run(cfg)
    val = run(dataclasses.replace(cfg, validation=True, select="test", save_synthetic=""))
    test = run(dataclasses.replace(cfg, validation=False, select="test"))
    if "paper" not in val or "paper" not in test:
        return test
    rows = lambda s: util.read_jsonl(Path(s["run_dir"]) / "metrics.jsonl")
    test["val"] = choose_on_validation(rows(val), val["total_iterations"], rows(test), test["total_iterations"])
    test["validation_run_dir"] = val["run_dir"]
    log = util.RunLog(Path(test["run_dir"]))
    log.print(f"[{VAL_RULE}; validation run {val['run_dir']}]")
    log.print("  " + fmt_row(test["val"]) + f", classifier epoch {test['val']['classifier_epoch']}")
    (Path(test["run_dir"]) / "summary.json").write_text(json.dumps(test, indent=2) + "\n")
    return test


def run_seeds(cfg: Config) -> dict:
    """The protocol once per seed, then mean +- std (ddof=1) of T1, U, S, H under each rule."""
    seeds = [int(s) for s in cfg.seeds.split(",")]
    runs = [run_protocol(dataclasses.replace(cfg, manualSeed=s, seeds="")) for s in seeds]
    table = {}
    for rule in ("paper", "last", "val"):
        if all(rule in r for r in runs):
            table[rule] = {m: (float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else 0.0)
                           for m in ("T1", "U", "S", "H") if all(m in r[rule] for r in runs)
                           for v in [[r[rule][m] for r in runs]]}
    rules = {"paper": PAPER_RULE, "last": LAST_RULE, "val": VAL_RULE}
    print(f"\n=== {cfg.dataset}: mean +- std over seeds {', '.join(map(str, seeds))} ===")
    for rule, stats in table.items():
        print(f"[{rules[rule]}]")
        print("  " + "  ".join(f"{m} {mean:6.2f} +- {std:5.2f}" for m, (mean, std) in stats.items()))
    result = {"seeds": seeds, "table": table, "run_dirs": [r["run_dir"] for r in runs]}
    out = Path(cfg.out_dir) / cfg.dataset / f"seeds-{Path(runs[0]['run_dir']).name}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written: {out}")
    return result


def main(defaults: Config, argv: list[str] | None = None) -> dict:
    """Entry point of the train_<DATASET>.py scripts: overrides, then run, with one-line errors."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        cfg = parse_overrides(defaults, argv)
        if cfg.resume:
            return resume(defaults, argv)
        if cfg.eval_only:
            return eval_only(cfg)
        if cfg.seeds:
            return run_seeds(cfg)
        return run_protocol(cfg)
    except (ConfigError, util.DataError) as exc:
        util.fail(str(exc))
    except util.NonFiniteError as exc:
        util.fail(str(exc), code=3)
