"""A tiny run of the whole protocol on generated data: it must beat chance by a margin."""
import json

import pytest

import synthetic
import train
from config import Config
from conftest import TEST_DEVICE


def tiny_config(root, out, **kw):
    base = dict(dataset="APY", dataroot=str(root), out_dir=str(out), device=TEST_DEVICE, anchors="all",
                gen_nepoch=100, batchsize=64, num_coupling_layers=2, hidden_dim=128, input_dim=64,
                prototype=3.0, pi=0.02, lr=1e-3, lr_gamma=0.9, nSample=40, eval_start=199, evl_interval=200,
                classifier_lr=1e-2, classifier_epochs=20, classifier_batch=128, disp_interval=100)
    base.update(kw)
    return Config(**base)


@pytest.fixture(scope="module")
def apy_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    synthetic.generate(root / "APY", "APY", seed=3, per_seen=(20, 5), per_unseen=10, feature_dim=64, noise=3.0)
    return root


def test_tiny_run_beats_chance_and_writes_its_run_dir(apy_root, tmp_path):
    summary = train.run(tiny_config(apy_root, tmp_path))
    # chance: 1/12 unseen classes for ZSL, 1/32 of all classes for GZSL U (measured: T1 94, U 88, S 88)
    assert summary["last"]["T1"] > 50, summary
    assert summary["last"]["U"] > 40 and summary["last"]["S"] > 50 and summary["last"]["H"] > 50, summary
    (run_dir,) = (tmp_path / "APY").iterdir()
    rows = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [200, 400, 600]  # 6 iterations/epoch x 100 epochs
    assert {"log.txt", "config.json", "summary.json", "best.pt"} <= {p.name for p in run_dir.iterdir()}
    assert json.loads((run_dir / "config.json").read_text())["nSample"] == 40
    assert "selected on the TEST set" in (run_dir / "log.txt").read_text()


def test_same_seed_same_numbers_and_a_new_run_dir(apy_root, tmp_path):
    cfg = tiny_config(apy_root, tmp_path, gen_nepoch=10, eval_start=29, evl_interval=30, eval_zsl=False)
    first, second = train.run(cfg), train.run(cfg)
    assert first["paper"]["iteration"] in (30, 60)
    assert first["paper"] == second["paper"] and first["last"] == second["last"]
    assert len(list((tmp_path / "APY").iterdir())) == 2  # never overwrites an earlier run


def test_zsl_evaluation_does_not_change_gzsl_numbers(apy_root, tmp_path):
    cfg = tiny_config(apy_root, tmp_path, gen_nepoch=10, eval_start=29, evl_interval=15)
    with_zsl = train.run(cfg)
    without = train.run(tiny_config(apy_root, tmp_path, gen_nepoch=10, eval_start=29, evl_interval=15, eval_zsl=False))
    assert len(with_zsl) and "T1" in with_zsl["last"] and "T1" not in without["last"]
    for rule in ("paper", "last"):
        assert {k: with_zsl[rule][k] for k in ("U", "S", "H")} == {k: without[rule][k] for k in ("U", "S", "H")}
