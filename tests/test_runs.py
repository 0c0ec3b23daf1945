"""Opening and closing runs (runs.open_run / finish_run): one writer per run directory, whole
files on disk, resume only on the data the run started with, logs cut short by a kill."""
import dataclasses
import errno
import gc
import json
import os
import re
from pathlib import Path

import pytest
import torch

import fileio
import runs
import synthetic
import train
import util
from test_end_to_end import tiny_config
from test_trust import apy  # noqa: F401 (the module's APY stand-in fixture)


def test_a_second_writer_of_one_run_directory_is_refused(tmp_path):
    first = runs.lock_run_dir(tmp_path)
    with pytest.raises(util.DataError, match="another process is writing this run"):
        runs.lock_run_dir(tmp_path)
    first.close()
    runs.lock_run_dir(tmp_path).close()  # free again once the first writer is done


def test_two_resumes_of_one_run_cannot_interleave(apy, tmp_path):
    cfg = tiny_config(apy, tmp_path, gen_nepoch=10, eval_start=29, evl_interval=30, eval_zsl=False)
    run_dir = train.run(cfg)["run_dir"]
    (Path(run_dir) / "summary.json").unlink()  # unfinished, as if killed after its last checkpoint
    holder = runs.lock_run_dir(Path(run_dir))  # as a resume still running would
    try:
        with pytest.raises(util.DataError, match="another process is writing this run"):
            train.resume(cfg, [f"--resume={run_dir}"])
    finally:
        holder.close()


def test_resume_refuses_data_that_changed_since_the_run_started(apy, tmp_path):
    data_root = tmp_path / "data"
    synthetic.generate(data_root / "APY", "APY", seed=3, per_seen=(20, 5), per_unseen=10, feature_dim=64, noise=3.0)
    cfg = tiny_config(data_root, tmp_path / "out", gen_nepoch=10, eval_start=29, evl_interval=30, eval_zsl=False)
    run_dir = train.run(cfg)["run_dir"]
    (Path(run_dir) / "summary.json").unlink()  # unfinished, as if killed after its last checkpoint
    features = data_root / "APY" / "res101.mat"
    size = features.stat().st_size
    synthetic.generate(data_root / "APY", "APY", seed=4, per_seen=(20, 5), per_unseen=10, feature_dim=64, noise=3.0)
    assert features.stat().st_size == size  # other values, same size
    with pytest.raises(util.DataError, match=r"res101.mat: changed since .* started"):
        train.resume(cfg, [f"--resume={run_dir}"])


def test_a_jsonl_line_cut_short_by_a_kill_is_dropped_and_other_bad_lines_named(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"iteration": 30, "H": 1.0}\n{"iteration": 60, "H"')
    assert runs.read_jsonl(path) == [{"iteration": 30, "H": 1.0}]
    path.write_text('{"iteration": 30\n{"iteration": 60}\n')
    with pytest.raises(util.DataError, match="metrics.jsonl: line 1 is not valid JSON"):
        runs.read_jsonl(path)


def test_files_are_synced_before_they_replace_the_old_ones(tmp_path, monkeypatch):
    events = []
    monkeypatch.setattr(os, "fsync", lambda fd: events.append("fsync"))
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append("replace"), real_replace(a, b)))
    fileio.atomic_text(tmp_path / "summary.json", "{}")
    assert events[:2] == ["fsync", "replace"] and (tmp_path / "summary.json").read_text() == "{}"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_rng_states_of_more_gpus_than_this_machine_has(monkeypatch):
    state = runs.rng_state()
    state["cuda"] = [torch.zeros(16, dtype=torch.uint8), torch.ones(16, dtype=torch.uint8)]  # saved on 2 GPUs
    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda s, device: calls.append(device))
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda states: pytest.fail("would index GPU 1"))
    runs.set_rng_state(state)
    assert calls == [0]


def test_summary_json_is_written_by_finish_run_for_every_mode(apy, tmp_path):
    cfg = tiny_config(apy, tmp_path, gen_nepoch=10, eval_start=29, evl_interval=30, eval_zsl=False)
    trained = train.run(cfg)
    evaluated = train.eval_only(dataclasses.replace(cfg, eval_only=f"{trained['run_dir']}/best.pt"))
    for summary in (trained, evaluated):
        on_disk = json.loads(open(f"{summary['run_dir']}/summary.json").read())
        assert on_disk == json.loads(json.dumps(summary))
        assert {"wall_seconds", "run_dir", "split", "data_files"} <= set(on_disk)
        runs.lock_run_dir(Path(summary["run_dir"])).close()  # released: another process may take it


# ----------------------------------------------------------------------------- --select=val through kills

class Killed(Exception):
    """Stands for kill -9: the run stops right after a checkpoint, nothing of it runs any further."""


def killed_at_first_evaluation(row, run_dir):
    raise Killed


def kill_after_checkpoint(monkeypatch, validation: bool, count: int = 1) -> None:
    """From now on, the `count`-th last.pt of the validation (or test) half is the last thing written."""
    real, written = runs.save_checkpoint, []

    def save(path, cfg, *args, **kw):
        real(path, cfg, *args, **kw)
        if path.name == "last.pt" and cfg.validation == validation:
            written.append(path)
            if len(written) == count:
                raise Killed
    monkeypatch.setattr(runs, "save_checkpoint", save)


def select_val_config(root, out):
    return tiny_config(root, out, gen_nepoch=10, eval_start=9, evl_interval=10, classifier_epochs=5, nSample=20,
                       eval_zsl=False, select="val")


def halves(out: Path) -> dict:
    """{'validation': run dir, 'test': run dir} of the one --select=val protocol under out."""
    found = {}
    for run_dir in (out / "APY").iterdir():
        found.setdefault("validation" if runs.read_config(run_dir)["validation"] else "test", []).append(run_dir)
    assert all(len(dirs) == 1 for dirs in found.values()), found
    return {half: dirs[0] for half, dirs in found.items()}


@pytest.fixture(scope="module")
def uninterrupted(apy, tmp_path_factory):
    """The summary of a --select=val protocol that nothing interrupted."""
    return train.run_protocol(select_val_config(apy, tmp_path_factory.mktemp("whole")))


def test_select_val_keeps_its_val_rule_when_the_test_half_is_killed_and_resumed(apy, uninterrupted, tmp_path,
                                                                                monkeypatch):
    cfg = select_val_config(apy, tmp_path)
    kill_after_checkpoint(monkeypatch, validation=False, count=2)
    with pytest.raises(Killed):
        train.run_protocol(cfg)
    monkeypatch.undo()
    run_dir = halves(tmp_path)["test"]
    resumed = train.resume(cfg, [f"--resume={run_dir}"])
    assert resumed["val"] == uninterrupted["val"] and "paper" in resumed and "last" in resumed
    assert resumed["validation_run_dir"] == str(halves(tmp_path)["validation"])
    summary = (run_dir / "summary.json").read_text()
    assert json.loads(summary)["val"] == uninterrupted["val"]
    assert "chosen on the leak-free validation split" in (run_dir / "log.txt").read_text()

    again = train.resume(cfg, [f"--resume={run_dir}"])  # a finished run: summary.json is left as it is
    assert (run_dir / "summary.json").read_text() == summary and again == json.loads(summary)


def test_select_val_resumed_from_its_validation_half_finishes_the_whole_protocol(apy, uninterrupted, tmp_path,
                                                                                 monkeypatch):
    cfg = select_val_config(apy, tmp_path)
    kill_after_checkpoint(monkeypatch, validation=True)
    with pytest.raises(Killed):
        train.run_protocol(cfg)
    kill_after_checkpoint(monkeypatch, validation=False)  # the resume is killed too, in the test half
    with pytest.raises(Killed):
        train.resume(cfg, [f"--resume={halves(tmp_path)['validation']}"])
    monkeypatch.undo()
    resumed = train.resume(cfg, [f"--resume={halves(tmp_path)['validation']}"])  # continues that test half
    assert resumed["val"] == uninterrupted["val"]
    assert resumed["run_dir"] == str(halves(tmp_path)["test"])  # halves() asserts: no second test half
    comparable = lambda s: {k: v for k, v in s.items() if k in ("paper", "last", "val")}
    assert comparable(json.loads((halves(tmp_path)["test"] / "summary.json").read_text())) == comparable(uninterrupted)


# ----------------------------------------------------------------------------- what --resume trusts

def one_error_line(capsys, main, *args) -> str:
    """Run a script's main; it must exit 2 with one `error:` line (no traceback). Returns that line."""
    with pytest.raises(SystemExit) as stop:
        main(*args)
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    del stop
    gc.collect()  # the process would have exited here: the error's frames let go of the run directory's lock
    return err


def test_resume_trusts_no_hand_edit_of_config_json(apy, tmp_path, capsys):
    cfg = tiny_config(apy, tmp_path, gen_nepoch=10, eval_start=29, evl_interval=30, eval_zsl=False)
    with pytest.raises(Killed):
        train.run(cfg, on_evaluation=killed_at_first_evaluation)
    (run_dir,) = (tmp_path / "APY").iterdir()
    original = (run_dir / "config.json").read_text()
    edits = {"nSample 40 -> 10 (mixes evaluations)": (lambda c: c.update(nSample=10), r"key 'nSample'.*last.pt"),
             "a deleted key": (lambda c: c.pop("lr_step"), r"key 'lr_step'.*missing"),
             "an unknown key": (lambda c: c.update(nsample=10), r"config.json: unknown key 'nsample'"),
             "a wrong type": (lambda c: c.update(nSample="ten"), r"config.json: key 'nSample' .*integer"),
             "not an object": (lambda c: c.clear(), r"config.json: not a JSON object")}
    for what, (edit, message) in edits.items():
        saved = json.loads(original)
        edit(saved)
        (run_dir / "config.json").write_text("[]" if not saved else json.dumps(saved))
        line = one_error_line(capsys, train.main, cfg, [f"--resume={run_dir}"])
        assert re.search(message, line), (what, line)
    (run_dir / "config.json").write_text(original)
    assert train.resume(cfg, [f"--resume={run_dir}"])["paper"]  # the run itself is intact


def test_out_dir_that_is_a_file_or_a_read_only_disk_is_one_line(apy, tmp_path, capsys, monkeypatch):
    cfg = tiny_config(apy, tmp_path, gen_nepoch=10, eval_start=29, evl_interval=30, eval_zsl=False)
    (tmp_path / "a_file").write_text("")
    line = one_error_line(capsys, train.main, cfg, [f"--out_dir={tmp_path / 'a_file'}"])
    assert "option --out_dir" in line and "a_file" in line

    def read_only(self, *args, **kw):
        raise OSError(errno.EROFS, "Read-only file system", str(self))
    monkeypatch.setattr(Path, "mkdir", read_only)
    line = one_error_line(capsys, train.main, cfg, [f"--out_dir={tmp_path / 'ro'}"])
    assert "option --out_dir" in line and "Read-only file system" in line


def test_a_full_disk_stops_the_run_in_one_line_and_keeps_the_last_checkpoint(apy, tmp_path, capsys, monkeypatch):
    cfg = tiny_config(apy, tmp_path, gen_nepoch=20, eval_start=29, evl_interval=30, eval_zsl=False)
    real_save, saves = torch.save, []

    def fills_the_disk(obj, f, *args, **kw):
        saves.append(obj.get("iteration"))
        if len(saves) == 3:  # best.pt and last.pt of iteration 30 are written; the disk fills at the next one
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save(obj, f, *args, **kw)
    monkeypatch.setattr(torch, "save", fills_the_disk)
    line = one_error_line(capsys, train.main, cfg, [])
    monkeypatch.undo()
    (run_dir,) = (tmp_path / "APY").iterdir()
    assert "No space left on device" in line and str(run_dir) in line and ".pt" in line
    assert torch.load(run_dir / "last.pt", weights_only=True)["iteration"] == 30
    assert not list(run_dir.glob(".*.tmp*"))
    train.resume(cfg, [f"--resume={run_dir}"])  # nothing was lost: the run continues from there
    assert [r["iteration"] for r in runs.read_jsonl(run_dir / "metrics.jsonl")] == [30, 60, 90, 120]


def test_a_batch_larger_than_the_validation_splits_rows_says_so(apy, tmp_path):
    cfg = tiny_config(apy, tmp_path, batchsize=300, validation=True)  # 400 training images, 256 in validation
    with pytest.raises(train.ConfigError, match=r"--batchsize=300: must be smaller than the 256 training images "
                                                r"of the validation split"):
        train.run(cfg)
    tmm = dataclasses.replace(cfg, batchsize=64, variant="tmm", relation_batchsize=256)  # TMM: the flow's batch too
    with pytest.raises(train.ConfigError, match=r"--relation_batchsize=256: .* 256 training images of the validation"):
        train.run(tmm)
    assert not (tmp_path / "APY").exists()


def test_a_resume_after_the_last_evaluation_exports_no_uninitialised_features(apy, tmp_path, capsys):
    cfg = tiny_config(apy, tmp_path, gen_nepoch=10, eval_start=29, evl_interval=30, eval_zsl=False, nSample=5)
    run_dir = Path(train.run(cfg)["run_dir"])
    (run_dir / "summary.json").unlink()  # killed after its last checkpoint, before summary.json
    out = tmp_path / "features.npz"
    train.resume(cfg, [f"--resume={run_dir}", f"--save_synthetic={out}"])
    assert not out.exists()  # the evaluation buffer of this process was never filled
    assert f"--eval_only={run_dir / 'last.pt'} --save_synthetic={out}" in capsys.readouterr().out
    assert (run_dir / "summary.json").is_file()
