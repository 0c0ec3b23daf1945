"""torch's CPU generator drawn on several threads, with the numbers of one draw.

The reference draws its noise with torch.randn on the CPU generator: one MT19937 stream, one
32-bit word per float (torch's normal_ turns uniforms into normals 16 at a time: a float draw of
n >= 16 values uses n words, n + 16 when 16 does not divide n, as it redraws its last 16). On one
core a draw of 10^9 values, AWA2's z at each evaluation, takes seconds, the GPU's work waits for
it. `parallel_normal_` cuts a draw into parts, puts each part's generator where the one stream
would be at the part's start, and draws the parts at once: the same values, and the generator
left in the same state (tested bit for bit, and checked once per process before first use).

Jumping ahead. MT19937 holds 624 words x_k .. x_{k+623} and makes the next one by
    x_{k+624} = x_{k+397} ^ twist(x_k, x_{k+1}),
a linear map A over GF(2) from one window of 624 words to the next (19,937 of the bits matter).
Its characteristic polynomial phi has degree 19,937; it is found here with Berlekamp-Massey from
2 x 19,937 bits of the stream. By Cayley-Hamilton A^e = g(A) with g = x^e mod phi, so the window
e words on is
    W_{k+e} = sum_i g_i A^i W_k = XOR of the windows W_{k+i} over the i with g_i = 1:
windows of the stream itself. A jump of any length costs about 20,000 words of the stream and
the XOR of about 10,000 windows: milliseconds. (Haramoto et al. 2008 jump MT19937 with the same
polynomial, evaluated another way.) It holds on the windows the generator reaches after a step;
the 31 low bits of the first word of a freshly seeded state play no part in what follows.

torch keeps the words in blocks of 624, regenerated all at once, and the count of the block's
words already used; a jump moves whole blocks and that count.
Imports: numpy and torch only.
"""
from __future__ import annotations

import functools
import os
import struct
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

N, M, DEGREE = 624, 397, 19937
MATRIX_A, UPPER, LOWER = np.uint32(0x9908B0DF), np.uint32(0x80000000), np.uint32(0x7FFFFFFF)
ONE = np.uint32(1)
# torch's CPU generator state (CPUGeneratorImplState): seed u64, left i32, seeded i32, next u64,
# the block as 624 u64, then the normal samples it caches (not used by float normal_ draws).
LEFT_AT, NEXT_AT, BLOCK_AT = 8, 16, 24
NORMAL_FILL = 16    # torch's normal_ turns uniforms into normals this many at a time
MIN_PART = 1 << 20  # values per part at least: a jump (2 ms, 25 ms the first time for its length) costs
                    # about what drawing 0.5 to 5 million values does (4.5 ms per million on one core)


def stream(window: np.ndarray, n: int) -> np.ndarray:
    """The 624-word `window` (uint32) followed by the `n` words of the stream after it."""
    x = np.empty(N + n, np.uint32)
    x[:N] = window
    for s in range(0, n, N - M):  # 227 words at a time: each uses words made before its slice
        e = min(s + N - M, n)
        y = (x[s:e] & UPPER) | (x[s + 1:e + 1] & LOWER)
        x[s + N:e + N] = x[s + M:e + M] ^ (y >> ONE) ^ ((y & ONE) * MATRIX_A)
    return x


@functools.cache
def characteristic_polynomial() -> int:
    """phi, as an int whose bit i is the coefficient of x^i: Berlekamp-Massey over GF(2) on the
    lowest bit of 2 x 19,937 words of the stream (any nonzero bit sequence of it has phi, which is
    irreducible, as its minimal polynomial)."""
    start = np.random.default_rng(19937).integers(0, 2 ** 32, N, dtype=np.uint32)
    bits = (stream(start, N + 2 * DEGREE)[2 * N:] & ONE).tolist()  # after one step: a reachable window
    c, b, length, m, recent = 1, 1, 0, 1, 0  # connection polynomials; bit i of `recent` = s_{n-i}
    for n, bit in enumerate(bits):
        recent = (recent << 1) | bit
        if (c & recent).bit_count() & 1:  # the discrepancy
            c, t = c ^ (b << m), c
            if 2 * length <= n:
                length, b, m = n + 1 - length, t, 1
                continue
        m += 1
    if length != DEGREE:
        raise AssertionError(f"Berlekamp-Massey found degree {length}, not {DEGREE}")
    return int(format(c, f"0{DEGREE + 1}b")[::-1], 2)  # phi(x) = x^L c(1/x)


_SPREAD = np.array([sum(((i >> k) & 1) << (2 * k) for k in range(8)) for i in range(256)], "<u2")


def _square(a: int) -> int:
    """a(x)^2 over GF(2): bit i moves to bit 2i."""
    b = np.frombuffer(a.to_bytes(max(1, (a.bit_length() + 7) // 8), "little"), np.uint8)
    return int.from_bytes(_SPREAD[b].tobytes(), "little")


@functools.cache
def _multiples() -> list[int]:
    """For each byte c, the multiple of phi whose coefficients from x^19937 up are c's bits."""
    phi, out = characteristic_polynomial(), []
    for c in range(256):
        r = c << DEGREE
        while (top := r.bit_length() - 1) >= DEGREE:
            r ^= phi << (top - DEGREE)
        out.append((c << DEGREE) ^ r)
    return out


def _reduce(r: int) -> int:
    """r mod phi, eight coefficients at a time."""
    multiples = _multiples()
    while (extra := r.bit_length() - DEGREE) > 0:
        shift = max(extra - 8, 0)
        r ^= multiples[r >> (DEGREE + shift)] << shift
    return r


@functools.lru_cache(maxsize=256)
def x_power(e: int) -> int:
    """x^e mod phi, by squaring and multiplying."""
    r = 1
    for bit in bin(e)[2:]:
        r = _reduce(_square(r))
        if bit == "1":
            r = _reduce(r << 1)
    return r


def jump(window: np.ndarray, e: int) -> np.ndarray:
    """The window `e` words after `window` (one the generator reached after a step): the XOR of the
    windows W_i of the stream over the i where x^e mod phi has a 1."""
    g = x_power(e)
    taps = np.flatnonzero(np.unpackbits(np.frombuffer(g.to_bytes((g.bit_length() + 7) // 8, "little"),
                                                      np.uint8), bitorder="little"))
    windows = np.lib.stride_tricks.sliding_window_view(stream(window, int(taps[-1])), N)
    out = np.zeros(N, np.uint32)
    for s in range(0, len(taps), 512):  # 512 windows (1.3 MB) at a time stay in the cache
        out ^= np.bitwise_xor.reduce(windows[taps[s:s + 512]], axis=0)
    return out


def advance(state: torch.Tensor, words: int) -> torch.Tensor:
    """A CPU generator's state (torch.Generator.get_state()) after `words` more 32-bit words."""
    raw = bytearray(state.numpy().tobytes())
    (left,) = struct.unpack_from("<i", raw, LEFT_AT)
    block = np.frombuffer(bytes(raw), "<u8", N, BLOCK_AT).astype(np.uint32)
    used = N + 1 - left  # words of the block already used: 1..624 (624: the next word regenerates it)
    blocks, used = divmod(used + words - 1, N)  # blocks on, and words used of that block: 1..624 again
    used += 1
    if blocks:  # block -> its successor (a step taken: reachable), then N * (blocks - 1) words on
        following = stream(block, N)[N:]
        block = jump(following, N * (blocks - 1)) if blocks > 1 else following
        raw[BLOCK_AT:BLOCK_AT + 8 * N] = block.astype("<u8").tobytes()
    struct.pack_into("<i", raw, LEFT_AT, N + 1 - used)
    struct.pack_into("<Q", raw, NEXT_AT, used)
    return torch.frombuffer(raw, dtype=torch.uint8).clone()


def normal_words(numel: int) -> int:
    """32-bit words that a float32 normal_ of `numel` (>= 16) contiguous values uses."""
    return numel + (NORMAL_FILL if numel % NORMAL_FILL else 0)


def parts(numel: int, threads: int, min_part: int | None = None) -> list[tuple[int, int]]:
    """(start, size) of the parts of a draw: at most `threads`, of at least `min_part` (MIN_PART)
    values, each but the last a multiple of NORMAL_FILL (so that the parts' words follow one another)."""
    k = max(1, min(threads, numel // max(min_part or MIN_PART, NORMAL_FILL)))
    size = -(-numel // (k * NORMAL_FILL)) * NORMAL_FILL  # numel / k, up to a multiple of NORMAL_FILL
    starts = list(range(0, numel, size))
    if len(starts) > 1 and numel - starts[-1] < NORMAL_FILL:
        starts.pop()  # the last part takes a tail that torch would draw differently on its own
    return [(s, e - s) for s, e in zip(starts, starts[1:] + [numel])]


_pool_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None


def _forget_pool() -> None:
    global _pool, _pool_lock
    _pool, _pool_lock = None, threading.Lock()  # a forked child has none of its parent's threads


os.register_at_fork(after_in_child=_forget_pool)


def _workers(threads: int) -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None or _pool._max_workers < threads:
            _pool = ThreadPoolExecutor(threads, thread_name_prefix="gsmflow-normals")
        return _pool


def _draw_parts(out: torch.Tensor, generator: torch.Generator, pieces: list[tuple[int, int]]) -> None:
    start_state = generator.get_state()

    def draw(start: int, size: int) -> torch.Generator:
        g = torch.Generator()
        g.set_state(advance(start_state, start) if start else start_state)
        out[start:start + size].normal_(generator=g)
        return g

    pool = _workers(len(pieces))
    futures = [pool.submit(draw, *p) for p in pieces]
    last = [f.result() for f in futures][-1]
    generator.set_state(last.get_state())  # where one draw of the whole would have left it


@functools.cache
def parallel_draws_work() -> bool:
    """Whether parts drawn here give one draw's values and end state (checked once per process, on
    a generator of its own: torch's kernel or state layout could change). If not, a warning, and
    parallel_normal_ draws in one piece."""
    g = torch.Generator().manual_seed(20261207)
    torch.empty(1000).normal_(generator=g)  # start mid-block
    start, n = g.get_state(), 3 * 65536 + 8
    whole = torch.empty(n).normal_(generator=g)
    end = g.get_state()
    g.set_state(start)
    cut = torch.empty(n)
    try:
        _draw_parts(cut, g, parts(n, 3, min_part=NORMAL_FILL))
        ok = torch.equal(whole, cut) and torch.equal(end, g.get_state())
    except Exception as exc:  # noqa: BLE001 - any failure: draw in one piece, the same numbers
        print(f"warning: parallel CPU draws failed their check ({type(exc).__name__}: {exc}); drawing on one thread",
              file=sys.stderr)
        return False
    if not ok:
        print("warning: parallel CPU draws differ from one draw with this torch; drawing on one thread",
              file=sys.stderr)
    return ok


def parallel_normal_(out: torch.Tensor, threads: int, generator: torch.Generator | None = None,
                     min_part: int | None = None) -> torch.Tensor:
    """out.normal_(generator=generator) (the default CPU generator if None), drawn in up to `threads`
    parts at once: the same values, and the generator left in the same state. In one piece when
    `out` is small, not a contiguous float32 CPU tensor, or the check failed."""
    generator = generator if generator is not None else torch.default_generator
    pieces = parts(out.numel(), threads, min_part)
    if (len(pieces) == 1 or out.dtype != torch.float32 or out.device.type != "cpu" or not out.is_contiguous()
            or not parallel_draws_work()):
        return out.normal_(generator=generator)
    _draw_parts(out.view(-1), generator, pieces)
    return out
