r"""GSMFlow-TMM's boundary-sample mining: train a relation network, then push each real
seen training feature toward the class boundary while keeping its label (docs/tmm.md).

The relation network (models.RelationNet) scores a feature x against the semantic vectors
of the C classes present in a batch: R(x) = [r(x, a_1), ..., r(x, a_C)] in (0, 1)^C.
With the one-hot target e_y of x's label among those C classes,

  relation training (Adam, `iterations` batches of the sampler):
      min_theta  MSE(R_theta(X), E) = 1/(B C) sum_b ||R(x_b) - e_{y_b}||^2

  mining (one pass, plain SGD on the features themselves, theta fixed), per batch X:
      X' <- X;  repeat `loops` times:
      X' <- X' - lr * grad_X' [ w_mse * MSE(R(X'), E) - w_ent * H(X') ]    (+ momentum, weight decay)
      H(X') = 1/B sum_b  -sum_c p_bc log p_bc,   p_b = softmax(R(x'_b))

The MSE term keeps x' matched to its own class; maximising the entropy of the softmax of the
scores makes the other classes' scores close to it: x' moves toward the decision boundary.
The mined x' keep the label of the x they started from and are appended to the training set.

"One pass" is the authors' loop: it continues the relation training's batch sampler from where
that stopped and runs until the sampler draws a new permutation, the batch taken from the new
permutation included (so the mined set is not one copy of each real row; `mined_batches`).

Memory: mining works one reference batch at a time (the chunk), so its working set is bounded
by that batch, whatever the size of the training set: about B*C*(D + d_a) floats for the pair
matrix, 2*B*C*hidden for the hidden layer, and as much again for the backward pass
(bench/bench_mining.py measures it). Runs on the device of `features` (the GPU when there is
one). Each batch is computed exactly as the authors compute it, so the numbers are theirs.
Imports nothing of ours (the relation network comes in as an argument).
"""
from __future__ import annotations

import time

import torch
from torch.nn import functional as F


def batch_targets(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(the sorted distinct labels of the batch, the one-hot (B, C) target of each row among them)."""
    classes, position = torch.unique(labels, sorted=True, return_inverse=True)
    onehot = torch.zeros(labels.shape[0], classes.shape[0], device=labels.device)
    return classes, onehot.scatter_(1, position.view(-1, 1), 1.0)


def softmax_entropy(scores: torch.Tensor) -> torch.Tensor:
    """Mean over rows of the entropy of softmax(scores) (the authors' entropy_loss)."""
    out = F.softmax(scores, dim=1) * F.log_softmax(scores, dim=1)
    return (-1.0 * out.sum(dim=1)).mean()


def mined_batches(n: int, batch_size: int, cursor: int) -> int:
    """How many batches the mining pass takes from a sampler at `cursor` (see the module doc)."""
    steps = 0
    while cursor + batch_size < n:
        cursor += batch_size
        steps += 1
    return steps + 1


def train_relation_net(net, sampler, features: torch.Tensor, labels: torch.Tensor, semantics: torch.Tensor,
                       iterations: int, lr: float, weight_decay: float) -> dict:
    """Adam on MSE(R(X), one-hot) over `iterations` batches of `sampler` (its state advances)."""
    optimizer = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=weight_decay)
    losses = []
    for _ in range(iterations):
        idx = torch.from_numpy(sampler.next()).to(features.device)
        x, y = features.index_select(0, idx), labels.index_select(0, idx)
        classes, onehot = batch_targets(y)
        loss = F.mse_loss(net(x, semantics.index_select(0, classes)), onehot)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.detach())
    return {"relation_iterations": iterations, "relation_loss_first": float(losses[0]),
            "relation_loss_last": float(losses[-1])}


def mine(net, sampler, features: torch.Tensor, labels: torch.Tensor, semantics: torch.Tensor, lr: float,
         loops: int, entropy_weight: float, mse_weight: float = 1.0, momentum: float = 0.0,
         weight_decay: float = 0.0) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """One mining pass (module doc): returns (mined features, their labels, statistics).

    `net` is left unchanged (its parameters get no gradient here). The statistics: batches,
    rows, mean entropy H of the scores at the first and at the last SGD step, and `kept`, the
    share of rows whose highest score is still their own class at the last step.
    """
    t0, device = time.time(), features.device
    n, bs = sampler.n, sampler.batch_size
    n_batches = mined_batches(n, bs, sampler.cursor)
    out = torch.empty(n_batches * bs, features.shape[1], device=device, dtype=features.dtype)
    out_y = torch.empty(n_batches * bs, dtype=labels.dtype, device=device)
    trainable = [p.requires_grad for p in net.parameters()]
    net.requires_grad_(False)  # gradients for the features only (the same numbers, less work)
    before, after, kept = [], [], []
    try:
        for b in range(n_batches):
            idx = torch.from_numpy(sampler.next()).to(device)
            x, y = features.index_select(0, idx), labels.index_select(0, idx)
            classes, onehot = batch_targets(y)
            sem = semantics.index_select(0, classes)
            moved = x.detach().clone().requires_grad_(True)
            sgd = torch.optim.SGD([moved], lr=lr, momentum=momentum, weight_decay=weight_decay)
            for step in range(loops):
                scores = net(moved, sem)
                if step == 0:
                    before.append(softmax_entropy(scores.detach()))
                loss = mse_weight * F.mse_loss(scores, onehot) - entropy_weight * softmax_entropy(scores)
                sgd.zero_grad()
                loss.backward()
                sgd.step()
            if loops:  # statistics of the last step's scores (no extra pass over the batch)
                after.append(softmax_entropy(scores.detach()))
                kept.append((scores.detach().argmax(1) == onehot.argmax(1)).float().mean())
            out[b * bs:(b + 1) * bs] = moved.detach()
            out_y[b * bs:(b + 1) * bs] = y
    finally:
        for p, flag in zip(net.parameters(), trainable):
            p.requires_grad_(flag)
    mean = lambda values: float(torch.stack(values).mean()) if values else float("nan")
    return out, out_y, {"mined_batches": n_batches, "mined_rows": n_batches * bs,
                        "entropy_before": mean(before), "entropy_after": mean(after), "kept": mean(kept),
                        "mining_seconds": round(time.time() - t0, 2)}
