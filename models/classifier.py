"""The softmax classifier trained on real + synthetic features at evaluation time."""
import torch
from torch import nn


class SoftmaxClassifier(nn.Module):
    """One linear layer + log-softmax; Xavier-normal weights and zero bias."""

    def __init__(self, in_dim: int, n_classes: int):
        super().__init__()
        self.fc = nn.Linear(in_dim, n_classes)
        nn.init.xavier_normal_(self.fc.weight)
        nn.init.zeros_(self.fc.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(self.fc(x), dim=1)
