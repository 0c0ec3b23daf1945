"""Measuring tools of bench.py: the matrix-product recorder and its replay, timers, copy
bandwidth, medians of paired rounds, peak memory. Imports torch and numpy only."""
from __future__ import annotations

import resource
import time

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode


class MatmulRecorder(TorchDispatchMode):
    """Records every matrix product (mm / addmm, incl. those autograd runs) and counts all ops."""
    MATMULS = {torch.ops.aten.mm.default: (0, 1), torch.ops.aten.addmm.default: (1, 2)}

    def __init__(self):
        super().__init__()
        self.matmuls, self.ops = [], 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops += 1
        if func in self.MATMULS:
            i, j = self.MATMULS[func]
            a, b = args[i], args[j]
            self.matmuls.append((tuple(a.shape), a.stride(), tuple(b.shape), b.stride(), str(a.dtype)))
        elif "mm" in func.__name__ or "linear" in func.__name__ or "matmul" in func.__name__:
            raise RuntimeError(f"unrecorded matrix product {func}: add it to MatmulRecorder")
        return func(*args, **(kwargs or {}))

    def flops(self) -> int:
        return sum(2 * a[0] * a[1] * b[1] for a, _, b, _, _ in self.matmuls)


def record(fn):
    with MatmulRecorder() as rec:
        fn()
    return rec


def strided(shape, stride, dtype, device):
    """A tensor with exactly this shape and stride (e.g. a transposed weight)."""
    size = 1 + sum((n - 1) * s for n, s in zip(shape, stride))
    return torch.randn(size, device=device).to(getattr(torch, dtype.split(".")[1])).as_strided(shape, stride)


class Replay:
    """The recorded products as plain torch.mm calls on tensors of the same shapes and strides."""

    def __init__(self, matmuls, device, repeat: int = 1):
        self.device, self.repeat = device, repeat
        cache = {}
        self.calls = []
        for sa, ta, sb, tb, dt in matmuls:
            for key in ((sa, ta, dt), (sb, tb, dt)):
                if key not in cache:
                    cache[key] = strided(*key, device)
            self.calls.append((cache[(sa, ta, dt)], cache[(sb, tb, dt)]))

    def __call__(self):
        for _ in range(self.repeat):
            for a, b in self.calls:
                torch.mm(a, b)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device) -> float:
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def copy_bandwidth(device, mib: int = 512) -> float:
    """Bytes read + written per second by a large tensor copy (best of 5)."""
    src = torch.randn(mib * 2 ** 18, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    return 2 * src.numel() * 4 / min(timed(lambda: dst.copy_(src), device) for _ in range(5))


def summarize(times, bounds) -> dict:
    """Median time, median bound, and the median over rounds of time / bound (each round's two
    measurements are adjacent, so slow drifts of a shared machine's speed cancel)."""
    med = lambda v: float(np.median(v))
    return dict(time=med(times), bound=med(bounds), ratio=med([t / b for t, b in zip(times, bounds)]))


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def peak_device_bytes(device) -> int | None:
    return torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
