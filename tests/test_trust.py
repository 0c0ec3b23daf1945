"""Resume, safe checkpoints, eval-only export, the non-finite guard, seeds and honest selection."""
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import scipy.io as sio
import torch

import runs
import synthetic
import train
import util
from conftest import ROOT, SHARED_XLSA17
from test_end_to_end import tiny_config


@pytest.fixture(scope="module")
def apy(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    synthetic.generate(root / "APY", "APY", seed=3, per_seen=(20, 5), per_unseen=10, feature_dim=64, noise=3.0)
    return root


def cli_args(cfg):
    """The command line that gives `cfg` when run through train_APY.py."""
    return [f"--{f.name}={getattr(cfg, f.name)}" for f in dataclasses.fields(cfg)
            if f.name not in ("seeds", "resume", "eval_only", "save_synthetic")]


def comparable(rows):
    return [{k: v for k, v in r.items() if k != "eval_seconds"} for r in rows]


def test_resume_after_kill_9_gives_the_uninterrupted_metrics(apy, tmp_path):
    cfg = tiny_config(apy, tmp_path / "a", gen_nepoch=30, eval_start=29, evl_interval=30, disp_interval=10,
                      classifier_epochs=10)
    script = [sys.executable, str(ROOT / "train_APY.py")]  # cli_args(cfg) holds --quiet=True
    subprocess.run(script + cli_args(cfg), check=True, capture_output=True, cwd=ROOT)
    (full_dir,) = (tmp_path / "a" / "APY").iterdir()
    expected = comparable(runs.read_jsonl(full_dir / "metrics.jsonl"))
    assert [r["iteration"] for r in expected] == [30, 60, 90, 120, 150, 180]

    cfg_b = dataclasses.replace(cfg, out_dir=str(tmp_path / "b"))
    proc = subprocess.Popen(script + cli_args(cfg_b), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        dirs = list((tmp_path / "b" / "APY").glob("*")) if (tmp_path / "b" / "APY").exists() else []
        if dirs and len(runs.read_jsonl(dirs[0] / "metrics.jsonl")) >= 2:
            break
        time.sleep(0.005)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    (run_dir,) = (tmp_path / "b" / "APY").iterdir()
    killed_at = len(runs.read_jsonl(run_dir / "metrics.jsonl"))
    assert killed_at < len(expected)
    out = subprocess.run(script + ["--quiet", f"--resume={run_dir}"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert "resumed from" in out.stdout
    assert comparable(runs.read_jsonl(run_dir / "metrics.jsonl")) == expected
    full_losses = runs.read_jsonl(full_dir / "losses.jsonl")
    assert runs.read_jsonl(run_dir / "losses.jsonl") == full_losses


def test_resume_refuses_changed_settings_and_other_datasets(apy, tmp_path):
    cfg = tiny_config(apy, tmp_path, gen_nepoch=10, eval_start=29, evl_interval=30, eval_zsl=False)
    run_dir = train.run(cfg)["run_dir"]
    with pytest.raises(train.ConfigError, match="option --lr cannot change when resuming"):
        train.resume(cfg, [f"--resume={run_dir}", "--lr=0.1"])
    import train_AWA2
    with pytest.raises(train.ConfigError, match="is a APY run; use train_APY.py"):
        train.resume(train_AWA2.config, [f"--resume={run_dir}"])


def test_atomic_save_keeps_the_previous_checkpoint_when_a_write_dies(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    runs.atomic_save({"v": torch.ones(3)}, path)

    def dies_midway(obj, f, *a, **k):
        f.write(b"partial")
        raise OSError("disk full")
    monkeypatch.setattr(torch, "save", dies_midway)
    with pytest.raises(OSError):
        runs.atomic_save({"v": torch.zeros(3)}, path)
    monkeypatch.undo()
    assert torch.equal(torch.load(path, weights_only=True)["v"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


class NotAllowed:
    pass


def test_checkpoints_load_weights_only_and_are_checked_against_the_data(apy, tmp_path):
    cfg = tiny_config(apy, tmp_path, gen_nepoch=10, eval_start=29, evl_interval=30, eval_zsl=False)
    run_dir = train.run(cfg)["run_dir"]
    data = train.prepare_data(cfg)
    ckpt = runs.load_checkpoint(tmp_path / run_dir / "best.pt", data)
    assert ckpt["format"] == runs.CHECKPOINT_FORMAT and "flow" in ckpt
    assert "trainer" in runs.load_checkpoint(tmp_path / run_dir / "last.pt", data)
    other = synthetic.generate(tmp_path / "AWA2", "AWA2", seed=1, per_seen=(6, 2), per_unseen=4, feature_dim=64)
    awa2 = util.load_dataset(str(tmp_path), "AWA2")
    with pytest.raises(util.DataError, match="checkpoint is for APY, this run is AWA2"):
        runs.load_checkpoint(tmp_path / run_dir / "best.pt", awa2)
    smaller = dataclasses.replace(data, train_feature=data.train_feature[:-1], train_label=data.train_label[:-1])
    with pytest.raises(util.DataError, match=r"trained on other data: n_train 400 \(checkpoint\) vs 399"):
        runs.load_checkpoint(tmp_path / run_dir / "best.pt", smaller)
    torch.save({"format": runs.CHECKPOINT_FORMAT, "x": NotAllowed()}, tmp_path / "evil.pt")
    with pytest.raises(util.DataError, match=r"evil.pt: not a loadable checkpoint \(UnpicklingError"):
        runs.load_checkpoint(tmp_path / "evil.pt", data)
    torch.save({"weights": torch.ones(2)}, tmp_path / "plain.pt")
    with pytest.raises(util.DataError, match="plain.pt: not a GSMFlow checkpoint"):
        runs.load_checkpoint(tmp_path / "plain.pt", data)


@pytest.mark.parametrize("ext", ["npz", "mat"])
def test_eval_only_reevaluates_and_exports_synthetic_features(apy, tmp_path, ext):
    cfg = tiny_config(apy, tmp_path, nSample=40)
    trained = train.run(cfg)
    export = tmp_path / f"syn.{ext}"
    summary = train.main(cfg, [f"--eval_only={trained['run_dir']}/best.pt", f"--save_synthetic={export}"])
    assert summary["last"]["T1"] > 50 and summary["last"]["H"] > 50  # chance: 8.3 and ~6
    saved = dict(np.load(export)) if ext == "npz" else sio.loadmat(str(export))
    assert saved["features"].shape == (12 * 40, 64)
    assert np.array_equal(saved["labels"].ravel(), np.repeat(np.arange(12), 40))
    assert saved["unseen_semantics"].shape == (12, 64)
    with pytest.raises(SystemExit):  # never overwrites an earlier export
        train.main(cfg, [f"--eval_only={trained['run_dir']}/best.pt", f"--save_synthetic={export}"])


def poison_flow_after(monkeypatch, iteration: int) -> None:
    """From the step after `iteration` on, the flow's first parameter is NaN (so is its loss)."""
    real_step = train.Trainer.step

    def poisoned(self, it):
        out = real_step(self, it)
        if it == iteration:
            with torch.no_grad():
                next(self.flow.parameters()).fill_(float("nan"))
        return out
    monkeypatch.setattr(train.Trainer, "step", poisoned)


def test_non_finite_loss_stops_with_the_iteration_and_keeps_the_last_good_checkpoint(apy, tmp_path, monkeypatch):
    poison_flow_after(monkeypatch, 95)
    cfg = tiny_config(apy, tmp_path, gen_nepoch=30, eval_start=29, evl_interval=30, eval_zsl=False)
    with pytest.raises(runs.NonFiniteError, match=r"iteration 96: loss is not finite .*\(iteration 90\)"):
        train.run(cfg)
    (run_dir,) = (tmp_path / "APY").iterdir()
    last = torch.load(run_dir / "last.pt", weights_only=True)
    assert last["iteration"] == 90 and runs.all_finite(last["trainer"]["flow"].values())


def test_seeds_table_is_mean_and_std_of_the_runs(apy, tmp_path, capsys):
    cfg = tiny_config(apy, tmp_path, gen_nepoch=10, eval_start=29, evl_interval=30, seeds="6152,1")
    result = train.main(cfg, [])
    runs = [json.loads((tmp_path / d / "summary.json").read_text()) for d in result["run_dirs"]]
    h = [r["paper"]["H"] for r in runs]
    assert result["table"]["paper"]["H"] == pytest.approx((np.mean(h), np.std(h, ddof=1)))
    assert runs[0]["paper"] != runs[1]["paper"]
    out = capsys.readouterr().out
    assert "mean +- std over seeds 6152, 1" in out and "selected on the TEST set" in out


@pytest.mark.skipif(not SHARED_XLSA17.is_dir(), reason="no real split files (GSMFLOW_XLSA17_SPLITS, default ../shared/xlsa17: tests/conftest.py)")
@pytest.mark.parametrize("name,stem", [("AWA2", "att"), ("APY", "att"), ("CUB", "sent"), ("FLO", "att")])
def test_validation_split_of_real_files_never_touches_test_rows(tmp_path, name, stem):
    split_file = SHARED_XLSA17 / f"{name}_{stem}_splits.mat"
    synthetic.features_for_real_splits(split_file, tmp_path / name, feature_dim=4, stem=stem)
    m = sio.loadmat(str(split_file))
    test_rows = np.concatenate([m["test_seen_loc"].ravel(), m["test_unseen_loc"].ravel()]).astype(int) - 1
    d = util.load_dataset(str(tmp_path), name, layout="xlsa17", class_embedding=stem, validation=True)
    used = np.concatenate(list(d.rows.values()))
    assert d.split == "validation"
    assert np.isin(used, m["trainval_loc"].ravel().astype(int) - 1).all()
    assert not np.isin(used, test_rows).any()
    assert np.intersect1d(d.seen_ids, d.unseen_ids).size == 0
    assert len(set(used)) == len(used) == m["trainval_loc"].size  # every trainval image used exactly once
    if name != "APY":  # xlsa17's train/val locs overlap the seen test images (the trap this avoids)
        assert np.isin(m["val_loc"].ravel().astype(int) - 1, test_rows).any()


def test_select_val_reports_test_numbers_at_the_validation_choice(tmp_path):
    synthetic.generate(tmp_path / "APY", "APY", seed=3, per_seen=(20, 5), per_unseen=10, feature_dim=64, noise=3.0)
    cfg = tiny_config(tmp_path, tmp_path / "out", gen_nepoch=40, eval_start=59, evl_interval=60, select="val")
    s = train.main(cfg, [])
    val_rows = runs.read_jsonl(tmp_path / s["validation_run_dir"] / "metrics.jsonl")
    test_rows = {r["iteration"]: r for r in runs.read_jsonl(tmp_path / s["run_dir"] / "metrics.jsonl")}
    v = s["val"]
    assert v["val_iteration"] in [r["iteration"] for r in val_rows]
    # the validation run (fewer rows, fewer iterations) evaluates at the test run's fractions of the schedule
    assert len(val_rows) == len(test_rows) == 4 and val_rows[-1]["iteration"] < max(test_rows)
    u, s_ = test_rows[v["iteration"]]["gzsl_epochs"][v["classifier_epoch"] - 1]
    assert (v["U"], v["S"]) == (u, s_)
    assert "VALIDATION split" in (tmp_path / s["validation_run_dir"] / "log.txt").read_text()
    assert "chosen on the leak-free validation split" in (tmp_path / s["run_dir"] / "log.txt").read_text()


def test_progress_bars_only_on_a_terminal_and_not_when_quiet(monkeypatch):
    from config import Config
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    assert not runs.progress_bar(range(3), Config()).disable
    assert runs.progress_bar(range(3), Config(quiet=True)).disable
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    assert runs.progress_bar(range(3), Config()).disable


def test_plot_command_writes_curves_and_tsne_from_the_run_dir_alone(apy, tmp_path):
    import plot
    cfg = tiny_config(apy, tmp_path, gen_nepoch=20, eval_start=29, evl_interval=30, disp_interval=10)
    run_dir = tmp_path / train.run(cfg)["run_dir"]
    subprocess.run([sys.executable, str(ROOT / "plot.py"), str(run_dir), "--tsne_per_class=30"],
                   check=True, cwd=tmp_path, capture_output=True)
    for name in ("curves.png", "tsne.png"):
        png = (run_dir / name).read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    bad = subprocess.run([sys.executable, str(ROOT / "plot.py"), str(tmp_path)], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.startswith("error: ") and "not a run directory" in bad.stderr


def test_resume_before_any_checkpoint_says_so_and_stale_temp_files_are_removed(apy, tmp_path):
    cfg = tiny_config(apy, tmp_path, gen_nepoch=10, eval_start=29, evl_interval=30, eval_zsl=False)
    run_dir = tmp_path / train.run(cfg)["run_dir"]
    (run_dir / "summary.json").unlink()  # unfinished ...
    (run_dir / "last.pt").rename(run_dir / ".last.pt.tmp123")  # ... as if killed mid-write of the first checkpoint
    with pytest.raises(util.DataError, match="last.pt: no checkpoint yet"):
        train.resume(cfg, [f"--resume={run_dir}"])
    (run_dir / ".last.pt.tmp123").rename(run_dir / "last.pt")
    (run_dir / ".last.pt.tmp999").write_bytes(b"partial")
    train.resume(cfg, [f"--resume={run_dir}"])
    assert not list(run_dir.glob(".*.tmp*"))
