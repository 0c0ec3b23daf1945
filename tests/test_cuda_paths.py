"""The CUDA paths that take the host off the GPU's critical path (fast.py) keep every number.

On the CPU: which path a run takes, the loss-reading schedule, the noise drawn ahead (the same
draws and generator states as drawn step by step, on one thread or in parts on several), the chunk sizes. Under
GSMFLOW_TEST_DEVICE=cuda (bench/gpu_check.sh, bench/gpu/run_full.sh): the graph path equals the
eager path bit for bit, for flow iterations, classifier epochs and a whole tiny run.
"""
import dataclasses
import json

import pytest
import torch

import evaluate
import fast
import mt19937
import runs
import train
from config import Config, ConfigError, validate
from conftest import TEST_DEVICE
from test_end_to_end import tiny_config
from models import ConditionalFlow, RelativePositioning
from test_speed_paths import tiny_data
from test_trust import apy, poison_flow_after  # noqa: F401 (apy: the module's APY stand-in fixture)

CUDA = torch.device("cuda")
on_cuda = pytest.mark.skipif(not TEST_DEVICE.startswith("cuda"), reason="device test: GSMFLOW_TEST_DEVICE=cuda")


# ----------------------------------------------------------------------------- which path

def test_graphs_only_on_cuda_and_never_with_bf16_or_when_switched_off():
    assert not fast.use_cuda_graphs(Config(), torch.device("cpu"))
    assert fast.use_cuda_graphs(Config(), CUDA)
    assert not fast.use_cuda_graphs(Config(cuda_graphs=False), CUDA)
    assert not fast.use_cuda_graphs(Config(bf16=True), CUDA)


def test_the_cpu_trainer_and_evaluator_take_the_eager_path():
    cfg = Config(dataset="APY", device="cpu", batchsize=32, num_coupling_layers=2, hidden_dim=64, input_dim=16)
    data = tiny_data()
    trainer = train.Trainer(cfg, data, torch.device("cpu"))
    assert trainer.gradients == trainer.backward and not isinstance(trainer.noise, fast.PrefetchedNoise)
    assert type(trainer.optimizer) is fast.BlockedAdam
    evaluator = evaluate.Evaluator(cfg, data, torch.device("cpu"))
    assert not evaluator.cuda_graphs and evaluator.synth_chunk == evaluate.CPU_SYNTH_CHUNK == 2048


# ----------------------------------------------------------------------------- reading the losses

def deferred_losses(monkeypatch):
    """Runs read their losses on the CPU as they do on CUDA: only where they need them."""
    class Deferred(train.LossLog):
        def __init__(self, device, capacity):
            super().__init__(device, capacity)
            self.every_iteration = False
    monkeypatch.setattr(train, "LossLog", Deferred)


def test_losses_are_read_where_the_run_needs_them():
    log = train.LossLog(torch.device("cpu"), 6)
    assert log.every_iteration and log.due(7, False, 5, 100)  # on a CPU reading costs nothing
    log.every_iteration = False  # as on CUDA
    due = [it for it in range(0, 23) if log.due(it, it in (12, 18), 5, 22)]
    assert due == [5, 10, 12, 15, 18, 20, 22]  # disp_interval, evaluations, the end
    for it in range(11, 16):
        log.add(it, torch.tensor(float(it)), torch.tensor(-float(it)))
    assert log.read() == [(it, float(it), -float(it)) for it in range(11, 16)]
    log.add(16, torch.tensor(1.5), torch.tensor(2.5))
    assert log.read() == [(16, 1.5, 2.5)]


def test_deferred_reading_gives_the_same_run(apy, tmp_path, monkeypatch):
    cfg = tiny_config(apy, tmp_path / "a", gen_nepoch=10, eval_start=29, evl_interval=30, disp_interval=7,
                      eval_zsl=False, classifier_epochs=3)
    every = train.run(cfg)
    deferred_losses(monkeypatch)
    later = train.run(dataclasses.replace(cfg, out_dir=str(tmp_path / "b")))
    for name in ("losses.jsonl", "metrics.jsonl"):
        rows = [runs.read_jsonl(tmp_path / s["run_dir"] / name) for s in (every, later)]
        assert [{k: v for k, v in r.items() if k != "eval_seconds"} for r in rows[0]] == \
            [{k: v for k, v in r.items() if k != "eval_seconds"} for r in rows[1]]
    assert [r["iteration"] for r in runs.read_jsonl(tmp_path / later["run_dir"] / "losses.jsonl")] == \
        list(range(7, 61, 7))


def test_a_non_finite_loss_read_later_names_its_iteration_and_the_last_good_checkpoint(apy, tmp_path, monkeypatch):
    poison_flow_after(monkeypatch, 95)
    deferred_losses(monkeypatch)
    cfg = tiny_config(apy, tmp_path, gen_nepoch=30, eval_start=29, evl_interval=30, eval_zsl=False)  # disp 100
    with pytest.raises(runs.NonFiniteError, match=r"iteration 96: loss is not finite \(nll nan, prototype nan\); "
                                                  r"found reading the losses of iterations 91-100; stopped\. "
                                                  r"Last good checkpoint: .*last\.pt \(iteration 90\)"):
        train.run(cfg)
    (run_dir,) = (tmp_path / "APY").iterdir()
    assert torch.load(run_dir / "last.pt", weights_only=True)["iteration"] == 90


# ----------------------------------------------------------------------------- the CPU generator's draws, ahead

@pytest.mark.parametrize("rows, k", [(256, 8), (200, 3)])  # the flow's batch (AWA2; TMM's relation batch)
def test_one_bulk_draw_is_the_per_step_draws_of_the_flow(rows, k):
    dim = 2048
    assert fast.draws_concatenate(rows * dim)
    torch.manual_seed(1)
    steps = [torch.randn(rows, dim) for _ in range(k)]
    after_steps = torch.get_rng_state()
    torch.manual_seed(1)
    bulk = torch.randn(k * rows, dim).view(k, rows, dim)
    assert all(torch.equal(a, b) for a, b in zip(steps, bulk))
    assert torch.equal(torch.get_rng_state(), after_steps)


def test_draws_of_other_sizes_do_not_concatenate_so_they_are_not_joined():
    assert not fast.draws_concatenate(5 * 7)
    torch.manual_seed(1)
    steps = torch.cat([torch.randn(5, 7) for _ in range(4)])
    torch.manual_seed(1)
    assert not torch.equal(steps, torch.randn(20, 7))  # torch redraws the last 16 values of each draw
    assert fast.split_draw(40, 5, 16) == [40] and fast.split_draw(40, 32, 16) == [16, 16, 8]


@pytest.mark.parametrize("threads", [1, 3])  # 3: each draw in parts on threads (mt19937.py)
@pytest.mark.parametrize("n, dim, max_rows", [(40, 32, 16), (40, 5, 16), (7, 2048, 8192), (700, 64, 8192)])
def test_host_normals_in_pieces_are_the_per_class_draws(monkeypatch, n, dim, max_rows, threads):
    monkeypatch.setattr(mt19937, "MIN_PART", 16)  # parts of any size here
    pieces = fast.split_draw(n, dim, max_rows) * 3
    torch.manual_seed(2)
    expected = torch.cat([torch.randn(n, dim) for _ in range(3)]).view(-1)
    after = torch.get_rng_state()
    torch.manual_seed(2)
    draws = fast.HostNormals([rows * dim for rows in pieces], pin=False, threads=threads)
    got = []
    for _ in pieces:
        got.append(draws.take().clone())
        draws.release()
    assert torch.equal(torch.cat(got), expected) and torch.equal(torch.get_rng_state(), after)


@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("rows, dim", [(4, 32), (3, 5)])  # joined draws (steps of 3), and single ones
def test_prefetched_noise_is_the_per_step_noise_and_stops_where_others_draw(monkeypatch, rows, dim, threads):
    monkeypatch.setattr(mt19937, "MIN_PART", 16)
    stops = [4, 9, 10]  # an evaluation after iterations 4 and 9, the run ends at 10
    torch.manual_seed(3)
    expected, states = {}, {}
    for it in range(11):
        expected[it] = torch.randn(rows, dim)
        if it in stops:
            states[it] = torch.get_rng_state()
            torch.rand(5)  # what an evaluation draws
    torch.manual_seed(3)
    noise = fast.PrefetchedNoise(rows, dim, torch.device("cpu"), lambda it: fast.next_stop(stops, it), steps=3,
                                 threads=threads)
    assert noise.steps == (3 * threads if fast.draws_concatenate(rows * dim) else 1)
    for it in range(11):
        assert torch.equal(noise(it), expected[it]), it
        if it in stops:
            assert noise.ahead == 0 and torch.equal(torch.get_rng_state(), states[it]), it
            torch.rand(5)
        else:
            assert noise.ahead > 0


@pytest.mark.parametrize("validation", [False, True])
def test_a_run_with_the_noise_drawn_ahead_is_the_same_run(apy, tmp_path, monkeypatch, validation):
    """The span logic inside a real run: evaluations draw on the CPU generator between spans and
    checkpoints save its state there. On the validation split the evaluations are the scaled plan's."""
    cfg = tiny_config(apy, tmp_path / "a", gen_nepoch=10, eval_start=29, evl_interval=30, classifier_epochs=3,
                      validation=validation)
    plain = train.run(cfg)
    real_init = train.Trainer.__init__

    def prefetching(self, cfg, data, device, mined=None):
        real_init(self, cfg, data, device, mined)
        self.noise = self.noise_source(prefetch=True, n_train=len(data.train_label), steps=4)
    monkeypatch.setattr(train.Trainer, "__init__", prefetching)
    ahead = train.run(dataclasses.replace(cfg, out_dir=str(tmp_path / "b")))
    assert ahead["paper"] == plain["paper"] and ahead["last"] == plain["last"]
    states = [torch.load(tmp_path / s["run_dir"] / "last.pt", weights_only=True)["trainer"]["rng"]["torch"]
              for s in (plain, ahead)]
    assert torch.equal(*states)


def test_a_checkpoint_is_refused_while_noise_is_drawn_ahead():
    cfg = Config(dataset="APY", device="cpu", batchsize=32, num_coupling_layers=2, hidden_dim=64, input_dim=16,
                 gen_nepoch=5, eval_start=0, evl_interval=10)
    data = tiny_data()
    runs.set_seeds(0)
    trainer = train.Trainer(cfg, data, torch.device("cpu"))
    trainer.noise = trainer.noise_source(prefetch=True, n_train=len(data.train_label), steps=2)
    trainer.step(0)
    with pytest.raises(RuntimeError, match="drawn noise for later iterations"):
        trainer.state_dict()
    for it in range(1, 11):
        trainer.step(it)
    assert trainer.state_dict()["next_iteration"] == 11  # iteration 10 evaluates: the span ends there


# ----------------------------------------------------------------------------- chunks

def test_chunks_are_the_cpu_sizes_on_a_cpu_and_sized_from_free_memory_on_cuda(monkeypatch):
    assert fast.chunk_rows(torch.device("cpu"), 1000, 2048) == 2048
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (8 << 30, 16 << 30))
    assert fast.chunk_rows(CUDA, 1 << 10, 2048) == (1 << 30) // (1 << 10)  # CHUNK_BYTES bounds it
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (1 << 30, 16 << 30))
    assert fast.chunk_rows(CUDA, 1 << 10, 2048) == (1 << 28) // (1 << 10)  # a quarter of the free memory
    assert fast.chunk_rows(CUDA, 1 << 20, 2048) == 2048  # never below the CPU's size
    awa2 = evaluate.synthesis_chunk(CUDA, 0, 2048, 1024, 2048)
    assert awa2 == (1 << 28) // (4 * (6 * 2048 + 1024 + 2 * 2048))
    assert evaluate.synthesis_chunk(CUDA, 512, 2048, 1024, 2048) == 512  # --synth_chunk wins
    assert evaluate.synthesis_chunk(torch.device("cpu"), 0, 2048, 1024, 2048) == 2048


def test_synth_chunk_is_zero_for_the_device_or_at_least_32():
    assert Config().synth_chunk == 0 and validate(Config(synth_chunk=32)).synth_chunk == 32
    with pytest.raises(ConfigError, match="option --synth_chunk: must be 0 .* or >= 32, got 16"):
        validate(Config(synth_chunk=16))


# ----------------------------------------------------------------------------- device tests (CUDA)

def flow_config(**kw):
    return Config(dataset="APY", device=TEST_DEVICE, batchsize=32, num_coupling_layers=2, hidden_dim=64,
                  input_dim=16, gen_nepoch=40, eval_start=10 ** 6, **kw)


def train_steps(cfg, data, steps):
    """A trainer after `steps` iterations, its losses, and the generators' states after them."""
    runs.set_seeds(0)
    trainer = train.Trainer(cfg, data, torch.device(TEST_DEVICE))
    losses = [torch.stack(trainer.step(it)).cpu() for it in range(steps)]
    return trainer, losses, (torch.get_rng_state(), torch.cuda.get_rng_state())


@on_cuda
@pytest.mark.parametrize("shape", ["tiny", "AWA2"])
def test_graphed_flow_iterations_equal_eager_ones_bit_for_bit(shape):
    if shape == "tiny":
        data, kw, steps = tiny_data(), {}, 8
    else:  # AWA2's flow: 2048-d features, 3 blocks of 2048-wide subnets, 1024-d condition, batch 256
        data = tiny_data(n_train=600, dim=2048)
        kw, steps = dict(batchsize=256, num_coupling_layers=3, hidden_dim=2048, input_dim=1024), 6
    results = {graphs: train_steps(flow_config(cuda_graphs=graphs, **kw), data, steps) for graphs in (False, True)}
    (eager, eager_losses, eager_rng), (graphed, graphed_losses, graphed_rng) = results[False], results[True]
    assert graphed.gradients.graph is not None and graphed.gradients.failed is None  # it was captured
    assert all(torch.equal(a, b) for a, b in zip(eager_losses, graphed_losses))
    assert all(torch.equal(a, b) for a, b in zip(eager.params, graphed.params))
    for a, b in zip(eager.optimizer.state.values(), graphed.optimizer.state.values()):
        assert torch.equal(a["exp_avg"], b["exp_avg"]) and torch.equal(a["exp_avg_sq"], b["exp_avg_sq"])
    assert all(torch.equal(a, b) for a, b in zip(eager_rng, graphed_rng))


@on_cuda
def test_graphed_classifier_epochs_equal_eager_ones_bit_for_bit():
    g = torch.Generator().manual_seed(3)
    n, dim, classes, batch = 2500, 256, 12, 128  # 2500 % 128 != 0: batches wrap over epochs
    x = torch.randn(n, dim, generator=g).abs().to(CUDA)
    y = torch.randint(0, classes, (n,), generator=g).to(CUDA)
    tests = {"t": (x[:400], y[:400])}
    histories = {}
    for graphs in (False, True):
        torch.manual_seed(5)
        histories[graphs] = evaluate.train_softmax(x, y, classes, tests, 1e-3, 3, batch, cuda_graphs=graphs)
    strip = lambda h: [{k: v for k, v in e.items() if k != "seconds"} for e in h]
    assert strip(histories[False]) == strip(histories[True])


@on_cuda
@pytest.mark.parametrize("threads", [1, 4])  # 4: each draw in parts on threads (mt19937.py)
def test_cuda_noise_drawn_ahead_is_the_per_step_noise_and_synthesis_draws_are_the_per_class_ones(threads):
    stops = [4, 9, 70]
    torch.manual_seed(3)
    expected = [torch.randn(256, 2048) for _ in range(71)]
    torch.manual_seed(3)
    noise = fast.PrefetchedNoise(256, 2048, CUDA, lambda it: fast.next_stop(stops, it), threads=threads)
    assert all(torch.equal(noise(it).cpu(), expected[it]) for it in range(71))
    out = torch.empty(3 * 9000, 2048, device=CUDA)
    torch.manual_seed(4)
    per_class = torch.cat([torch.randn(9000, 2048) for _ in range(3)])
    after = torch.get_rng_state()
    torch.manual_seed(4)
    drawn = list(evaluate.unseen_noise(out, 9000, threads=threads))
    assert drawn == ([8192, 9000, 17192, 18000, 26192, 27000] if threads == 1 else [9000, 18000, 27000])
    assert torch.equal(out.cpu(), per_class) and torch.equal(torch.get_rng_state(), after)


@on_cuda
@pytest.mark.parametrize("option", ["bf16", "tf32"])
def test_the_precision_options_change_a_flow_step_on_cuda(option):
    """The 2026-12-04 gpu_check gave the very same demo numbers in fp32, --tf32 and --bf16: check that
    each option reaches the GPU's arithmetic (AWA2's shapes, where TF32 and bf16 round differently)."""
    data = tiny_data(n_train=600, dim=2048)
    kw = dict(batchsize=256, num_coupling_layers=3, hidden_dim=2048, input_dim=1024)
    losses = {}
    try:
        for on in (False, True):
            cfg = flow_config(**kw, **{option: on})
            fast.apply_speed_options(cfg)
            losses[on] = train_steps(cfg, data, 2)[1]
    finally:
        fast.apply_speed_options(Config())
    assert not all(torch.equal(a, b) for a, b in zip(losses[False], losses[True]))


@on_cuda
def test_device_sized_chunks_give_the_cpu_sized_chunks_numbers_on_cuda():
    torch.manual_seed(0)  # AWA2's flow: 2048-d features, 3 blocks of 2048-wide subnets, 1024-d condition
    flow = ConditionalFlow(2048, 1024, 3, 2048).to(CUDA).eval()
    rp, sem = RelativePositioning(torch.rand(3, 85), 1024).to(CUDA).eval(), torch.rand(4, 85, device=CUDA)
    auto = evaluate.synthesis_chunk(CUDA, 0, 2048, 1024, 2048)
    assert auto > 2048
    results = []
    for chunk in (2048, auto):
        torch.manual_seed(6)
        results.append(evaluate.synthesize_unseen(flow, rp, sem, 3000, torch.empty(12000, 2048, device=CUDA), chunk))
    assert torch.equal(*results)
    from models import SoftmaxClassifier
    model = SoftmaxClassifier(2048, 50).to(CUDA)
    x = results[0] / results[0].norm(dim=1, keepdim=True)
    by_batch = torch.cat([torch.max(model(x[i:i + 1200]), 1)[1] for i in range(0, len(x), 1200)]).cpu().numpy()
    assert (evaluate.predict(model, x, 1200) == by_batch).all()


@on_cuda
def test_a_tiny_cuda_run_gives_the_eager_paths_numbers(apy, tmp_path, monkeypatch):
    """The CUDA default (graphs, noise ahead, device-sized chunks) against the eager CUDA path of
    before (graphs off, CPU-sized chunks): every metric and logged loss, bit for bit."""
    cfg = tiny_config(apy, tmp_path / "default", gen_nepoch=20, eval_start=29, evl_interval=30, disp_interval=10,
                      classifier_epochs=5)
    default = train.run(cfg)
    monkeypatch.setattr(evaluate, "chunk_rows", lambda device, bytes_per_row, cpu_rows: cpu_rows)
    eager = train.run(dataclasses.replace(cfg, out_dir=str(tmp_path / "eager"), cuda_graphs=False, synth_chunk=2048))
    for name in ("metrics.jsonl", "losses.jsonl"):
        rows = [[{k: v for k, v in r.items() if k != "eval_seconds"} for r in runs.read_jsonl(tmp_path / s["run_dir"] / name)]
                for s in (default, eager)]
        assert rows[0] == rows[1], name
    assert json.loads((tmp_path / default["run_dir"] / "config.json").read_text())["cuda_graphs"] is True
