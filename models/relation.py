"""The relation network of GSMFlow-TMM's boundary-sample mining (docs/tmm.md)."""
import torch
from torch import nn


class RelationNet(nn.Module):
    r"""Scores how well a visual feature matches each of a set of class semantic vectors.

        r(x, a_c) = sigmoid(w2 . relu(W1 [x; a_c] + b1) + b2)   in (0, 1)

    `forward(x, a)` takes B features and C class vectors and returns the (B, C) matrix of
    scores over all pairs. The pairs are formed as the authors' RelationNetV2 forms them:
    row b*C + c of the pair matrix is [x_b; a_c], so the first layer sees B*C rows of
    `feature_dim + semantic_dim` values (the numbers depend on that layout; do not
    factor W1 into its x and a halves). Linear layers keep PyTorch's default initialisation,
    drawn fc1 then fc2.
    """

    def __init__(self, semantic_dim: int, feature_dim: int = 2048, hidden_dim: int = 2048):
        super().__init__()
        self.fc1 = nn.Linear(feature_dim + semantic_dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, 1)

    def forward(self, x: torch.Tensor, semantics: torch.Tensor) -> torch.Tensor:
        n_rows, n_classes = x.shape[0], semantics.shape[0]
        a_ext = semantics.unsqueeze(0).repeat(n_rows, 1, 1)
        x_ext = torch.transpose(x.unsqueeze(0).repeat(n_classes, 1, 1), 0, 1)
        pairs = torch.cat((x_ext, a_ext), 2).view(-1, x.shape[1] + semantics.shape[1])
        scores = torch.sigmoid(self.fc2(torch.relu(self.fc1(pairs))))
        return scores.view(n_rows, n_classes)
