"""torch's CPU generator drawn on several threads (mt19937.py) gives the numbers of one draw and leaves
the generator where one draw would; the jump-ahead it rests on agrees with the stream itself."""
import numpy as np
import pytest
import torch

import fast
import mt19937
from mt19937 import N


def reachable_window(seed: int) -> np.ndarray:
    """A window the generator reaches after a step (what `jump` takes)."""
    start = np.random.default_rng(seed).integers(0, 2 ** 32, N, dtype=np.uint32)
    return mt19937.stream(start, N)[N:]


def test_the_characteristic_polynomial_has_the_degree_of_the_state():
    phi = mt19937.characteristic_polynomial()
    assert phi.bit_length() - 1 == mt19937.DEGREE and phi & 1  # degree 19,937, constant term 1


@pytest.mark.parametrize("e", [0, 1, 396, 623, 624, 625, 5000, 19937, 60001])
def test_a_jump_is_the_window_that_many_words_on(e):
    window = reachable_window(e)
    assert np.array_equal(mt19937.jump(window, e), mt19937.stream(window, e)[e:e + N])


def test_the_stream_is_torchs_block_regeneration():
    g = torch.Generator().manual_seed(5)
    torch.empty(N).normal_(generator=g)  # the whole first block used: the next word regenerates it
    state = g.get_state().numpy().tobytes()
    block = np.frombuffer(state, "<u8", N, mt19937.BLOCK_AT).astype(np.uint32)
    torch.empty(16).normal_(generator=g)
    after = np.frombuffer(g.get_state().numpy().tobytes(), "<u8", N, mt19937.BLOCK_AT).astype(np.uint32)
    assert np.array_equal(mt19937.stream(block, N)[N:], after)


@pytest.mark.parametrize("before", [0, 16, 608, 624, 1000])  # a fresh seed, mid-block, a used-up block
@pytest.mark.parametrize("numel", [16, 48, 624, 1248, 99_984, 624_000, 17, 100_001])
def test_advance_puts_the_generator_where_a_draw_leaves_it(before, numel):
    g = torch.Generator().manual_seed(before + numel)
    if before:
        torch.empty(before).normal_(generator=g)
    start = g.get_state()
    torch.empty(numel).normal_(generator=g)
    assert torch.equal(mt19937.advance(start, mt19937.normal_words(numel)), g.get_state())


@pytest.mark.parametrize("numel, threads, min_part", [
    (200_000, 4, 16), (200_003, 3, 16), (624 * 7, 5, 16), (1248 * 40, 7, 16), (40, 2, 16),
    (20, 2, 16),          # too small to cut: one piece
    (3_000_000, 2, None),  # the default part size
])
@pytest.mark.parametrize("before", [0, 37])
def test_a_draw_in_parts_is_one_draw(numel, threads, min_part, before):
    g = torch.Generator().manual_seed(numel)
    torch.empty(before).normal_(generator=g) if before else None
    start = g.get_state()
    whole = torch.empty(numel).normal_(generator=g)
    end = g.get_state()
    g.set_state(start)
    cut = mt19937.parallel_normal_(torch.empty(numel), threads, g, min_part)
    assert torch.equal(cut, whole) and torch.equal(g.get_state(), end)
    pieces = mt19937.parts(numel, threads, min_part)
    assert sum(size for _, size in pieces) == numel and all(size % 16 == 0 for _, size in pieces[:-1])


def test_on_the_default_generator_a_draw_in_parts_is_torch_randn():
    torch.manual_seed(11)
    expected = torch.randn(500, 2048)
    after = torch.get_rng_state()
    torch.manual_seed(11)
    got = mt19937.parallel_normal_(torch.empty(500, 2048), 4, min_part=10_000)
    assert torch.equal(got, expected) and torch.equal(torch.get_rng_state(), after)


def test_a_failed_self_check_draws_in_one_piece_with_a_warning(monkeypatch, capsys):
    mt19937.parallel_draws_work.cache_clear()
    try:
        monkeypatch.setattr(mt19937, "advance", lambda state, words: state)  # a wrong jump
        assert not mt19937.parallel_draws_work()
        assert "parallel CPU draws differ" in capsys.readouterr().err
        torch.manual_seed(1)
        expected = torch.randn(4096)
        torch.manual_seed(1)
        assert torch.equal(mt19937.parallel_normal_(torch.empty(4096), 4, min_part=16), expected)
    finally:
        mt19937.parallel_draws_work.cache_clear()
    monkeypatch.undo()
    assert mt19937.parallel_draws_work()  # on this machine the parts are one draw


def test_other_tensors_are_drawn_in_one_piece():
    for t in (torch.empty(64, 64, dtype=torch.float64), torch.empty(64, 64).t()):
        g = torch.Generator().manual_seed(3)
        expected = t.clone().normal_(generator=g)
        g.manual_seed(3)
        assert torch.equal(mt19937.parallel_normal_(t, 4, g, min_part=16), expected)


def test_host_draw_threads():
    assert fast.host_draw_threads(3) == 3
    assert 1 <= fast.host_draw_threads(0) <= 8


def test_the_host_rng_bench_checks_and_records_each_thread_count(tmp_path, capsys):
    from bench import host_rng
    out = tmp_path / "host-rng.json"
    result = host_rng.main(["--rows=1024", "--threads=1,2,3", "--repeats=1", f"--out={out}"])
    assert [r["threads"] for r in result["rows"]] == [1, 2, 3] and [r["parts"] for r in result["rows"]] == [1, 2, 2]
    assert all(r["same_as_one_thread"] for r in result["rows"]) and result["self_check_passed"]
    assert '"values_per_s"' in out.read_text() and "same numbers" in capsys.readouterr().out
    with pytest.raises(SystemExit) as bad:
        __import__("cli").main_guard(host_rng.main, ["--threads=2,x"])
    assert bad.value.code == 2 and "option --threads" in capsys.readouterr().err


def test_a_forked_child_draws_in_parts_on_threads_of_its_own():
    import os
    mt19937.parallel_normal_(torch.empty(4096), 2, torch.Generator(), min_part=16)  # the parent's pool exists
    pid = os.fork()
    if pid == 0:  # the child: its pool must be new, else its draws wait forever on the parent's threads
        __import__("signal").alarm(30)  # so a regression fails instead of hanging
        g = torch.Generator().manual_seed(1)
        expected = torch.empty(4096).normal_(generator=g)
        g.manual_seed(1)
        os._exit(0 if torch.equal(mt19937.parallel_normal_(torch.empty(4096), 2, g, min_part=16), expected) else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
