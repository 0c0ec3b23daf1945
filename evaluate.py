"""Evaluation: synthesise unseen features, train the softmax classifiers, score them.

`Evaluator` is one evaluation of a run: `synthesize_unseen` fills the classifier matrix,
`train_softmax` trains the GZSL (and ZSL) classifier the reference's way and scores every
epoch, `best_gzsl_epoch` is the reference's pick. `save_synthetic` exports the features.
Imports: util, models, fast, runs; never train or report.
"""
from __future__ import annotations

import math
import os
import time
from pathlib import Path

import numpy as np
import scipy.io as sio
import torch

from config import Config
from fileio import atomic_write
from fast import (CUDAGraphed, HostNormals, autocast, chunk_rows, host_draw_threads, release_free_memory,
                  softmax_gradients, split_draw, use_cuda_graphs)
from models import SoftmaxClassifier
from runs import progress_bar
from util import GZSLData, harmonic_mean, per_class_accuracy


# A CPU GEMM gives each row the same bits whatever the number of rows, except for tiny
# batches (measured with torch 2.13 + MKL: 1-3, 5-7 and 9 rows take other kernels). Work
# that the reference does on its nSample-row batches is therefore never done on fewer rows.
GEMM_MIN_ROWS = 16
CPU_SYNTH_CHUNK = 2048  # rows per reverse pass on a CPU (--synth_chunk=0): its caches' size
HOST_DRAW_ROWS = 8192   # on CUDA, each class's z is drawn on the CPU in pieces of at most this many rows per thread


def synthesis_chunk(device: torch.device, synth_chunk: int, dim: int, cond_dim: int, hidden_dim: int) -> int:
    """Rows per reverse pass: --synth_chunk, or with 0 (the default) CPU_SYNTH_CHUNK on a CPU and on
    CUDA as many as fast.chunk_rows allows for the reverse pass's intermediates (about six
    feature-sized rows, the condition and two subnet layers per row)."""
    return synth_chunk or chunk_rows(device, 4 * (6 * dim + cond_dim + 2 * hidden_dim), CPU_SYNTH_CHUNK)


@torch.no_grad()
def synthesize_unseen(flow, rp, semantics: torch.Tensor, n_per_class: int, out: torch.Tensor,
                      chunk: int = CPU_SYNTH_CHUNK, bf16: bool = False, device_noise: bool = False,
                      threads: int = 1) -> torch.Tensor:
    """Fill `out` (U * n_per_class rows) with synthetic features; rows [i*n, (i+1)*n) are unseen class i.

    The numbers are the reference's: for each class in turn z = randn(n_per_class, D) on the
    CPU generator, then the flow in reverse conditioned on the relative-positioning vector
    of the class. The work is organised differently: z is drawn straight into `out`, the
    condition is computed once per class instead of once per row, and the reverse pass runs
    over all classes' rows in balanced chunks of at most `chunk` rows, in place, so memory
    stays at a few chunks whatever nSample is. On CUDA the CPU draws z on a side thread while
    the GPU runs the reverse passes of the rows drawn so far (unseen_noise), on `threads` threads at
    once. `device_noise` (GPU only, not the reference's numbers) draws z on the device generator instead.
    """
    device, n, n_classes = out.device, n_per_class, semantics.shape[0]
    with autocast(device, bf16):
        cond = rp(semantics.repeat_interleave(GEMM_MIN_ROWS, 0))[::GEMM_MIN_ROWS]
    row_class = torch.arange(n_classes, device=device).repeat_interleave(n)
    total = n_classes * n
    n_chunks = math.ceil(total / max(chunk, 2 * GEMM_MIN_ROWS))  # balanced: every chunk > GEMM_MIN_ROWS rows
    edges = [round(k * total / n_chunks) for k in range(n_chunks + 1)]
    chunks = list(zip(edges[:-1], edges[1:]))
    for drawn in unseen_noise(out, n, device_noise, threads):
        while chunks and chunks[0][1] <= drawn:  # every chunk whose z is all drawn
            start, stop = chunks.pop(0)
            with autocast(device, bf16):
                out[start:stop] = flow.reverse(out[start:stop], cond[row_class[start:stop]])
    return out


def unseen_noise(out: torch.Tensor, n_per_class: int, device_noise: bool = False, threads: int = 1):
    """Draw z into `out`, class after class as the reference does; yield the rows drawn so far.

    On a CPU (and with --device_noise) z is drawn straight into `out` (row.normal_() gives the
    numbers of torch.randn(n, dim) on that generator) and all rows are yielded at once. On CUDA
    the CPU generator's draws are made on a side thread into pinned memory (fast.HostNormals; each
    piece in parts on `threads` threads at once), in pieces of HOST_DRAW_ROWS rows per thread that
    concatenate to each class's draw (fast.split_draw), and copied without waiting.
    """
    n, dim = n_per_class, out.shape[1]
    n_classes = out.shape[0] // n
    if out.device.type == "cpu" or device_noise:
        for i in range(n_classes):
            out[i * n:(i + 1) * n].normal_()
        yield out.shape[0]
        return
    pieces = split_draw(n, dim, HOST_DRAW_ROWS * threads) * n_classes
    draws = HostNormals([rows * dim for rows in pieces], pin=True, threads=threads)
    row = 0
    for rows in pieces:
        out[row:row + rows].view(-1).copy_(draws.take(), non_blocking=True)
        draws.release()
        row += rows
        yield row



# ----------------------------------------------------------------------------- classifier

class ReferenceBatches:
    """The reference classifier's batching, as index tensors (rows are never copied).

    Shuffled with torch.randperm on the first call; when a batch runs past the end, the
    remaining rows are joined with the head of a fresh permutation of the current order.
    """

    def __init__(self, n: int, batch_size: int, device):
        self.n, self.batch_size, self.device = n, batch_size, device
        self.order = torch.arange(n)
        self.start, self.epochs_completed = 0, 0
        self._dev_order = None

    def _reshuffle(self) -> None:
        self.order = self.order[torch.randperm(self.n)]
        self._dev_order = self.order.to(self.device)

    def next(self) -> torch.Tensor:
        bs, start = self.batch_size, self.start
        if self.epochs_completed == 0 and start == 0:
            self._reshuffle()
        if start + bs > self.n:
            self.epochs_completed += 1
            rest = self._dev_order[start:self.n]
            self._reshuffle()
            self.start = bs - rest.numel()
            return torch.cat((rest, self._dev_order[:self.start]))
        self.start += bs
        return self._dev_order[start:start + bs]


@torch.no_grad()
def predict(model, features: torch.Tensor, batch_size: int) -> np.ndarray:
    """The predicted class of every row, in chunks of `batch_size` rows (the reference's test batches)
    on a CPU, on CUDA in chunks sized to the device (fast.chunk_rows: a few rows of logits each)."""
    n_classes = model.fc.out_features
    chunk = chunk_rows(features.device, 16 * n_classes, batch_size)
    preds = [torch.max(model(features[i:i + chunk]), 1)[1] for i in range(0, features.shape[0], chunk)]
    return torch.cat(preds).cpu().numpy()


def train_softmax(features: torch.Tensor, labels: torch.Tensor, n_classes: int, tests: dict,
                  lr: float, epochs: int, batch_size: int, bf16: bool = False, on_epoch=None,
                  cuda_graphs: bool = False) -> list[dict]:
    """Train the softmax classifier the reference's way; per-class accuracy after each epoch.

    `tests` maps a name to (features, labels) on the same device. Returns one dict per
    epoch with each test set's accuracy (fraction, 0..1) and the epoch's wall time
    (`seconds`, training and testing).
    The reference's torch.optim.Adam(betas=(0.5, 0.999)) step is torch's own functional
    Adam with the implementation torch picks for the device, minus the Optimizer wrapper.
    `cuda_graphs` (CUDA): each step's batch gather and gradients replay one CUDA graph
    (fast.CUDAGraphed); Adam runs as it is, its step size changing every step.
    """
    from torch.optim.adam import adam
    device = features.device
    model = SoftmaxClassifier(features.shape[1], n_classes).to(device)  # built on CPU: same RNG draws as the reference
    model.eval()  # only predict() runs the module; training works on its tensors below
    params = [model.fc.weight.detach(), model.fc.bias.detach()]  # updated in place
    exp_avgs, exp_avg_sqs = [torch.zeros_like(p) for p in params], [torch.zeros_like(p) for p in params]
    steps = [torch.tensor(0.0) for _ in params]  # as torch.optim.Adam keeps them
    batches = ReferenceBatches(features.shape[0], batch_size, device)
    test_labels = {k: y.cpu().numpy() for k, (_, y) in tests.items()}
    history = []

    def gradients(idx):
        # index_select copies whole rows; features[idx] gathers element by element (3x slower on CPU)
        return softmax_gradients(*params, features.index_select(0, idx), labels.index_select(0, idx), bf16)
    if cuda_graphs:
        gradients = CUDAGraphed(gradients, fresh=False)  # Adam reads them before the next replay
    for _ in range(epochs):
        t0 = time.perf_counter()
        with torch.no_grad():
            for _ in range(math.ceil(features.shape[0] / batch_size)):
                grads = gradients(batches.next())
                adam(params, list(grads), exp_avgs, exp_avg_sqs, [], steps, amsgrad=False, beta1=0.5, beta2=0.999,
                     lr=lr, weight_decay=0.0, eps=1e-8, maximize=False)
        with autocast(device, bf16):
            accs = {k: per_class_accuracy(predict(model, x, batch_size), test_labels[k]) for k, (x, _) in tests.items()}
        history.append({**accs, "seconds": time.perf_counter() - t0})
        if on_epoch is not None:
            on_epoch()
    return history


def best_gzsl_epoch(history: list[dict]) -> dict:
    """The reference's pick: the first epoch with the highest H; zeros if H is never > 0."""
    best = {"U": 0.0, "S": 0.0, "H": 0.0}
    for h in history:
        H = harmonic_mean(h["unseen"], h["seen"])
        if H > best["H"]:
            best = {"U": h["unseen"], "S": h["seen"], "H": H}
    return best



def save_synthetic(path: Path, features: torch.Tensor, n_per_class: int, data: GZSLData) -> None:
    """Synthetic unseen features + labels as .npz or .mat (rows = samples), written atomically."""
    labels = np.repeat(np.arange(data.n_unseen), n_per_class)
    content = {"features": features.cpu().numpy(), "labels": labels,
               "class_ids": data.unseen_ids[labels], "unseen_semantics": data.unseen_semantics,
               "unseen_class_ids": data.unseen_ids}
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            if path.suffix == ".mat":
                sio.savemat(f, content)
            else:
                np.savez(f, **content)
    atomic_write(path, write)



class Evaluator:
    """Synthesises unseen features and trains the GZSL and ZSL softmax classifiers."""

    def __init__(self, cfg: Config, data: GZSLData, device: torch.device):
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
        self.synth_chunk = synthesis_chunk(device, cfg.synth_chunk, data.feature_dim, cfg.input_dim, cfg.hidden_dim)
        self.cuda_graphs = use_cuda_graphs(cfg, device)
        self.host_threads = host_draw_threads(cfg.host_rng_threads)

    def __call__(self, flow, rp) -> dict:
        cfg, data = self.cfg, self.data
        flow.eval(), rp.eval()
        bar = progress_bar(None, cfg, desc="evaluation", unit="epoch", leave=False,
                           total=cfg.classifier_epochs * (2 if cfg.eval_zsl else 1))
        synthetic = self.features[self.n_train:]
        release_free_memory()  # the training step's freed blocks: room for the synthetic rows
        t0 = time.perf_counter()
        synthesize_unseen(flow, rp, self.unseen_semantics, cfg.nSample, synthetic, self.synth_chunk,
                          cfg.bf16, cfg.device_noise, self.host_threads)
        self.timing = {"synthesis": time.perf_counter() - t0}
        x_u, y_u = self.test_unseen
        gzsl = train_softmax(self.features, self.labels, data.n_seen + data.n_unseen,
                                  {"seen": self.test_seen, "unseen": (x_u, y_u + data.n_seen)},
                                  cfg.classifier_lr, cfg.classifier_epochs, cfg.classifier_batch,
                                  bf16=cfg.bf16, on_epoch=bar.update, cuda_graphs=self.cuda_graphs)
        self.timing["gzsl_epochs"] = [h["seconds"] for h in gzsl]
        best = best_gzsl_epoch(gzsl)
        last = gzsl[-1]
        row = {"U": best["U"], "S": best["S"], "H": best["H"],
               "U_last": last["unseen"], "S_last": last["seen"],
               "H_last": harmonic_mean(last["unseen"], last["seen"]),
               "gzsl_epochs": [[h["unseen"], h["seen"]] for h in gzsl]}
        if cfg.eval_zsl:
            # The reference runs no ZSL classifier here: fork the RNG so the GZSL numbers
            # and the rest of training draw exactly what they would without it.
            devices = [self.features.device] if self.features.device.type == "cuda" else []
            # TMM variant (docs/tmm.md): the authors' TMM code gives its ZSL classifier all S + U
            # outputs (trained on unseen labels 0..U-1 only); MM'21: the U unseen classes.
            n_zsl = data.n_seen + data.n_unseen if cfg.variant == "tmm" else data.n_unseen
            with torch.random.fork_rng(devices=devices):
                zsl = train_softmax(synthetic, self.labels[self.n_train:] - data.n_seen, n_zsl,
                                         {"unseen": self.test_unseen},
                                         cfg.classifier_lr, cfg.classifier_epochs, cfg.classifier_batch,
                                         bf16=cfg.bf16, on_epoch=bar.update, cuda_graphs=self.cuda_graphs)
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

