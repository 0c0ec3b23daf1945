"""Relative positioning of class semantics against three anchor classes (the paper's GSModule)."""
import torch
from torch import nn
from torch.nn import functional as F


class RelativePositioning(nn.Module):
    r"""Global semantic vector from offsets to K anchor classes.

        s(a) = sum_k relu(W_k (a - v_k) + b_k)

    `v_k` are fixed anchor semantic vectors (buffers, chosen by
    `util.relative_positioning_anchors`); each branch maps to `out_dim`. Expressing a
    class by where it sits relative to the anchors, rather than by its raw vector,
    is what keeps the inter-class geometry the flow is conditioned on.
    Linear layers keep PyTorch's default initialisation.
    """

    def __init__(self, anchors: torch.Tensor, out_dim: int = 1024):
        super().__init__()
        if anchors.dim() != 2:
            raise ValueError(f"anchors must be (K, d), got shape {tuple(anchors.shape)}")
        self.register_buffer("anchors", anchors.clone().float())
        self.branches = nn.ModuleList(nn.Linear(anchors.shape[1], out_dim) for _ in range(anchors.shape[0]))

    def forward(self, semantics: torch.Tensor) -> torch.Tensor:
        out = 0
        for anchor, branch in zip(self.anchors, self.branches):
            out = out + F.relu(branch(semantics - anchor))
        return out
