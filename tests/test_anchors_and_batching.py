import numpy as np
import torch

import evaluate
import util


def test_anchors_min_max_median_of_cosine_row_sums():
    # unit vectors at chosen angles: row sums of the cosine matrix are easy to order by hand
    angles = np.deg2rad([0, 10, 20, 90, 180])
    sem = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    # row sums: 0deg 1.92, 10deg 2.16, 20deg 2.33 (cos 20+cos 10+1+cos 70+cos 160), 90deg 1.52, 180deg -1.92
    # sorted: 180, 90, 0, 10, 20 -> min = row 4, max = row 2, element floor(5/2) = 2 of the sort = row 0
    assert util.relative_positioning_anchors(sem) == [4, 2, 0]


def test_anchor_median_uses_element_floor_n_over_2():
    # four rows: sorted row sums s0 < s1 < s2 < s3, floor(4/2) = 2 -> the third smallest
    sem = np.array([[1.0, 0.0], [0.9, 0.1], [0.5, 0.5], [-1.0, 0.2]])
    sums = util.cosine_similarity(sem, sem).sum(1)
    third = int(np.argsort(sums)[2])
    assert util.relative_positioning_anchors(sem)[2] == third


def reference_batches(n, bs, n_batches, seed):
    """The authors' FeatDataLayer, row by row."""
    np.random.seed(seed)
    perm, cur, out = np.random.permutation(np.arange(n)), 0, []
    for _ in range(n_batches):
        if cur + bs >= n:
            perm, cur = np.random.permutation(np.arange(n)), 0
        out.append(np.array([perm[i] for i in range(cur, cur + bs)]))
        cur += bs
    return out


def test_epoch_sampler_matches_reference_rule_and_skips_tail():
    expected = reference_batches(23, 5, 12, seed=3)
    np.random.seed(3)
    sampler = util.EpochPermutationSampler(23, 5)
    got = [sampler.next() for _ in range(12)]
    assert all(np.array_equal(a, b) for a, b in zip(got, expected))
    # 4 batches per permutation (cursor 20 + 5 >= 23 starts a new one): 3 rows skipped
    assert len(set(np.concatenate(got[:4]))) == 20


def reference_classifier_batches(X, n_batches, bs):
    """The authors' CLASSIFIER.next_batch, permuting full copies of the rows."""
    n, idx_in_epoch, epochs, out = X.shape[0], 0, 0, []
    for _ in range(n_batches):
        start = idx_in_epoch
        if epochs == 0 and start == 0:
            X = X[torch.randperm(n)]
        if start + bs > n:
            epochs += 1
            rest = X[start:n]
            X = X[torch.randperm(n)]
            idx_in_epoch = bs - rest.shape[0]
            out.append(torch.cat((rest, X[:idx_in_epoch])))
        else:
            idx_in_epoch += bs
            out.append(X[start:idx_in_epoch])
    return out


def test_classifier_index_batches_equal_reference_row_permutation():
    X = torch.arange(17.0)[:, None]
    torch.manual_seed(5)
    expected = reference_classifier_batches(X, 15, 4)
    torch.manual_seed(5)
    batches = evaluate.ReferenceBatches(17, 4, torch.device("cpu"))
    got = [X[batches.next()] for _ in range(15)]
    assert all(torch.equal(a, b) for a, b in zip(got, expected))
