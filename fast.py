"""Speed without other numbers: the flow's optimizer, the allocator settings, autocast, and the
softmax classifier's hand-written gradients (the reference's autograd operations, without a graph).

Everything here changes how fast a run is, not what it computes, unless an option that is
off by default says otherwise (`bf16`, `tf32`, `fused_adam`: README "Speed").
On CUDA it also takes the host off the GPU's critical path, with the same numbers: CUDA graphs
of the gradient passes (`CUDAGraphed`), the CPU generator's draws made ahead on a side thread
and on several at once (`HostNormals`, `PrefetchedNoise`, mt19937.py), copies that do not wait
(`to_device`), chunks sized to the device (`chunk_rows`). The CPU path is the one it always was.
Imports: torch, config and mt19937 only.
"""
from __future__ import annotations

import bisect
import os
import queue
import sys
import threading

import torch

from config import Config
from mt19937 import NORMAL_FILL, parallel_normal_


def slow_bf16_matmul(device: torch.device) -> bool:
    """True on a CPU whose oneDNN has no bf16 kernels (no AVX512-BF16/AMX): there torch runs
    bf16 matrix products in a reference loop, hundreds of times slower than fp32
    (bench/logs/bf16-without-onednn-cpu.log)."""
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


# ----------------------------------------------------------------------------- CUDA: the host off the critical path

def use_cuda_graphs(cfg: Config, device: torch.device) -> bool:
    """Whether the gradient passes run as CUDA graphs: on CUDA with --cuda_graphs (the default), not
    with --bf16 (autocast caches its weight casts across calls, which a captured graph cannot)."""
    return device.type == "cuda" and cfg.cuda_graphs and not cfg.bf16


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """`t.to(device)`; to a GPU through pinned memory, without the host waiting for the copy (a
    copy from pageable memory waits for everything queued on the GPU before it)."""
    if device.type != "cuda":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)


# A chunk of a row-wise pass (synthesis, prediction) on CUDA holds at most this many bytes of
# intermediates, and at most this share of the free memory: with AWA2's 4.3 GB feature matrix a
# run then stays under 8 GiB, so a consumer GPU runs the paper's protocol.
CHUNK_BYTES = 1 << 30
CHUNK_SHARE = 0.25


def chunk_rows(device: torch.device, bytes_per_row: int, cpu_rows: int) -> int:
    """Rows per chunk of a row-wise pass: on a CPU `cpu_rows` (sized to its caches); on CUDA as many
    as CHUNK_BYTES and CHUNK_SHARE of the free memory hold, never fewer than `cpu_rows`. The
    numbers do not depend on it (tested on the CPU; on CUDA by the device tests)."""
    if device.type != "cuda":
        return cpu_rows
    free, _ = torch.cuda.mem_get_info(device)
    return max(cpu_rows, int(min(CHUNK_BYTES, CHUNK_SHARE * free)) // bytes_per_row)


# torch's CPU normal_ turns uniforms into normals NORMAL_FILL (16) at a time, and a draw whose size
# is no multiple of 16 redraws its last 16 values: so draws of multiples of 16 values concatenate.


def host_draw_threads(requested: int) -> int:
    """Threads that draw the CPU generator's noise on CUDA (--host_rng_threads): `requested`, or with 0
    up to 8, leaving two cores to the training loop and the thread that feeds the GPU."""
    if requested:
        return requested
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(8, cores - 2))


def draws_concatenate(numel: int) -> bool:
    """Whether consecutive torch.randn draws of `numel` values each, on the CPU generator, are one
    draw of their total size: the same values and the same generator state after (tested)."""
    return numel % NORMAL_FILL == 0


def split_draw(rows: int, dim: int, max_rows: int) -> list[int]:
    """Row counts of consecutive draws that give the numbers of one torch.randn(rows, dim): pieces
    of at most `max_rows` rows where each piece's size is a multiple of NORMAL_FILL, else [rows]."""
    pieces = [min(max_rows, rows - start) for start in range(0, rows, max_rows)]
    return pieces if all(draws_concatenate(p * dim) for p in pieces) else [rows]


class HostNormals:
    """Draws of the CPU generator (torch.randn's numbers), made ahead on a side thread.

    `numels`: the size of each draw, in order; the thread draws them in that order, each into a
    free slot (pinned memory when `pin`), at most `slots` ahead of the consumer. `take()` returns
    the next draw (a 1-D view of its slot); `release()` gives that slot back once the copies out of
    it are queued: with pinned slots the thread waits for those copies before drawing into it
    again. Nothing else may draw on the CPU generator until every draw was taken: the order of
    the draws is what keeps the reference's numbers. `threads` > 1: each draw is made in parts on
    that many threads at once (mt19937.parallel_normal_: the same numbers).
    """

    def __init__(self, numels, pin: bool, slots: int = 2, threads: int = 1):
        numels = list(numels)
        self.threads = threads
        self.free: queue.Queue = queue.Queue()
        self.ready: queue.Queue = queue.Queue()
        for _ in range(min(slots, len(numels))):
            self.free.put((torch.empty(max(numels), pin_memory=pin), None))
        self.taken = None
        threading.Thread(target=self._draw, args=(numels,), daemon=True, name="gsmflow-host-normals").start()

    def _draw(self, numels: list[int]) -> None:
        try:
            for n in numels:
                slot, copied = self.free.get()
                if copied is not None:
                    copied.synchronize()  # the copies out of this slot have run
                self.ready.put((slot, parallel_normal_(slot[:n], self.threads)))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which raises it
            self.ready.put((None, exc))

    def take(self) -> torch.Tensor:
        slot, values = self.ready.get()
        if slot is None:
            raise values
        self.taken = slot
        return values

    def release(self) -> None:
        copied = None
        if self.taken.is_pinned():
            copied = torch.cuda.Event()
            copied.record()  # after the copies the consumer queued on this stream
        self.free.put((self.taken, copied))
        self.taken = None


def copy_out(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A copy of a slot's values on `device` that outlives the slot (not waiting, on CUDA)."""
    return t.to(device, non_blocking=True) if device.type == "cuda" else t.clone()


class PrefetchedNoise:
    """The flow's perturbation noise: per iteration torch.randn(rows, dim) on the CPU generator, the
    reference's draw, but made ahead on a side thread (HostNormals; `steps` iterations per draw
    where draws concatenate) and copied to the device without waiting.

    It draws ahead only up to `stop(it)`: the last iteration before something else draws on the CPU
    generator (an evaluation, the end of the run), so every other draw, and the RNG state that a
    checkpoint saves there, is the reference's. `ahead`: iterations drawn for but not yet run.
    `threads`: HostNormals', with `steps` x `threads` iterations per draw.
    """

    def __init__(self, rows: int, dim: int, device: torch.device, stop, steps: int = 8, threads: int = 1):
        self.rows, self.dim, self.device, self.stop, self.threads = rows, dim, device, stop, threads
        self.steps = steps * threads if draws_concatenate(rows * dim) else 1
        self.ahead, self.draws, self.block, self.used = 0, None, None, 0

    def __call__(self, it: int) -> torch.Tensor:
        if self.ahead == 0:  # a new span, up to the next iteration after which others draw
            n, per = max(self.stop(it), it) - it + 1, self.rows * self.dim
            self.draws = HostNormals([min(self.steps, n - s) * per for s in range(0, n, self.steps)],
                                     pin=self.device.type == "cuda", threads=self.threads)
            self.ahead = n
        if self.block is None:
            self.block, self.used = self.draws.take().view(-1, self.rows, self.dim), 0
        noise = copy_out(self.block[self.used], self.device)
        self.used, self.ahead = self.used + 1, self.ahead - 1
        if self.used == len(self.block):
            self.draws.release()
            self.block = None
        return noise


def next_stop(sorted_stops: list[int], it: int) -> int:
    """The first of `sorted_stops` at or after `it` (`it` itself past the last)."""
    i = bisect.bisect_left(sorted_stops, it)
    return sorted_stops[i] if i < len(sorted_stops) else it


class CUDAGraphed:
    """`fn(*tensors)` replayed from one CUDA graph: the host launches one graph instead of the
    hundreds of kernels of a forward and backward pass. The same numbers as calling `fn` (the device
    tests check it bit for bit).

    `fn` must be device work only: no host sync, no random draws (draw outside and pass the draws
    in), no Python number that changes between calls (which is why Adam stays outside: its step
    size changes every step, and torch's capturable Adam computes it in float32 on the device, not
    in double on the host as the reference's does, so its numbers differ). The first WARMUP calls
    run `fn` eagerly on a side stream, as torch's docs ask before a capture (they are real calls);
    the next one captures it on that stream, with its arguments copied into static inputs; from
    then on each call copies its arguments into those and replays the graph.
    `grads_of`: parameters whose .grad `fn` leaves (a backward pass). Their .grad must be None when
    `fn` is called; after a replay they are the graph's gradient buffers, as after an eager call.
    `fresh`: return copies of the outputs (the next replay overwrites the graph's own).
    If the capture fails, a warning says why and every later call runs `fn` eagerly.
    """

    WARMUP = 2

    def __init__(self, fn, grads_of=(), fresh: bool = True):
        self.fn, self.params, self.fresh = fn, list(grads_of), fresh
        self.calls, self.graph, self.failed = 0, None, None
        self.stream = torch.cuda.Stream()

    def __call__(self, *args):
        if self.graph is None:
            self.calls += 1
            if self.failed or self.calls <= self.WARMUP:
                return self.fn(*args) if self.failed else self._on_side_stream(args)
            if not self._capture(args):
                return self.fn(*args)
        for static, arg in zip(self.inputs, args):
            static.copy_(arg)
        self.graph.replay()
        for p, g in zip(self.params, self.grads):
            p.grad = g
        return tuple(o.clone() for o in self.outputs) if self.fresh else self.outputs

    def _on_side_stream(self, args):
        current = torch.cuda.current_stream()
        self.stream.wait_stream(current)
        with torch.cuda.stream(self.stream):
            out = self.fn(*args)
        current.wait_stream(self.stream)
        return out

    def _capture(self, args) -> bool:
        self.inputs = [a.clone() for a in args]
        graph = torch.cuda.CUDAGraph()
        try:
            # thread_local: the noise thread may wait on a CUDA event meanwhile
            with torch.cuda.graph(graph, stream=self.stream, capture_error_mode="thread_local"):
                self.outputs = self.fn(*self.inputs)
        except Exception as exc:  # noqa: BLE001 - any failure: run eagerly, with the same numbers
            self.failed = f"{type(exc).__name__}: {exc}".splitlines()[0]
            for p in self.params:
                p.grad = None
            print(f"warning: CUDA graph capture failed ({self.failed}); running eagerly (the same numbers)",
                  file=sys.stderr)
            return False
        self.graph, self.grads = graph, [p.grad for p in self.params]
        for p in self.params:
            p.grad = None  # set again by each replay
        return True
