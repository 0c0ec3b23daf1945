"""The GSMFlow-TMM variant (docs/tmm.md): mining, the mined set, a tiny run, resume, and a literal
re-statement of the authors' TMM training start (their order of random draws) checked bit for bit."""
import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import scipy.io as sio
import torch
from sklearn.metrics.pairwise import cosine_similarity
from torch import nn

import mining
import runs
import synthetic
import train
import util
from config import Config
from models import ConditionalFlow, RelationNet, RelativePositioning
from test_end_to_end import tiny_config
from test_reference_equivalence import literal_classifier, literal_evaluation


@pytest.fixture(scope="module")
def apy(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    synthetic.generate(root / "APY", "APY", seed=3, per_seen=(20, 5), per_unseen=10, feature_dim=64, noise=3.0)
    return root


def tmm_config(root, out, **kw):
    base = dict(variant="tmm", relation_batchsize=64, relation_nepoch=3, relation_lr=1e-3, loops_adv=5, aug_lr=5.0,
                entropy_weight=10.0)
    base.update(kw)
    return tiny_config(root, out, **base)


# ----------------------------------------------------------------------------- mining

def hand_made(seed=0, n_per_class=40, n_classes=3, dim=8):
    """Three well-separated classes; class c's features sit around 2 * e_c, its semantics are one-hot."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n_classes).repeat_interleave(n_per_class)
    features = 2.0 * torch.eye(n_classes, dim)[labels] + 0.3 * torch.randn(len(labels), dim, generator=g)
    return features, labels, torch.eye(n_classes, 4)


def test_mining_keeps_labels_and_raises_the_relation_entropy():
    torch.manual_seed(0), np.random.seed(0)
    features, labels, semantics = hand_made()
    net = RelationNet(semantics.shape[1], features.shape[1], 32)
    sampler = util.EpochPermutationSampler(len(labels), 30)
    stats = mining.train_relation_net(net, sampler, features, labels, semantics, 300, 1e-2, 0.0)
    assert stats["relation_loss_last"] < 0.2 * stats["relation_loss_first"]
    before = [(p.detach().clone(), p.grad.clone()) for p in net.parameters()]
    sampler.cursor = 0  # a pass from the start: 3 batches + the first batch of a new permutation
    order = sampler.perm.copy()
    x, y, st = mining.mine(net, sampler, features, labels, semantics, lr=50.0, loops=20, entropy_weight=2.0)
    assert st["mined_batches"] == 4 and x.shape == (120, 8) and y.shape == (120,)
    assert torch.equal(y[:90], labels[order[:90]])  # each mined row keeps the label of the row it came from
    assert torch.equal(y[90:], labels[sampler.perm[:30]])
    assert not torch.equal(x[:90], features[order[:90]])  # ... but moved
    assert st["entropy_after"] > st["entropy_before"] + 0.02  # toward the boundary (measured 0.982 -> 1.020; max ln 3 = 1.099)
    assert st["kept"] > 0.9  # the MSE term keeps the own class on top
    with torch.no_grad():
        entropy_mined = mining.softmax_entropy(net(x, semantics))
        entropy_real = mining.softmax_entropy(net(features, semantics))
    assert entropy_mined > entropy_real
    for (value, grad), p in zip(before, net.parameters()):  # the net untouched, its gradients too
        assert torch.equal(value, p) and torch.equal(grad, p.grad) and p.requires_grad


def test_mined_batches_is_the_authors_pass():
    # sampler at cursor c: batches while c + B < n, then one from the new permutation
    assert mining.mined_batches(100, 30, 0) == 4      # 0, 30, 60 | new permutation
    assert mining.mined_batches(100, 30, 60) == 2     # 60 | new
    assert mining.mined_batches(100, 30, 70) == 1     # 70 + 30 >= 100: a new permutation at once
    assert mining.mined_batches(100, 25, 0) == 4      # 0, 25, 50 (75 + 25 >= 100) | new


def test_the_mined_set_has_the_right_size(apy, tmp_path):
    cfg = tmm_config(apy, tmp_path, relation_batchsize=48, batchsize=64, relation_nepoch=2)
    data = util.load_dataset(str(apy), "APY")
    runs.set_seeds(cfg.manualSeed)
    trainer = train.Trainer(cfg, data, torch.device("cpu"))
    n, B = len(data.train_label), 48
    cursor = 0
    for _ in range((n // 64) * 2 + 1):  # relation iterations count with the flow's batchsize, +1
        cursor = 0 if cursor + B >= n else cursor
        cursor += B
    k = mining.mined_batches(n, B, cursor)
    assert trainer.mining_stats["mined_rows"] == k * B
    assert len(trainer.train_y) == len(trainer.train_x) == n + k * B
    assert trainer.sampler.n == n + k * B and trainer.sampler.batch_size == B  # quirk: relation batch for the flow
    assert trainer.total == (n // 64) * cfg.gen_nepoch and trainer.iters_per_epoch == math.ceil(n / 64)


def test_tiny_tmm_run_beats_chance_and_resumes_bit_for_bit(apy, tmp_path):
    cfg = tmm_config(apy, tmp_path / "a", gen_nepoch=40, eval_start=79, evl_interval=80)
    full = train.run(cfg)
    # chance: 1/12 unseen classes for ZSL (8%), 1/32 of all classes for GZSL (3%); measured on a CPU: T1 ~78,
    # U ~63, S ~72, on an H200: T1 51, U 32 (other rounding): each bound is still 4x chance or more
    assert full["last"]["T1"] > 33 and full["last"]["U"] > 15 and full["last"]["S"] > 30 and full["last"]["H"] > 15
    log = (tmp_path / full["run_dir"] / "log.txt").read_text()
    assert "TMM: relation network" in log and "mined" in log
    expected = runs.read_jsonl(tmp_path / full["run_dir"] / "metrics.jsonl")

    class Stop(Exception):
        pass

    def stop(row, run_dir):
        raise Stop

    with pytest.raises(Stop):
        train.run(dataclasses.replace(cfg, out_dir=str(tmp_path / "b")), on_evaluation=stop)
    (run_dir,) = (tmp_path / "b" / "APY").iterdir()
    assert (run_dir / "mined.pt").is_file()
    train.resume(cfg, [f"--resume={run_dir}"])
    got = runs.read_jsonl(run_dir / "metrics.jsonl")
    strip = lambda rows: [{k: v for k, v in r.items() if k != "eval_seconds"} for r in rows]
    assert strip(got) == strip(expected) and len(got) == 3
    assert (run_dir / "log.txt").read_text().count("TMM: relation network") == 1  # not mined again


def test_variant_flag_selects_the_scripts_tmm_block():
    import train_AWA2
    import train_FLO
    mm21 = train.parse_overrides(train_AWA2.config, [])
    tmm = train.parse_overrides(train.variant_defaults(train_AWA2.config, ["--variant=tmm"], train_AWA2.TMM),
                                ["--variant=tmm"])
    assert (mm21.variant, mm21.gen_nepoch, mm21.manualSeed, mm21.anchors) == ("mm21", 500, 6152, "seen")
    assert (tmm.variant, tmm.gen_nepoch, tmm.manualSeed, tmm.anchors, tmm.lr_step) == ("tmm", 1000, 7848, "all", 17)
    argv = ["--variant=tmm", "--synthetic", "--loops_adv=7"]
    syn = train.parse_overrides(train.variant_defaults(train_FLO.config, argv, train_FLO.TMM), argv)
    assert (syn.gen_nepoch, syn.relation_nepoch, syn.loops_adv, syn.relation_batchsize) == (40, 1, 7, 64)
    assert train.variant_defaults(train_AWA2.config, ["--synthetic"], train_AWA2.TMM) is train_AWA2.config


def test_tune_searches_the_tmm_knobs_with_the_tmm_variant(apy, tmp_path, monkeypatch):
    import optuna
    import tune
    monkeypatch.setattr(tune, "SPACE", tune.MM21_SPACE)
    tiny = ["--device=cpu", "--gen_nepoch=6", "--batchsize=64", "--hidden_dim=64", "--input_dim=32", "--nSample=20",
            "--eval_start=11", "--evl_interval=12", "--classifier_epochs=3", "--classifier_batch=128", "--quiet",
            "--variant=tmm", "--relation_batchsize=64", "--relation_nepoch=1", "--loops_adv=2"]
    tune.main(["APY", f"--dataroot={apy}", f"--out_dir={tmp_path}", "--trials=2", *tiny])  # (1: only the enqueued one, never run)
    study = optuna.load_study(study_name=f"APY-tmm-space{tune.SPACE_VERSION}",
                              storage=f"sqlite:///{tmp_path / 'tune' / 'tune.db'}")
    trial, sampled = study.get_trials()
    assert trial.state == sampled.state == optuna.trial.TrialState.COMPLETE
    assert set(sampled.params) == set(trial.params) == set(tune.TMM_SPACE) | set(tune.MM21_SPACE)
    assert trial.params["aug_lr"] == 30.0 and trial.params["loops_adv"] == 2  # trial 0: the TMM block + command line
    assert json.loads((Path(trial.user_attrs["run_dir"]) / "config.json").read_text())["variant"] == "tmm"


def test_bad_tmm_options_fail_in_one_line():
    import config
    for argv, message in ((["--variant=tmm2"], "option --variant"), (["--loops_adv=0"], "option --loops_adv"),
                          (["--aug_lr=-1"], "option --aug_lr"), (["--relation_batchsize=0"], "option --relation_batchsize")):
        with pytest.raises(config.ConfigError, match=message):
            config.parse_overrides(Config(), argv)


# ----------------------------------------------------------------------------- literal reference

class LiteralRelationNetV2(nn.Module):
    """The authors' RelationNetV2, as written in their models.py."""

    def __init__(self, c_dim, x_dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(c_dim + x_dim, hidden)
        self.fc2 = nn.Linear(hidden, 1)

    def forward(self, s, c):
        c_ext = c.unsqueeze(0).repeat(s.shape[0], 1, 1)
        cls_num = c_ext.shape[1]
        s_ext = torch.transpose(s.unsqueeze(0).repeat(cls_num, 1, 1), 0, 1)
        relation_pairs = torch.cat((s_ext, c_ext), 2).view(-1, c.shape[1] + s.shape[1])
        h = nn.ReLU()(self.fc1(relation_pairs))
        relation = nn.Sigmoid()(self.fc2(h))
        return relation, h


def entropy_loss(x):
    out = torch.nn.functional.softmax(x, dim=1) * torch.nn.functional.log_softmax(x, dim=1)
    out = -1.0 * out.sum(dim=1)
    return out.mean()


class DataLayer:
    """The authors' FeatDataLayer; `opt` is shared, so changing opt['batchsize'] changes its batches."""

    def __init__(self, label, feat, opt):
        self.opt, self.feat, self.label = opt, feat, label
        self.shuffle()
        self.epoch = 0

    def shuffle(self):
        self.perm, self.cur = np.random.permutation(np.arange(len(self.label))), 0

    def forward(self):
        if self.cur + self.opt["batchsize"] >= len(self.label):
            self.shuffle()
            self.epoch += 1
        inds = self.perm[self.cur:self.cur + self.opt["batchsize"]]
        self.cur += self.opt["batchsize"]
        return np.array([self.feat[i] for i in inds]), np.array([self.label[i] for i in inds])


def one_hot_of(labels_numpy, n_rows):
    sample_labels = np.unique(labels_numpy)
    re_batch = torch.LongTensor([np.argwhere(sample_labels == l)[0][0] for l in labels_numpy])
    return torch.zeros(n_rows, len(sample_labels)).scatter_(1, re_batch.view(-1, 1), 1)


def literal_tmm(cfg, d):
    """The authors' TMM main.py (train() with --aug), line by line, on the CPU."""
    np.random.seed(cfg.manualSeed), torch.manual_seed(cfg.manualSeed)
    opt = {"batchsize": cfg.batchsize}
    n, D = len(d.train_label), d.feature_dim
    train_att = d.seen_semantics
    data_layer = DataLayer(d.train_label, d.train_feature, opt)
    niter = int(n / opt["batchsize"]) * cfg.gen_nepoch
    iters = math.ceil(n / opt["batchsize"])
    niter_relation = int(n / opt["batchsize"]) * cfg.relation_nepoch
    attribute = d.all_semantics  # the xlsa17 loader's dataset.attribute: seen rows, then unseen rows
    sim = cosine_similarity(attribute, attribute)
    medi_idx = np.argwhere(sim.sum(-1) == np.sort(sim.sum(-1))[int(sim.shape[0] / 2)])
    vertices = torch.from_numpy(np.stack((attribute[np.argmin(sim.sum(-1))], attribute[np.argmax(sim.sum(-1))],
                                          attribute[int(medi_idx[0, 0])]))).float()
    flow = ConditionalFlow(D, cfg.input_dim, cfg.num_coupling_layers, cfg.hidden_dim)
    relation_net = LiteralRelationNetV2(train_att.shape[1], D, cfg.hidden_dim)
    sm = RelativePositioning(vertices, cfg.input_dim)
    optimizer = torch.optim.Adam(list(flow.parameters()) + list(sm.parameters()), lr=cfg.lr,
                                 weight_decay=cfg.weight_decay)
    optimizer_relation = torch.optim.Adam(list(relation_net.parameters()), lr=cfg.relation_lr,
                                          weight_decay=cfg.relation_wd)
    lr_scheduler = torch.optim.lr_scheduler.StepLR(optimizer=optimizer, gamma=cfg.lr_gamma, step_size=cfg.lr_step)
    mse = nn.MSELoss()
    x_mean = torch.from_numpy(np.stack([d.train_feature[d.train_label == i].mean(0) for i in range(d.n_seen)]))

    opt["batchsize"] = cfg.relation_batchsize  # data_layer._opt.batchsize = opt.relation_batchsize
    for it in range(niter_relation + 1):
        relation_net.zero_grad()
        feat, labels_numpy = data_layer.forward()
        labels = torch.from_numpy(labels_numpy)
        sample_C = torch.from_numpy(np.array([train_att[i, :] for i in labels.unique()]))
        one_hot = one_hot_of(labels_numpy, opt["batchsize"])
        relations_gt, _ = relation_net(torch.from_numpy(feat), sample_C)
        relation_loss = mse(relations_gt.view(-1, labels.unique().shape[0]), one_hot)
        relation_loss.backward()
        optimizer_relation.step()
    relation_net.eval()

    # diversify()
    current_epoch = data_layer.epoch
    train_feature, train_label = torch.from_numpy(d.train_feature).clone(), torch.from_numpy(d.train_label).clone()
    while data_layer.epoch == current_epoch:
        feat, labels_numpy = data_layer.forward()
        labels = torch.from_numpy(labels_numpy)
        batch_att = torch.from_numpy(np.array([train_att[i, :] for i in labels.unique()]).astype("float32"))
        X = torch.from_numpy(feat)
        inputs_max = X.detach().clone()
        inputs_max.requires_grad_(True)
        n_att = labels.unique().shape[0]
        one_hot = one_hot_of(labels_numpy, opt["batchsize"])
        optimizer_aug = torch.optim.SGD(params=[inputs_max], lr=cfg.aug_lr, momentum=cfg.aug_mt, weight_decay=cfg.aug_wd)
        for _ in range(cfg.loops_adv):
            relations, _ = relation_net(inputs_max, batch_att)
            relations = relations.view(-1, n_att)
            loss = cfg.mse * mse(relations, one_hot) - cfg.entropy_weight * entropy_loss(relations)
            relation_net.zero_grad()
            optimizer_aug.zero_grad()
            loss.backward()
            optimizer_aug.step()
        train_feature = torch.cat((train_feature, inputs_max.detach().clone()))
        train_label = torch.cat((train_label, labels))
    mined = train_feature[n:].clone()
    data_layer = DataLayer(train_label.numpy(), train_feature.numpy(), opt)

    B, rows = opt["batchsize"], []
    for it in range(niter + 1):
        flow.zero_grad(), sm.zero_grad()
        feat, labels_numpy = data_layer.forward()
        C = torch.from_numpy(np.array([train_att[i, :] for i in labels_numpy]).astype("float32"))
        X = torch.from_numpy(feat)
        sr = sm(C)
        z = cfg.pi * torch.randn(B, D)
        mask = torch.FloatTensor(D).uniform_() > cfg.dropout
        z_, log_jac_det = flow(X + mask * z, sr)
        loss = torch.mean(z_ ** 2) / 2 - torch.mean(log_jac_det) / D
        loss.backward(retain_graph=True)
        with torch.no_grad():
            sr = sm(torch.from_numpy(train_att))
        x_ = flow.reverse(torch.zeros(d.n_seen, D), sr)
        (cfg.prototype * mse(x_, x_mean)).backward()
        optimizer.step()
        if it % iters == 0:
            lr_scheduler.step()
        if it % cfg.evl_interval == 0 and it > cfg.eval_start:
            row, gen, gen_label = literal_evaluation(flow, sm, d, cfg, torch.from_numpy(d.train_feature),
                                                     torch.from_numpy(d.train_label), it)
            rows.append(row)
            if cfg.eval_zsl:  # their --zsl line: CLASSIFIER(gen_feat, gen_label, ..., ntrain + ntest classes, ...)
                with torch.random.fork_rng():  # (their ZSL is another process; here it must not shift the draws)
                    zsl = literal_classifier(gen, gen_label, d.n_seen + d.n_unseen,
                                             {"unseen": (torch.from_numpy(d.test_unseen_feature),
                                                         torch.from_numpy(d.test_unseen_label))},
                                             cfg.classifier_lr, cfg.classifier_epochs, cfg.classifier_batch)
                rows[-1]["T1"] = 100 * max(h["unseen"] for h in zsl)
    return rows, mined, train_label[n:].clone()


def test_tmm_run_equals_literal_reference(tmp_path):
    synthetic.generate(tmp_path / "APY", "APY", seed=4, per_seen=(12, 4), per_unseen=6, feature_dim=32, noise=2.0)
    # relation_batchsize != batchsize exercises the quirk (counts at 50, batches of 40); momentum and
    # weight decay in the mining SGD, an entropy weight and an MSE weight other than 1, lr_step != 15
    cfg = tiny_config(tmp_path, tmp_path / "out", device="cpu", anchors="all", gen_nepoch=40, batchsize=50,
                      eval_start=20, evl_interval=40, nSample=15, classifier_epochs=4, classifier_batch=100,
                      hidden_dim=64, input_dim=32, lr_gamma=0.5, pi=0.1, variant="tmm",
                      relation_batchsize=40, relation_nepoch=3, relation_lr=2e-3, relation_wd=1e-4, aug_lr=3.0,
                      aug_mt=0.5, aug_wd=0.01, loops_adv=4, entropy_weight=2.0, mse=1.5, lr_step=3)
    train.run(cfg)
    (run_dir,) = (tmp_path / "out" / "APY").iterdir()
    got = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
    mined = torch.load(run_dir / "mined.pt", weights_only=True)
    expected, expected_mined, expected_labels = literal_tmm(cfg, util.load_dataset(str(tmp_path), "APY"))
    assert torch.equal(mined["features"], expected_mined) and torch.equal(mined["labels"], expected_labels)
    assert [r["iteration"] for r in got] == [40, 80, 120, 160] == [r["iteration"] for r in expected]
    for g, e in zip(got, expected):
        assert {k: g[k] for k in e} == e  # exact: same draws, same arithmetic


# ----------------------------------------------------------------------------- resume: mined.pt belongs to its run

def test_resume_refuses_a_truncated_mined_pt_or_one_from_another_run(apy, tmp_path):
    class Stop(Exception):
        pass

    def stop(row, run_dir):
        raise Stop

    cfg = tmm_config(apy, tmp_path, gen_nepoch=10, eval_start=29, evl_interval=30, eval_zsl=False, relation_nepoch=1,
                     loops_adv=2, classifier_epochs=3)
    for seed in (1, 2):
        with pytest.raises(Stop):
            train.run(dataclasses.replace(cfg, manualSeed=seed), on_evaluation=stop)
    first, second = sorted((tmp_path / "APY").iterdir(), key=lambda d: runs.read_config(d)["manualSeed"])
    own = (second / "mined.pt").read_bytes()
    (second / "mined.pt").write_bytes(own[:len(own) // 2])
    with pytest.raises(util.DataError, match=r"mined.pt: not a loadable file of mined rows \("):
        train.resume(cfg, [f"--resume={second}"])
    (second / "mined.pt").write_bytes((first / "mined.pt").read_bytes())  # same data, another run's rows
    with pytest.raises(util.DataError, match=r"mined.pt: not the mined rows .*last.pt"):
        train.resume(cfg, [f"--resume={second}"])
    (second / "mined.pt").write_bytes(own)
    assert train.resume(cfg, [f"--resume={second}"])["last"]


# ----------------------------------------------------------------------------- E-PGN: anchors from `attribute`

def test_tmm_anchors_on_the_epgn_layout_come_from_data_mats_attribute(epgn_root):
    """Their TMM code takes the all-class anchors from data.mat's `attribute`, not seen_pro + unseen_pro."""
    path = epgn_root / "FLO" / "data.mat"
    mat = {k: v for k, v in sio.loadmat(str(path)).items() if not k.startswith("__")}
    extra = np.full((1, mat["attribute"].shape[1]), 1e-3)
    extra[0, 0] = 1.0  # a class in neither seen_pro nor unseen_pro, unlike every other: the smallest row sum
    attribute = np.concatenate([mat["attribute"], extra])
    sio.savemat(path, {**mat, "attribute": attribute})
    data = util.load_dataset(str(epgn_root), "FLO")
    picked = lambda pool: torch.from_numpy(pool[util.relative_positioning_anchors(pool)].astype(np.float32))
    small = dict(anchors="all", hidden_dim=16, input_dim=8, num_coupling_layers=1)
    _, rp, _ = train.build_models(Config(variant="tmm", **small), data, torch.device("cpu"), relation=True)
    assert torch.equal(rp.anchors, picked(attribute)) and not torch.equal(rp.anchors, picked(data.all_semantics))
    _, mm21 = train.build_models(Config(**small), data, torch.device("cpu"))  # the MM'21 method: as before
    assert torch.equal(mm21.anchors, picked(data.all_semantics))

    sio.savemat(path, {k: v for k, v in mat.items() if k != "attribute"})  # files without it: seen + unseen
    _, rp, _ = train.build_models(Config(variant="tmm", **small), util.load_dataset(str(epgn_root), "FLO"),
                                  torch.device("cpu"), relation=True)
    assert torch.equal(rp.anchors, picked(data.all_semantics))
    sio.savemat(path, {**mat, "attribute": attribute[:, :-1]})
    with pytest.raises(util.DataError, match=r"data.mat: 'attribute' has \d+ columns but 'seen_pro' has"):
        util.load_dataset(str(epgn_root), "FLO")
