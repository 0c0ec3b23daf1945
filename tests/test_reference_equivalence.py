"""train.run must give exactly the numbers of a literal, step-by-step rendering of docs/method.md's
reference procedure (row-by-row batches, per-class tiled synthesis, a classifier that permutes
full copies of its training matrix). Any change to the order of random draws, the batching,
the loss or the selection rule breaks this equality."""
import json
import math

import numpy as np
import pytest
import torch
from sklearn.metrics.pairwise import cosine_similarity

import synthetic
import train
import util
from models import ConditionalFlow, RelativePositioning, SoftmaxClassifier
from test_end_to_end import tiny_config


def literal_classifier(train_X, train_Y, n_classes, tests, lr, epochs, bs):
    model = SoftmaxClassifier(train_X.shape[1], n_classes)
    opt = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.5, 0.999))
    n, index_in_epoch, epochs_completed, history = train_X.shape[0], 0, 0, []

    def next_batch():
        nonlocal train_X, train_Y, index_in_epoch, epochs_completed
        start = index_in_epoch
        if epochs_completed == 0 and start == 0:
            perm = torch.randperm(n)
            train_X, train_Y = train_X[perm], train_Y[perm]
        if start + bs > n:
            epochs_completed += 1
            rest_X, rest_Y = train_X[start:n], train_Y[start:n]
            perm = torch.randperm(n)
            train_X, train_Y = train_X[perm], train_Y[perm]
            index_in_epoch = bs - rest_X.shape[0]
            return (torch.cat((rest_X, train_X[:index_in_epoch])), torch.cat((rest_Y, train_Y[:index_in_epoch])))
        index_in_epoch += bs
        return train_X[start:index_in_epoch], train_Y[start:index_in_epoch]

    for _ in range(epochs):
        for _ in range(0, n, bs):
            model.zero_grad()
            x, y = next_batch()
            loss = torch.nn.NLLLoss()(model(x), y)
            loss.backward()
            opt.step()
        accs = {}
        for name, (X, Y) in tests.items():
            pred = torch.LongTensor(Y.size())
            with torch.no_grad():
                for s in range(0, X.shape[0], bs):
                    _, pred[s:s + bs] = torch.max(model(X[s:s + bs]).data, 1)
            p, y = pred.numpy(), Y.numpy()
            accs[name] = np.asarray([(p[y == c] == c).mean() for c in np.unique(y)]).mean()
        history.append(accs)
    return history


def literal_reference(cfg, d):
    """docs/method.md (the contract), line by line, on the CPU."""
    np.random.seed(cfg.manualSeed), torch.manual_seed(cfg.manualSeed)
    n, B, D = len(d.train_label), cfg.batchsize, d.feature_dim
    perm, cur = np.random.permutation(np.arange(n)), 0
    pool = d.seen_semantics if cfg.anchors == "seen" else d.all_semantics
    sums = cosine_similarity(pool, pool).sum(-1)
    medi = np.argwhere(sums == np.sort(sums)[int(sums.shape[0] / 2)])
    vertices = torch.from_numpy(np.stack((pool[np.argmin(sums)], pool[np.argmax(sums)], pool[int(medi[0, 0])])))
    flow = ConditionalFlow(D, cfg.input_dim, cfg.num_coupling_layers, cfg.hidden_dim)
    sm = RelativePositioning(vertices, cfg.input_dim)
    opt = torch.optim.Adam(list(flow.parameters()) + list(sm.parameters()), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.StepLR(opt, gamma=cfg.lr_gamma, step_size=15)
    centroid = torch.from_numpy(np.stack([d.train_feature[d.train_label == i].mean(0) for i in range(d.n_seen)]))
    train_feature, train_label = torch.from_numpy(d.train_feature), torch.from_numpy(d.train_label)
    niter, iters, rows = (n // B) * cfg.gen_nepoch, math.ceil(n / B), []
    for it in range(niter + 1):
        flow.zero_grad(), sm.zero_grad()
        if cur + B >= n:
            perm, cur = np.random.permutation(np.arange(n)), 0
        inds = perm[cur:cur + B]
        cur += B
        X = torch.from_numpy(np.array([d.train_feature[i] for i in inds]))
        C = torch.from_numpy(np.array([d.seen_semantics[i, :] for i in d.train_label[inds]]).astype("float32"))
        sr = sm(C)
        z = cfg.pi * torch.randn(B, D)
        mask = torch.FloatTensor(D).uniform_() > cfg.dropout
        z_, log_jac_det = flow(X + mask * z, sr)
        loss = torch.mean(z_ ** 2) / 2 - torch.mean(log_jac_det) / D
        loss.backward(retain_graph=True)
        with torch.no_grad():
            sr = sm(torch.from_numpy(d.seen_semantics))
        x_ = flow.reverse(torch.zeros(d.n_seen, D), sr)
        (cfg.prototype * torch.nn.MSELoss()(x_, centroid)).backward()
        opt.step()
        if it % iters == 0:
            sched.step()
        if it % cfg.evl_interval == 0 and it > cfg.eval_start:
            rows.append(literal_evaluation(flow, sm, d, cfg, train_feature, train_label, it)[0])
    return rows


def literal_evaluation(flow, sm, d, cfg, train_feature, train_label, it):
    """One evaluation of the reference: synthesis per unseen class, the GZSL classifier, the best-H
    epoch. Returns the row, and the synthetic features and labels (the TMM literal's ZSL uses them)."""
    D = d.feature_dim
    gen = torch.FloatTensor(d.n_unseen * cfg.nSample, D)
    with torch.no_grad():
        for i in range(d.n_unseen):
            text = torch.from_numpy(np.tile(d.unseen_semantics[i].astype("float32"), (cfg.nSample, 1)))
            gen[i * cfg.nSample:(i + 1) * cfg.nSample] = flow.reverse(torch.randn(cfg.nSample, D), sm(text))
    gen_label = torch.from_numpy(np.repeat(np.arange(d.n_unseen), cfg.nSample))
    hist = literal_classifier(torch.cat((train_feature, gen)), torch.cat((train_label, gen_label + d.n_seen)),
                              d.n_seen + d.n_unseen,
                              {"seen": (torch.from_numpy(d.test_seen_feature), torch.from_numpy(d.test_seen_label)),
                               "unseen": (torch.from_numpy(d.test_unseen_feature),
                                          torch.from_numpy(d.test_unseen_label + d.n_seen))},
                              cfg.classifier_lr, cfg.classifier_epochs, cfg.classifier_batch)
    best = (0, 0, 0)
    for h in hist:
        H = 2 * h["seen"] * h["unseen"] / (h["seen"] + h["unseen"])
        if H > best[2]:
            best = (h["unseen"], h["seen"], H)
    row = {"iteration": it, "U": 100 * best[0], "S": 100 * best[1], "H": 100 * best[2],
           "U_last": 100 * hist[-1]["unseen"], "S_last": 100 * hist[-1]["seen"]}
    return row, gen, gen_label


@pytest.mark.parametrize("anchors", ["all", "seen"])
def test_run_equals_literal_reference(tmp_path, anchors):
    synthetic.generate(tmp_path / "APY", "APY", seed=4, per_seen=(12, 4), per_unseen=6, feature_dim=32, noise=2.0)
    cfg = tiny_config(tmp_path, tmp_path / "out", device="cpu", anchors=anchors, gen_nepoch=60, batchsize=50, eval_start=30,
                      evl_interval=40, nSample=15, classifier_epochs=4, classifier_batch=100, hidden_dim=64,
                      input_dim=32, lr_gamma=0.5, pi=0.1)
    train.run(cfg)
    (run_dir,) = (tmp_path / "out" / "APY").iterdir()
    got = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
    expected = literal_reference(cfg, util.load_dataset(str(tmp_path), "APY"))
    assert [r["iteration"] for r in got] == [40, 80, 120, 160, 200, 240] == [r["iteration"] for r in expected]
    for g, e in zip(got, expected):
        assert {k: g[k] for k in e} == e  # exact: same draws, same arithmetic
