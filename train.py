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

import torch

import util
from config import Config, ConfigError, parse_overrides
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
        synthetic = self.features[self.n_train:]
        util.release_free_memory()  # the training step's freed blocks: room for the synthetic rows
        t0 = time.perf_counter()
        util.synthesize_unseen(flow, rp, self.unseen_semantics, cfg.nSample, synthetic,
                               cfg.synth_chunk, cfg.bf16, cfg.device_noise)
        self.timing = {"synthesis": time.perf_counter() - t0}
        x_u, y_u = self.test_unseen
        gzsl = util.train_softmax(self.features, self.labels, data.n_seen + data.n_unseen,
                                  {"seen": self.test_seen, "unseen": (x_u, y_u + data.n_seen)},
                                  cfg.classifier_lr, cfg.classifier_epochs, cfg.classifier_batch, cfg.bf16)
        self.timing["gzsl_epochs"] = [h["seconds"] for h in gzsl]
        best = util.best_gzsl_epoch(gzsl)
        last = gzsl[-1]
        row = {"U": best["U"], "S": best["S"], "H": best["H"],
               "U_last": last["unseen"], "S_last": last["seen"],
               "H_last": util.harmonic_mean(last["unseen"], last["seen"])}
        if cfg.eval_zsl:
            # The reference runs no ZSL classifier here: fork the RNG so the GZSL numbers
            # and the rest of training draw exactly what they would without it.
            devices = [self.features.device] if self.features.device.type == "cuda" else []
            with torch.random.fork_rng(devices=devices):
                zsl = util.train_softmax(synthetic, self.labels[self.n_train:] - data.n_seen, data.n_unseen,
                                         {"unseen": self.test_unseen},
                                         cfg.classifier_lr, cfg.classifier_epochs, cfg.classifier_batch, cfg.bf16)
            self.timing["zsl_epochs"] = [h["seconds"] for h in zsl]
            row["T1"] = max([0.0] + [h["unseen"] for h in zsl])
            row["T1_last"] = zsl[-1]["unseen"]
        flow.train(), rp.train()
        return {k: 100 * v for k, v in row.items()}


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
    if cfg.synthetic:
        import synthetic
        root = Path(cfg.out_dir) / "synthetic_data"
        synthetic.ensure_benchmark(root, cfg.dataset, seed=cfg.manualSeed)
        data = util.load_dataset(str(root), cfg.dataset, "xlsa17", "res101", cfg.class_embedding)
        data.source += " (SYNTHETIC stand-in generated by synthetic.py: not benchmark numbers)"
        return data
    return util.load_dataset(cfg.dataroot, cfg.dataset, cfg.layout, cfg.image_embedding, cfg.class_embedding)


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


def run(cfg: Config) -> dict:
    """Train and evaluate once; returns the summary (also written to run_dir/summary.json)."""
    device = util.resolve_device(cfg.device)
    data = prepare_data(cfg)  # bad input fails here, before a run directory exists
    if cfg.batchsize >= len(data.train_label):
        raise ConfigError(f"option --batchsize={cfg.batchsize}: must be smaller than the "
                          f"{len(data.train_label)} training images")
    apply_speed_options(cfg)
    util.set_seeds(cfg.manualSeed)
    run_dir = util.make_run_dir(cfg.out_dir, cfg.dataset)
    log = util.RunLog(run_dir)
    (run_dir / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2) + "\n")
    log.print(f"run directory: {run_dir}")
    log.print(f"device: {device}; seed {cfg.manualSeed}")
    log.print(f"data: {data.source}")
    log.print(data.describe())

    trainer = Trainer(cfg, data, device)
    log.print(f"flow: {cfg.num_coupling_layers} GLOW coupling blocks, "
              f"{sum(p.numel() for p in trainer.params):,} parameters (flow + relative positioning)")
    evaluate = Evaluator(cfg, data, device)
    total = trainer.total
    log.print(f"training: {total} iterations (+1, as the reference counts 0..{total}); evaluations at "
              f"multiples of {cfg.evl_interval} above {cfg.eval_start}; {cfg.nSample} samples per unseen class")
    rows, best_h, t0 = [], -1.0, time.time()
    flow, rp = trainer.flow, trainer.rp
    for it in range(total + 1):
        nll, proto = trainer.step(it)
        if it and it % cfg.disp_interval == 0:
            log.print(f"iter {it}/{total}  nll {nll.item():.3f}  prototype {proto.item():.4f}  "
                      f"lr {trainer.lr:.2e}  ({time.time() - t0:.0f}s)")
        if it % cfg.evl_interval == 0 and it > cfg.eval_start:
            t_eval = time.time()
            row = {"iteration": it, **evaluate(flow, rp), "nll": nll.item(), "prototype_loss": proto.item()}
            row["eval_seconds"] = round(time.time() - t_eval, 2)
            rows.append(row)
            log.metrics(row)
            log.print(f"eval @ {it}: {fmt_eval(row)}  [{row['eval_seconds']:.0f}s]")
            if row["H"] > best_h:
                best_h = row["H"]
                util.atomic_save({"iteration": it, "flow": flow.state_dict(), "relative_positioning": rp.state_dict(),
                                  "metrics": row, "config": dataclasses.asdict(cfg)}, run_dir / "best.pt")

    summary = summarize(rows)
    summary["wall_seconds"] = round(time.time() - t0, 1)
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print_summary(log, summary, len(rows))
    return summary


def print_summary(log: util.RunLog, s: dict, n_evals: int) -> None:
    log.print("")
    if not s.get("paper"):
        log.print(f"no evaluation ran: no iteration is a multiple of evl_interval above eval_start")
        return
    p, l = s["paper"], s["last"]
    t1 = lambda d: f"ZSL T1 {d['T1']:6.2f}  " if "T1" in d else ""
    log.print(f"=== summary over {n_evals} evaluations, {s['wall_seconds']:.0f}s ===")
    log.print(f"[{PAPER_RULE}]")
    log.print(f"  {t1(p)}GZSL U {p['U']:6.2f}  S {p['S']:6.2f}  H {p['H']:6.2f}   (H at iteration {p['iteration']})")
    log.print(f"[{LAST_RULE}]")
    log.print(f"  {t1(l)}GZSL U {l['U']:6.2f}  S {l['S']:6.2f}  H {l['H']:6.2f}   (iteration {l['iteration']})")


def main(defaults: Config, argv: list[str] | None = None) -> dict:
    """Entry point of the train_<DATASET>.py scripts: overrides, then run, with one-line errors."""
    try:
        cfg = parse_overrides(defaults, sys.argv[1:] if argv is None else argv)
        return run(cfg)
    except (ConfigError, util.DataError) as exc:
        util.fail(str(exc))
