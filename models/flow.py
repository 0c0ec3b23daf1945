"""Conditional invertible network over visual features (FrEIA GLOW coupling blocks)."""
import torch
from torch import nn

import FrEIA.framework as Ff
import FrEIA.modules as Fm


class ConditionalFlow(nn.Module):
    r"""K GLOW affine-coupling blocks, each conditioned on the global semantic vector `s`.

    Each block splits `x = [x1, x2]` in halves and, with the condition concatenated to
    each subnet's input,

        [s2, t2] = g2([x2, s]);  y1 = exp(c(s2)) * x1 + t2
        [s1, t1] = g1([y1, s]);  y2 = exp(c(s1)) * x2 + t1

    with the soft clamp `c(u) = clamp * 0.636 * atan(u / clamp)` (clamp = 1) and
    `log|det J| = sum c(s2) + sum c(s1)`. Both directions are exact; there is no
    permutation between blocks (as in the reference run).

    Subnets are `Linear(in, hidden) -> LeakyReLU(0.2) -> Linear(hidden, out)`. After
    construction every parameter is re-drawn as `0.01 * N(0, 1)` in registration order,
    which keeps the flow close to the identity at the start of training.
    """

    def __init__(self, feature_dim: int = 2048, condition_dim: int = 1024,
                 num_blocks: int = 3, hidden_dim: int = 2048, clamp: float = 1.0):
        super().__init__()
        self.feature_dim = feature_dim

        def subnet(dim_in: int, dim_out: int) -> nn.Module:
            return nn.Sequential(nn.Linear(dim_in, hidden_dim), nn.LeakyReLU(0.2),
                                 nn.Linear(hidden_dim, dim_out))

        self.inn = Ff.SequenceINN(feature_dim)
        for _ in range(num_blocks):
            self.inn.append(Fm.GLOWCouplingBlock, cond=0, cond_shape=(condition_dim,),
                            subnet_constructor=subnet, clamp=clamp)
        with torch.no_grad():
            for p in self.inn.parameters():
                p.copy_(0.01 * torch.randn_like(p))

    def forward(self, x: torch.Tensor, condition: torch.Tensor):
        """x -> (z, log|det dz/dx|) per row."""
        return self.inn(x, c=[condition])

    def reverse(self, z: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        """z -> x, the exact inverse of `forward`."""
        x, _ = self.inn(z, c=[condition], rev=True, jac=False)
        return x
