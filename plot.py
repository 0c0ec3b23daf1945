"""Pictures of a run, from its run directory alone.

    python plot.py out/AWA2/20261128-093315            # curves.png and tsne.png in that directory
    python plot.py RUN_DIR --tsne_per_class=300 --checkpoint=last.pt
    python plot.py --help

curves.png: NLL and prototype loss against iteration (losses.jsonl) and ZSL T1 / GZSL U, S,
H at each evaluation (metrics.jsonl). tsne.png: a t-SNE of real test features of the unseen
classes next to features the saved flow synthesises for them (the paper's qualitative figure).
The data is read from the paths in the run's config.json.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import cli  # noqa: E402
import evaluate  # noqa: E402
import runs  # noqa: E402
import util  # noqa: E402
from cli import opt  # noqa: E402
from config import saved_config  # noqa: E402


@dataclass
class PlotOptions:
    run_dir: str = opt("", "a run directory (out/<DATASET>/<time>/)", path=True, positional=True)
    checkpoint: str = opt("best.pt", "the checkpoint in RUN_DIR whose flow synthesises for the t-SNE")
    tsne_per_class: int = opt(200, "real and synthetic points per unseen class in the t-SNE", low=1)
    no_tsne: bool = opt(False, "draw curves.png only (the t-SNE takes a minute or more)")


def plot_curves(run_dir: Path) -> Path:
    losses = runs.read_jsonl(run_dir / "losses.jsonl")
    metrics = runs.read_jsonl(run_dir / "metrics.jsonl")
    if not losses and not metrics:
        raise util.DataError(f"{run_dir}: no losses.jsonl or metrics.jsonl to plot")
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    it = [r["iteration"] for r in losses]
    axes[0].plot(it, [r["nll"] for r in losses])
    axes[0].set(title="flow NLL per dimension", xlabel="iteration")
    axes[1].plot(it, [r["prototype_loss"] for r in losses], color="tab:orange")
    axes[1].set(title="prototype loss (weighted)", xlabel="iteration", yscale="log")
    ev = [r["iteration"] for r in metrics]
    for key, color in (("U", "tab:blue"), ("S", "tab:green"), ("H", "tab:red"), ("T1", "tab:purple")):
        if metrics and key in metrics[0]:
            axes[2].plot(ev, [r[key] for r in metrics], "o-", color=color, label=f"{key} (best epoch)")
            axes[2].plot(ev, [r[f"{key}_last"] for r in metrics], "--", color=color, alpha=0.5)
    axes[2].set(title="evaluations (dashed: last classifier epoch)", xlabel="iteration", ylabel="%")
    axes[2].legend(fontsize=8)
    fig.suptitle(f"{run_dir}  (selection in the log is on the test set unless --validation)", fontsize=9)
    fig.tight_layout()
    out = run_dir / "curves.png"
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_tsne(run_dir: Path, checkpoint: str = "best.pt", per_class: int = 200, seed: int = 0) -> Path:
    from sklearn.manifold import TSNE

    import train
    cfg = saved_config(runs.read_options(run_dir), run_dir / "config.json")
    data = train.prepare_data(cfg)
    ckpt = runs.load_checkpoint(run_dir / checkpoint, data)
    cfg, flow, rp = train.load_models(cfg, data, ckpt, torch.device("cpu"))
    flow.eval(), rp.eval()
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    synthetic = evaluate.synthesize_unseen(flow, rp, torch.from_numpy(data.unseen_semantics), per_class,
                                       torch.empty(data.n_unseen * per_class, data.feature_dim)).numpy()
    syn_labels = np.repeat(np.arange(data.n_unseen), per_class)
    real_idx = np.concatenate([rng.permutation(np.flatnonzero(data.test_unseen_label == c))[:per_class]
                               for c in range(data.n_unseen)])
    real, real_labels = data.test_unseen_feature[real_idx], data.test_unseen_label[real_idx]
    emb = TSNE(n_components=2, init="pca", random_state=seed, perplexity=min(30, len(real_idx) // 4 + 1)) \
        .fit_transform(np.concatenate([real, synthetic]))
    fig, ax = plt.subplots(figsize=(8, 7))
    cmap = plt.get_cmap("tab10" if data.n_unseen <= 10 else "tab20")
    for c in range(data.n_unseen):
        color = cmap(c % cmap.N)
        r, s = emb[:len(real)][real_labels == c], emb[len(real):][syn_labels == c]
        ax.scatter(s[:, 0], s[:, 1], s=6, marker="x", color=color, alpha=0.35)
        ax.scatter(r[:, 0], r[:, 1], s=14, marker="o", color=color, edgecolors="black", linewidths=0.3)
    ax.set_title(f"{cfg.dataset} unseen classes: real test features (o) vs synthetic (x)\n"
                 f"{run_dir / checkpoint}, iteration {ckpt['iteration']}", fontsize=9)
    ax.set_xticks([]), ax.set_yticks([])
    fig.tight_layout()
    out = run_dir / "tsne.png"
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot(argv: list[str]) -> None:
    parser = cli.parser_for("plot.py", __doc__, (PlotOptions, None))
    opts = PlotOptions(**cli.parse(parser, argv))
    run_dir = Path(opts.run_dir)
    if not opts.run_dir:
        raise cli.ConfigError("a run directory is needed: python plot.py RUN_DIR (see --help)")
    if not (run_dir / "config.json").is_file():
        raise util.DataError(f"{run_dir}: not a run directory (no config.json)")
    if not opts.no_tsne and not (run_dir / opts.checkpoint).is_file():
        raise util.DataError(f"{run_dir / opts.checkpoint}: checkpoint not found (--checkpoint names a file in "
                             f"RUN_DIR: best.pt or last.pt)")
    print(plot_curves(run_dir))
    if not opts.no_tsne:
        print(plot_tsne(run_dir, opts.checkpoint, opts.tsne_per_class))


def main(argv: list[str] | None = None) -> None:
    cli.main_guard(plot, sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    main()
