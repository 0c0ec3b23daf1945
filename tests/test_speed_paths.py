"""The fast paths compute the straightforward paths' numbers (bench/ measures their speed;
nothing here is timed). Exactness with the literal reference run is in
test_reference_equivalence.py."""
import copy
import math

import numpy as np
import pytest
import torch

import evaluate
import fast
import runs
import train
import util
from config import Config, ConfigError, validate
from conftest import TEST_DEVICE
from models import ConditionalFlow, RelativePositioning

SHAPES = [(64, 48), (48,), (1024, 85), (37, 3), (300, 301)]


def adam_trajectory(make, shapes=SHAPES, steps=6):
    torch.manual_seed(0)
    params = [torch.nn.Parameter(0.01 * torch.randn(s)) for s in shapes]
    opt = make(params)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        for p in params:
            p.grad = torch.randn(p.shape, generator=g)
        opt.step()
        sched.step()
    return params, opt


@pytest.mark.parametrize("block", [1 << 18, 1000, 333])
def test_blocked_adam_is_bit_identical_to_torch_adam(block):
    ref, ref_opt = adam_trajectory(lambda p: torch.optim.Adam(p, lr=3e-4, weight_decay=3e-6))
    got, got_opt = adam_trajectory(lambda p: fast.BlockedAdam(p, block=block, lr=3e-4, weight_decay=3e-6))
    assert all(torch.equal(a, b) for a, b in zip(ref, got))
    for a, b in zip(ref, got):
        sa, sb = ref_opt.state[a], got_opt.state[b]
        assert all(torch.equal(sa[k], sb[k]) for k in ("step", "exp_avg", "exp_avg_sq"))


def test_blocked_adam_state_dict_interchangeable_with_torch_adam():
    ref, ref_opt = adam_trajectory(lambda p: torch.optim.Adam(p, lr=1e-3), steps=3)
    params = [torch.nn.Parameter(p.detach().clone()) for p in ref]
    resumed = fast.BlockedAdam(params, lr=1e-3)
    resumed.load_state_dict(copy.deepcopy(ref_opt.state_dict()))  # load_state_dict shares tensors
    for p, q in zip(ref, params):
        p.grad = torch.ones_like(p)
        q.grad = torch.ones_like(q)
    ref_opt.step(), resumed.step()
    assert all(torch.equal(a, b) for a, b in zip(ref, params))


def test_foreach_adam_equals_default_and_fused_is_an_option():
    ref, _ = adam_trajectory(lambda p: torch.optim.Adam(p, lr=3e-4, weight_decay=3e-6))
    fe, _ = adam_trajectory(lambda p: torch.optim.Adam(p, lr=3e-4, weight_decay=3e-6, foreach=True))
    assert all(torch.equal(a, b) for a, b in zip(ref, fe))
    cpu = torch.device("cpu")
    assert type(fast.flow_optimizer([torch.nn.Parameter(torch.ones(2))], 1e-3, 0.0, cpu)) is fast.BlockedAdam
    fused = fast.flow_optimizer([torch.nn.Parameter(torch.ones(2))], 1e-3, 0.0, cpu, fused=True)
    assert fused.defaults["fused"]
    fu, _ = adam_trajectory(lambda p: torch.optim.Adam(p, lr=3e-4, weight_decay=3e-6, fused=True))
    assert all(torch.allclose(a, b, rtol=0, atol=1e-6) for a, b in zip(ref, fu))  # ~1 ulp, not bit-identical


def small_models(dim=32, cond=16, sem_dim=6, n_unseen=5, seed=0):
    torch.manual_seed(seed)
    sem = torch.rand(n_unseen, sem_dim)
    flow = ConditionalFlow(dim, cond, num_blocks=2, hidden_dim=48).eval()
    with torch.no_grad():  # a flow far from the identity, so that differences would show
        for p in flow.parameters():
            p.mul_(20)
    rp = RelativePositioning(torch.rand(3, sem_dim), cond).eval()
    return flow, rp, sem


def literal_synthesis(flow, rp, sem, n, dim):
    """The reference: per class, z = randn(n, dim), condition = rp(tiled class vector), reverse."""
    out = []
    with torch.no_grad():
        for i in range(sem.shape[0]):
            out.append(flow.reverse(torch.randn(n, dim), rp(sem[i:i + 1].repeat(n, 1))))
    return torch.cat(out)


@pytest.mark.parametrize("n, chunk", [(15, 8192), (15, 32), (40, 50), (100, 64)])
def test_chunked_synthesis_equals_the_reference_per_class_synthesis(n, chunk):
    # Exact on CPU: a GEMM row's bits do not depend on the number of rows (>= 10 rows, see evaluate.GEMM_MIN_ROWS).
    flow, rp, sem = small_models()
    torch.manual_seed(7)
    expected = literal_synthesis(flow, rp, sem, n, 32)
    after_ref = torch.rand(3)
    torch.manual_seed(7)
    got = evaluate.synthesize_unseen(flow, rp, sem, n, torch.empty(sem.shape[0] * n, 32), chunk=chunk)
    assert torch.equal(got, expected)
    assert torch.equal(torch.rand(3), after_ref)  # the generator is left where the reference leaves it


def test_chunked_synthesis_equals_one_shot_synthesis():
    dev = torch.device(TEST_DEVICE)
    flow, rp, sem = small_models(dim=64, cond=32)
    flow, rp, sem = flow.to(dev), rp.to(dev), sem.to(dev)
    results = []
    for chunk in (10 ** 6, 64, 100):
        torch.manual_seed(3)
        results.append(evaluate.synthesize_unseen(flow, rp, sem, 60, torch.empty(300, 64, device=dev), chunk=chunk))
    assert all(torch.equal(results[0], r) for r in results[1:])


def test_bf16_synthesis_runs_and_stays_close():
    flow, rp, sem = small_models()
    with torch.no_grad():
        for p in flow.parameters():
            p.div_(20)  # back to the trained-flow scale, where bf16 is meant to be used
    torch.manual_seed(1)
    fp32 = evaluate.synthesize_unseen(flow, rp, sem, 40, torch.empty(200, 32))
    torch.manual_seed(1)
    bf16 = evaluate.synthesize_unseen(flow, rp, sem, 40, torch.empty(200, 32), bf16=True)
    assert bf16.dtype == torch.float32 and not torch.equal(fp32, bf16)
    assert torch.allclose(fp32, bf16, rtol=0.05, atol=0.05), (fp32 - bf16).abs().max()


def tiny_data(seed=0, n_train=120, dim=32):
    r = np.random.default_rng(seed)
    sem = np.abs(r.standard_normal((8, 6))).astype(np.float32)
    y = np.arange(n_train) % 5
    x = (sem[y] @ r.standard_normal((6, dim)) + 0.1 * r.standard_normal((n_train, dim))).astype(np.float32)
    xu = np.abs(r.standard_normal((30, dim))).astype(np.float32)
    return util.GZSLData("APY", "xlsa17", np.abs(x), y, np.abs(x[:40]), y[:40], xu, np.arange(30) % 3, sem[:5], sem[5:])


def test_bf16_training_step_runs_and_stays_close():
    data, losses = tiny_data(), {}
    for bf16 in (False, True):
        cfg = Config(dataset="APY", device=TEST_DEVICE, batchsize=32, num_coupling_layers=2, hidden_dim=64,
                     input_dim=16, bf16=bf16)
        runs.set_seeds(0)
        trainer = train.Trainer(cfg, data, torch.device(TEST_DEVICE))
        losses[bf16] = [tuple(float(v) for v in trainer.step(it)) for it in range(3)]
    for (n32, p32), (n16, p16) in zip(losses[False], losses[True]):
        assert math.isfinite(n16) and math.isfinite(p16)
        assert abs(n16 - n32) < 0.05 * abs(n32) + 0.02 and abs(p16 - p32) < 0.05 * abs(p32) + 0.02


@pytest.mark.parametrize("bf16, device", [(False, TEST_DEVICE), (True, "cpu")])
def test_classifier_training_equals_autograd_and_adam(bf16, device):
    """train_softmax's graph-free gradients + functional Adam: the weights that autograd and
    torch.optim.Adam reach on the same batches (bf16: under CPU autocast), bit for bit."""
    from models import SoftmaxClassifier
    g = torch.Generator().manual_seed(3)
    n, dim, classes, batch, epochs = 250, 64, 7, 32, 2   # 250 % 32 != 0: batches wrap over epochs
    x, y = torch.randn(n, dim, generator=g).abs(), torch.randint(0, classes, (n,), generator=g)
    x, y = x.to(device), y.to(device)

    torch.manual_seed(5)
    model = SoftmaxClassifier(dim, classes).to(device)  # built on the CPU, as train_softmax does
    opt = torch.optim.Adam(model.parameters(), lr=1e-2, betas=(0.5, 0.999))
    batches = evaluate.ReferenceBatches(n, batch, x.device)
    for _ in range(epochs * math.ceil(n / batch)):
        idx = batches.next()
        opt.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = torch.nn.functional.nll_loss(model(x[idx]), y[idx])
        loss.backward()
        opt.step()
    expected = [p.detach().clone() for p in model.parameters()]

    torch.manual_seed(5)
    got = []
    real_init = SoftmaxClassifier.__init__
    def keep(self, *a):  # noqa: E306 - capture the model train_softmax builds
        real_init(self, *a)
        got.append(self)
    try:
        SoftmaxClassifier.__init__ = keep
        evaluate.train_softmax(x, y, classes, {}, 1e-2, epochs, batch, bf16=bf16)
    finally:
        SoftmaxClassifier.__init__ = real_init
    for want, have in zip(expected, got[0].parameters()):
        assert torch.equal(want, have.detach())


def test_classifier_reports_epoch_times_and_bf16_runs():
    torch.manual_seed(0)
    x, y = torch.randn(300, 16), torch.arange(300) % 3
    x[torch.arange(300), y] += 6
    tests = {"t": (x[:60], y[:60])}
    fp32 = evaluate.train_softmax(x, y, 3, tests, 5e-2, 3, 50)
    bf16 = evaluate.train_softmax(x, y, 3, tests, 5e-2, 3, 50, bf16=True)
    assert all(h["seconds"] >= 0 for h in fp32) and len(bf16) == 3
    assert fp32[-1]["t"] > 0.9 and bf16[-1]["t"] > 0.9


def test_speed_options_validated_and_off_by_default():
    cfg = Config()
    assert not (cfg.bf16 or cfg.tf32 or cfg.fused_adam or cfg.device_noise)
    with pytest.raises(ConfigError, match="synth_chunk"):
        validate(Config(synth_chunk=16))
    assert fast.keep_freed_memory() in (True, False)


def test_bench_counts_the_flops_of_a_linear_layer():
    from bench.measure import MatmulRecorder, Replay
    lin = torch.nn.Linear(8, 4)
    x = torch.randn(5, 8, requires_grad=True)
    with MatmulRecorder() as rec:
        lin(x).sum().backward()
    assert rec.flops() == 3 * 2 * 5 * 8 * 4  # forward, grad of the input, grad of the weight
    Replay(rec.matmuls, torch.device("cpu"))()


def test_bench_projection_arithmetic_on_hand_made_figures():
    """The full-protocol projection scales unit measurements by the protocol's counts."""
    from bench.bench import AWA2, PROTOCOL, CUDA_ADAM_OPS, EAGER_OP_SECONDS, H200, projection
    P = PROTOCOL
    train_fp32 = dict(time=0.5, flops=1e11, optimizer_bytes=1e9, ops=1000, adam_ops=600, host_randn_seconds=1e-3)
    synth = dict(rows=1000, rows_per_s=2000.0, flops=1e12, ops=100, chunk=500, host_randn_per_s=1e9)
    eval_ = {k: dict(rows=rows, time=t, flops=1e10, gathered_bytes=1e9, ops=3000)
             for k, rows, t in (("gzsl", 523527, 2.0), ("zsl", 500000, 1.0))}
    eval_.update(synthesis=250.0, n_synthetic=500000)  # the evaluation stage's own synthesis: 2000 rows/s
    proj = projection({"train": {"fp32": train_fp32}, "synth": {"fp32": synth}, "eval": eval_})
    epochs = P["evaluations"] * P["classifier_epochs"]
    assert proj["here_seconds"]["flow training"] == P["iterations"] * 0.5
    # synthesis at the evaluation stage's rate, so the projected evaluations add up to the evaluation row
    assert math.isclose(proj["here_seconds"]["synthesis"], AWA2["unseen"] * P["n_sample"] * P["evaluations"] / 2000.0)
    assert math.isclose(proj["here_seconds"]["classifier"], epochs * (2.0 + 1.0))
    launches = P["iterations"] * (1000 - 600 + CUDA_ADAM_OPS) * EAGER_OP_SECONDS
    assert math.isclose(proj["launch_seconds"]["flow training"], launches)
    assert math.isclose(proj["host_seconds"]["flow training"], launches + P["iterations"] * 1e-3)
    device_flow = P["iterations"] * (1e11 / H200["fp32"] + 1e9 / H200["copy_bytes_per_s"])
    assert math.isclose(proj["h200_seconds"]["fp32"]["flow training"], max(device_flow, launches + P["iterations"] * 1e-3))
    assert math.isclose(proj["h200_seconds"]["fp32 --device_noise"]["flow training"], max(device_flow, launches))
