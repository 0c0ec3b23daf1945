"""Speed without other numbers: the flow's optimizer, the allocator settings, autocast, and the
softmax classifier's hand-written gradients (the reference's autograd operations, without a graph).

Everything here changes how fast a run is, not what it computes, unless an option that is
off by default says otherwise (`bf16`, `tf32`, `fused_adam`: README "Speed").
Imports: torch and config only; nothing else of ours.
"""
from __future__ import annotations

import sys

import torch

from config import Config


def slow_bf16_matmul(device: torch.device) -> bool:
    """True on a CPU whose oneDNN has no bf16 kernels (no AVX512-BF16/AMX): there torch runs
    bf16 matrix products in a reference loop, measured 200x slower than fp32 on such a VM."""
    return device.type == "cpu" and not (torch.backends.mkldnn.is_available()
                                         and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def autocast(device: torch.device, bf16: bool):
    """bf16 autocast on `device` when the `bf16` option is on; a no-op context otherwise."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)




class BlockedAdam(torch.optim.Adam):
    """torch.optim.Adam's default (single-tensor) update, run over cache-sized blocks.

    The default update makes about ten full passes over each 16 MB weight (add weight
    decay, lerp, mul, addcmul, sqrt, div, add, addcdiv), each from main memory. Here the
    same operations, in the same order and with the same scalars, run on one block of
    `block` elements at a time, so all but the first and last touch of each block hit the
    cache. Every element gets exactly the arithmetic of torch.optim.Adam (tested bit for
    bit); the state has the same keys, so state_dicts are interchangeable.
    Supports Adam's default options only (no amsgrad, maximize, capturable, differentiable).
    """

    def __init__(self, params, block: int = 1 << 19, **kw):
        super().__init__(params, **kw)
        self.block = block

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            if group["amsgrad"] or group["maximize"] or group["capturable"] or group["differentiable"]:
                raise ValueError("BlockedAdam supports Adam's default options only")
            (beta1, beta2), lr, wd, eps = group["betas"], group["lr"], group["weight_decay"], group["eps"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = torch.tensor(0.0)
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                step = state["step"].item()
                step_size = lr / (1 - beta1 ** step)
                bias_correction2_sqrt = (1 - beta2 ** step) ** 0.5
                param, grad, m, v = (t.view(-1) for t in (p, p.grad, state["exp_avg"], state["exp_avg_sq"]))
                for s in range(0, param.numel(), self.block):
                    b = slice(s, s + self.block)
                    g = grad[b].add(param[b], alpha=wd) if wd != 0 else grad[b]
                    m[b].lerp_(g, 1 - beta1)
                    v[b].mul_(beta2).addcmul_(g, g, value=1 - beta2)
                    param[b].addcdiv_(m[b], (v[b].sqrt() / bias_correction2_sqrt).add_(eps), value=-step_size)


def flow_optimizer(params, lr: float, weight_decay: float, device: torch.device, fused: bool = False):
    """Adam for the flow. Default: the reference's numbers, computed fast on each device
    (BlockedAdam on CPU; the foreach kernels on CUDA). `fused`: torch's fused Adam, faster
    still but about 1 ulp away from the reference's rounding."""
    if fused:
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=True)
    if device.type == "cpu":
        return BlockedAdam(params, lr=lr, weight_decay=weight_decay)
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, foreach=True)


def _libc():
    import ctypes
    return ctypes.CDLL("libc.so.6") if sys.platform.startswith("linux") else None


def release_free_memory() -> None:
    """Hand the freed memory that keep_freed_memory() retains back to the OS (glibc's
    malloc_trim). Called before an evaluation, whose 4 GB buffer needs the room more."""
    try:
        libc = _libc()
        if libc is not None:
            libc.malloc_trim(0)
    except (OSError, AttributeError):
        pass


def keep_freed_memory() -> bool:
    """Stop glibc from handing large freed blocks back to the OS (Linux/glibc only).

    By default every tensor above ~32 MB, and any heap top above the trim threshold, is
    returned to the kernel when freed and page-faulted back, zeroed, when the next
    iteration allocates it again: about 100k page faults per AWA2 training step (gradients,
    optimizer temporaries). Keeping the blocks changes no number, only where memory comes
    from. Allocations of 1 GiB and more (the evaluation buffer) are still mapped directly.
    Returns whether the setting was applied.
    """
    try:
        libc = _libc()
        M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
        return libc is not None and bool(libc.mallopt(M_MMAP_THRESHOLD, 1 << 30)) and \
            bool(libc.mallopt(M_TRIM_THRESHOLD, 2 ** 31 - 1))
    except (OSError, AttributeError):
        return False



def apply_speed_options(cfg: Config) -> None:
    """Process-wide settings of the speed options (config.py): TF32 (CUDA only) and the allocator."""
    torch.backends.cuda.matmul.fp32_precision = "tf32" if cfg.tf32 else "ieee"
    if cfg.keep_freed_memory:
        keep_freed_memory()


def softmax_gradients(W: torch.Tensor, b: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
                      bf16: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients of the reference classifier's loss, mean_i -log softmax(x_i W^T + b)[y_i].

    With p = softmax(x W^T + b) and Y the one-hot labels: dL/dlogits = (p - Y) / n,
    dL/dW = (dL/dlogits)^T x and dL/db = sum_i dL/dlogits_i. They are computed with the very
    operations autograd runs for the reference's nn.Linear -> LogSoftmax -> NLLLoss, in the
    same order and memory layouts, so the bits are the reference's (tested), but without
    building a graph or saving tensors: the classifier's 417 steps per epoch are small and
    autograd's bookkeeping costs as much as a third of them.
    `bf16`: the operations that CPU autocast runs (products and log-softmax in bf16, the loss
    in fp32, gradients returned in fp32).
    """
    aten = torch.ops.aten
    low = torch.bfloat16 if bf16 else x.dtype  # .to() is a no-op in fp32
    Wl, bl, xl = W.to(low), b.to(low), x.to(low)
    log_p = aten._log_softmax(torch.addmm(bl, xl, Wl.t()), 1, False)
    log_p32 = log_p.float()
    mean = 1  # torch's Reduction::Mean; -100 is nll_loss's default ignore_index
    _, total_weight = aten.nll_loss_forward(log_p32, y, None, mean, -100)
    g = aten.nll_loss_backward(torch.ones((), device=x.device), log_p32, y, None, mean, -100, total_weight)
    g = aten._log_softmax_backward_data(g.to(low), log_p, 1, low)
    # addmm's backward for the column-major W^T is (g^T x)^T, which the .t() of W undoes
    return g.t().mm(xl).to(W.dtype), g.sum([0], True).view(-1).to(b.dtype)
