import torch

from conftest import TEST_DEVICE
from models import ConditionalFlow, RelativePositioning

DEV = torch.device(TEST_DEVICE)


def small_flow(**kw):
    torch.manual_seed(0)
    return ConditionalFlow(feature_dim=6, condition_dim=3, num_blocks=2, hidden_dim=16, **kw).double().to(DEV)


def test_reverse_inverts_forward():
    flow = small_flow()
    for p in flow.parameters():  # larger weights than the 0.01 init, so the test is not near-identity
        p.data.normal_(0, 0.5)
    x, c = torch.randn(5, 6, dtype=torch.double, device=DEV), torch.randn(5, 3, dtype=torch.double, device=DEV)
    z, _ = flow(x, c)
    assert (z - x).abs().max() > 1e-2
    assert torch.allclose(flow.reverse(z, c), x, atol=1e-10)


def test_log_det_matches_autograd_jacobian():
    flow = small_flow()
    for p in flow.parameters():
        p.data.normal_(0, 0.5)
    x, c = torch.randn(4, 6, dtype=torch.double, device=DEV), torch.randn(4, 3, dtype=torch.double, device=DEV)
    _, log_det = flow(x, c)
    for i in range(4):
        jac = torch.autograd.functional.jacobian(lambda row: flow(row[None], c[i:i + 1])[0][0], x[i])
        assert torch.allclose(log_det[i], torch.linalg.slogdet(jac).logabsdet, atol=1e-9)


def test_condition_changes_output():
    flow = small_flow()
    for p in flow.parameters():
        p.data.normal_(0, 0.5)
    x = torch.randn(3, 6, dtype=torch.double, device=DEV)
    z1, _ = flow(x, torch.zeros(3, 3, dtype=torch.double, device=DEV))
    z2, _ = flow(x, torch.ones(3, 3, dtype=torch.double, device=DEV))
    assert (z1 - z2).abs().max() > 1e-3


def test_parameters_reinitialised_small():
    flow = ConditionalFlow(feature_dim=64, condition_dim=8, num_blocks=2, hidden_dim=256)
    w = torch.cat([p.flatten() for p in flow.parameters()])
    assert abs(w.std().item() - 0.01) < 1e-3 and abs(w.mean().item()) < 1e-3


def test_flow_uses_freia_glow_blocks():
    import FrEIA.modules as Fm
    flow = ConditionalFlow(feature_dim=8, condition_dim=4, num_blocks=3, hidden_dim=8)
    assert [type(m) for m in flow.inn.module_list] == [Fm.GLOWCouplingBlock] * 3


def test_relative_positioning_sums_relu_branches():
    torch.manual_seed(0)
    anchors = torch.randn(3, 4)
    rp = RelativePositioning(anchors, out_dim=5)
    a = torch.randn(2, 4)
    expected = sum(torch.relu(b(a - v)) for v, b in zip(anchors, rp.branches))
    assert torch.allclose(rp(a), expected)
    assert len(list(rp.parameters())) == 6 and not any(p is rp.anchors for p in rp.parameters())
