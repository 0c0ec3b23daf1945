"""tune.py: Optuna studies on the validation split, their report, and workers sharing a study."""
import ast
import csv
import datetime
import json
import multiprocessing
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import optuna
import pytest
import scipy.io as sio
import sqlalchemy
import torch

import config
import studies
import synthetic
import train
import train_APY
import tune
import util

STUDY = f"APY-space{tune.SPACE_VERSION}"
TINY = ["--device=cpu", "--gen_nepoch=10", "--batchsize=64", "--hidden_dim=128", "--input_dim=64", "--nSample=20",
        "--eval_start=19", "--evl_interval=20", "--classifier_epochs=5", "--classifier_batch=128", "--quiet"]
@pytest.fixture(autouse=True)
def one_thread():
    """The machine is shared: one thread (also in forked workers) avoids OpenMP's spin-waits between busy processes."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_data(root: Path) -> Path:
    synthetic.generate(root / "APY", "APY", seed=3, per_seen=(20, 5), per_unseen=10, feature_dim=64, noise=3.0)
    return root


def args(root: Path, out: Path, *more: str) -> list[str]:
    """The tiny study's command; `more` replaces a TINY option of the same key (a key may not repeat)."""
    keys = {m.split("=")[0] for m in more}
    return ["APY", f"--dataroot={root}", f"--out_dir={out}", *(t for t in TINY if t.split("=")[0] not in keys), *more]


def trials(out: Path, storage: str | None = None) -> list:
    storage = storage or f"sqlite:///{out / 'tune' / 'tune.db'}"
    return optuna.load_study(study_name=STUDY, storage=storage).get_trials()


def poison_test_columns(root: Path) -> None:
    """NaN in every test image's features: reading the test split anywhere raises a DataError."""
    folder = root / "APY"
    feats, splits = sio.loadmat(str(folder / "res101.mat")), sio.loadmat(str(folder / "att_splits.mat"))
    test = np.concatenate([splits["test_seen_loc"].ravel(), splits["test_unseen_loc"].ravel()]).astype(int) - 1
    feats["features"][:, test] = np.nan
    sio.savemat(folder / "res101.mat", {k: v for k, v in feats.items() if not k.startswith("__")})


def best_h_over_evaluations_and_epochs(run_dir: Path) -> float:
    rows = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return max(util.harmonic_mean(u, s) for r in rows for u, s in r["gzsl_epochs"])


def test_study_on_validation_never_reads_the_test_split_then_reports(tmp_path, monkeypatch, capsys):
    root = make_data(tmp_path / "data")
    clean = (root / "APY" / "res101.mat").read_bytes()
    poison_test_columns(root)
    with pytest.raises(util.DataError, match="NaN"):  # the instrument works: a test-split read fails
        util.load_dataset(str(root), "APY")
    loads = []
    real_load = util.load_dataset
    monkeypatch.setattr(util, "load_dataset", lambda *a, **kw: loads.append(kw) or real_load(*a, **kw))
    out = tmp_path / "out"

    tune.main(args(root, out, "--trials=3"))
    assert loads and all(kw["validation"] for kw in loads)
    done = trials(out)
    assert [t.state for t in done] == [optuna.trial.TrialState.COMPLETE] * 3
    assert done[0].params == tune.script_values(config.parse_overrides(train_APY.config, TINY))  # the script's own
    for t in done:
        run_dir = Path(t.user_attrs["run_dir"])
        assert json.loads((run_dir / "config.json").read_text())["validation"] is True
        # one report per evaluation: the plan of a run on the 400 trainval rows (20, 40, 60 of 60 iterations)
        # at the same fractions of the validation run's 40 iterations
        assert sorted(t.intermediate_values) == [13, 27, 40]
        assert t.value == pytest.approx(best_h_over_evaluations_and_epochs(run_dir))
    assert len(re.findall(r"^trial +\d+ complete +H", capsys.readouterr().out, re.M)) == 3

    (root / "APY" / "res101.mat").write_bytes(clean)  # the final runs read the test split, as they should
    monkeypatch.setattr(util, "load_dataset", real_load)
    # the study's stored settings: the workers' overrides (TINY) need not be typed again
    result = tune.main(["apy", f"--dataroot={root}", f"--out_dir={out}", "--quiet", "--report", "--final_seeds=1,2"])
    printed = capsys.readouterr().out
    block = printed.split("Config(...):\n", 1)[1].split("\n\n", 1)[0].split("written:")[0]
    call = ast.parse("Config(\n" + block + ")").body[0].value
    pasted = {k.arg: ast.literal_eval(k.value) for k in call.keywords}
    best = max((t for t in done), key=lambda t: t.value)
    assert set(pasted) == set(tune.SPACE) and pasted == {k: tune.rounded(v) for k, v in best.params.items()}
    study_dir = out / "tune" / STUDY
    with open(study_dir / "trials.csv") as f:
        table = list(csv.DictReader(f))
    assert [int(r["number"]) for r in table] == [0, 1, 2] and all(r["run_dir"] for r in table)
    for png in ("history.png", "importances.png"):
        assert (study_dir / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "settings selected on validation" in printed and re.search(r"H +[\d.]+ \+- +[\d.]+", printed)
    final = json.loads((study_dir / f"final-trial{best.number}-seeds1_2.json").read_text())
    assert final["params"] == pasted and final["seeds"] == [1, 2] and "val" in final["table"]
    assert result["final"]["table"]["val"]["H"] == pytest.approx(final["table"]["val"]["H"])
    for run_dir in final["run_dirs"]:
        ran = json.loads((Path(run_dir) / "config.json").read_text())
        assert ran["validation"] is False and (ran["gen_nepoch"], ran["hidden_dim"]) == (10, 128)  # as stored


def test_pruned_trials_stop_early_keep_their_run_dir_and_count(tmp_path, monkeypatch, capsys):
    root, out = make_data(tmp_path / "data"), tmp_path / "out"
    monkeypatch.setattr(tune, "make_pruner", lambda: optuna.pruners.ThresholdPruner(lower=101.0))  # prunes any H
    tune.main(args(root, out, "--trials=2"))
    done = trials(out)
    assert [t.state for t in done] == [optuna.trial.TrialState.PRUNED] * 2
    for t in done:
        run_dir = Path(t.user_attrs["run_dir"])
        assert list(t.intermediate_values) == [13] and t.value == t.intermediate_values[13]
        assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 1  # stopped at its first evaluation
        assert not (run_dir / "summary.json").exists()
        assert "pruned by Optuna" in (run_dir / "log.txt").read_text()
    assert len(re.findall(r"^trial +\d+ pruned", capsys.readouterr().out, re.M)) == 2


@pytest.mark.parametrize("extra,message", [
    (["--seeds=1,2"], "option --seeds: not for tune.py"),
    (["--validation"], "option --validation: not for tune.py"),
    (["--trials=0"], r"option --trials: must be >= 1, got 0"),
    (["--final_seeds=1,2"], "option --final_seeds: runs after --report"),
    (["--nosuch=1"], "unknown option --nosuch"),
    (["--weight_decay=0"], "option --weight_decay: tune.py searches around the script's value"),
    (["--report", "--study=missing"], "option --study: no study 'missing'"),
    (["--eval_start=1000"], "option --eval_start=1000: a run on the 400 trainval rows trains 60 iterations, so no "
                            "evaluation"),
    # values the study's first trial (the script's own) cannot take: refused before any trial
    (["--trials=1", "--prototype=0"], "option --prototype=0: outside tune.py's search range 0.3 .. 30"),
    (["--trials=1", "--num_coupling_layers=1"], "option --num_coupling_layers=1: outside tune.py's search range"),
    (["--trials=1", "--report=junk"], "option --report: expected true or false"),
    (["--trials=1", "--study=../elsewhere"], "option --study: '../elsewhere' is not a study name"),
])
def test_bad_options_fail_in_one_line(tmp_path, capsys, extra, message):
    root = make_data(tmp_path / "data")
    with pytest.raises(SystemExit) as stop:
        tune.main(args(root, tmp_path / "out", *extra))
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.startswith(f"error: {message}") and err.count("\n") == 1


def test_unknown_dataset_and_a_worker_with_other_settings_are_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        tune.main(["XYZ", f"--dataroot={tmp_path / 'nothing'}", f"--out_dir={tmp_path / 'other'}"])
    # no train_XYZ.py: Config defaults on the folder XYZ, as train.py --dataset=XYZ (tune.py on your own data)
    assert re.match(r"error: .*nothing/XYZ: dataset folder not found", capsys.readouterr().err)
    root, out = make_data(tmp_path / "data"), tmp_path / "out"
    cfg = config.parse_overrides(train_APY.config, args(root, out)[1:])
    (out / "tune").mkdir(parents=True)
    storage = tune.open_storage(f"sqlite:///{out / 'tune' / 'tune.db'}", 60)
    tune.open_study(storage, STUDY, cfg)
    with pytest.raises(SystemExit):
        tune.main(args(root, out, "--gen_nepoch=11", "--device=cpu"))
    err = capsys.readouterr().err
    assert err.startswith(f"error: option --gen_nepoch: study {STUDY} was started with --gen_nepoch=10")


# ----------------------------------------------------------------------------- several workers

def worker_main(sync: Path, mode: str, argv: list[str], log: Path) -> None:
    """tune.main in a worker process. "together": its first trial waits until the other worker is
    in one too, so both take part. "hang": its first trial signals, then never ends (until killed)."""
    sys.stdout = sys.stderr = open(log, "w", buffering=1)
    real_run = train.run

    def run(cfg, **kw):
        if mode == "hang":
            (sync / "started").write_text(str(os.getpid()))
            time.sleep(600)
        if mode == "together" and not (sync / f"started-{os.getpid()}").exists():
            (sync / f"started-{os.getpid()}").touch()
            deadline = time.monotonic() + 300
            while len(list(sync.glob("started-*"))) < 2:
                assert time.monotonic() < deadline, "the other worker never started a trial"
                time.sleep(0.1)
        return real_run(cfg, **kw)

    train.run = run
    tune.main(argv)


def worker(sync: Path, mode: str, argv: list[str], log: Path):
    """A worker process, forked: it shares the test's imports instead of paying ~5 s for its own."""
    proc = multiprocessing.get_context("fork").Process(target=worker_main, args=(sync, mode, argv, log))
    proc.start()
    return proc


def finished_lines(stdout: str) -> dict[int, str]:
    return {int(n): state for n, state in re.findall(r"^trial +(\d+) (\w+)", stdout, re.M)}


def run_two_workers(tmp_path: Path, storage: str, n_trials: int) -> list:
    root, out, sync = make_data(tmp_path / "data"), tmp_path / "out", tmp_path / "sync"
    sync.mkdir()
    argv = args(root, out, f"--trials={n_trials}", f"--storage={storage}")
    logs = [tmp_path / f"worker{i}.log" for i in range(2)]
    procs = [worker(sync, "together", argv, log) for log in logs]
    for p, log in zip(procs, logs):
        p.join(600)
        assert p.exitcode == 0, log.read_text()[-3000:]
    mine = [finished_lines(log.read_text()) for log in logs]
    assert mine[0] and mine[1] and not set(mine[0]) & set(mine[1])  # both worked, no trial run twice
    done = trials(out, storage)
    assert sorted(set(mine[0]) | set(mine[1])) == [t.number for t in done]
    complete = [t for t in done if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == len(done) and n_trials <= len(done) <= n_trials + 1  # a race may add one
    return done


def test_two_workers_share_one_sqlite_study(tmp_path):
    run_two_workers(tmp_path, f"sqlite:///{tmp_path / 'shared.db'}", 2)


def test_a_killed_workers_trial_is_retried_by_another(tmp_path, capsys):
    root, out, sync = make_data(tmp_path / "data"), tmp_path / "out", tmp_path / "sync"
    sync.mkdir()
    argv = args(root, out, "--trials=2", "--heartbeat=1")  # declared dead 2 s after its last heartbeat
    first = worker(sync, "hang", argv, tmp_path / "first.log")
    deadline = time.monotonic() + 300
    while not (sync / "started").exists():
        assert first.is_alive() and time.monotonic() < deadline, (tmp_path / "first.log").read_text()[-3000:]
        time.sleep(0.2)
    os.kill(first.pid, signal.SIGKILL)  # mid-trial, as a preempted machine
    first.join()
    time.sleep(3)  # its heartbeat is now older than the grace period
    tune.main(argv)  # the second worker: this process
    done = trials(out)
    states = [t.state for t in done]
    assert states[0] == optuna.trial.TrialState.FAIL
    assert states.count(optuna.trial.TrialState.COMPLETE) == 2 and len(done) == 3
    (retry,) = [t for t in done if t.system_attrs.get("failed_trial") == 0]
    assert retry.state == optuna.trial.TrialState.COMPLETE and retry.params == done[0].params
    assert "(retry of trial 0)" in capsys.readouterr().out


# ----------------------------------------------------------------------------- PostgreSQL

def find_postgres() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return found[-1].parent if found else None


@pytest.fixture
def postgres_url():
    """A throwaway PostgreSQL cluster on a unix socket in a temp dir; stopped and removed afterwards."""
    bin_dir = find_postgres()
    if bin_dir is None:
        pytest.skip("PostgreSQL server not installed (.ci/run installs Debian's postgresql)")
    as_user = []
    if os.geteuid() == 0:  # initdb refuses root: run the server as the postgres system user
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run the server as")
        as_user = ["runuser", "-u", "postgres", "--"]
    work = Path(tempfile.mkdtemp(prefix="pg", dir="/tmp"))  # short: unix socket paths are limited to ~100 bytes
    if as_user:
        os.chown(work, user.pw_uid, user.pw_gid)
    data, log = work / "data", work / "log"
    pg_ctl = [*as_user, str(bin_dir / "pg_ctl"), "-D", str(data)]
    try:
        subprocess.run([*as_user, str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres",
                        "--no-sync"], check=True, capture_output=True)
        subprocess.run([*pg_ctl, "-w", "-l", str(log), "-o", f"-k {work} -c listen_addresses='' -F", "start"],
                       check=True, capture_output=True)
        yield f"postgresql+psycopg2://postgres@/postgres?host={work}"
    finally:
        subprocess.run([*pg_ctl, "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


def test_two_workers_share_one_postgresql_study(tmp_path, postgres_url):
    done = run_two_workers(tmp_path, postgres_url, 2)
    assert {t.user_attrs["host"] for t in done} == {socket.gethostname()}  # where each trial ran


# ----------------------------------------------------------------------------- bookkeeping (no training)

def fast_objective(monkeypatch, score=lambda trial: 50.0):
    """Trials that suggest their values and score at once: the faults below are in the bookkeeping."""
    def objective(trial, cfg, study_dir):
        tune.suggest(trial, cfg)
        return score(trial)
    monkeypatch.setattr(tune, "objective", objective)


def age_heartbeats(storage, seconds: int = 3600) -> None:
    """Every recorded heartbeat `seconds` older: as if their workers had died that long ago."""
    from optuna.storages._rdb.models import TrialHeartbeatModel
    storage = getattr(storage, "_backend", storage)  # a study's storage wraps the RDBStorage in a cache
    session = storage.scoped_session()
    for beat in session.query(TrialHeartbeatModel).all():
        beat.heartbeat = beat.heartbeat - datetime.timedelta(seconds=seconds)
    session.commit()
    storage.scoped_session.remove()


def states(out: Path) -> list[str]:
    return [t.state.name for t in trials(out)]


def test_a_trial_killed_as_the_studys_last_is_retried_by_the_next_worker(tmp_path, monkeypatch):
    root, out = make_data(tmp_path / "data"), tmp_path / "out"
    fast_objective(monkeypatch)
    tune.main(args(root, out, "--trials=1"))
    storage = tune.open_storage(f"sqlite:///{out / 'tune' / 'tune.db'}", 60)
    study = optuna.load_study(study_name=STUDY, storage=storage)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        last = study.ask()  # trial 1, the study's last: its worker is SIGKILLed mid-trial
    tune.suggest(last, config.parse_overrides(train_APY.config, TINY))
    storage.record_heartbeat(last._trial_id)
    age_heartbeats(storage)
    tune.main(args(root, out, "--trials=2"))  # a rerun: it fails trial 1, then must run its retry
    done = trials(out)
    assert [t.state.name for t in done] == ["COMPLETE", "FAIL", "COMPLETE"]
    assert done[2].system_attrs.get("failed_trial") == 1 and done[2].params == done[1].params


def test_a_worker_with_another_heartbeat_is_refused(tmp_path, monkeypatch, capsys):
    root, out = make_data(tmp_path / "data"), tmp_path / "out"
    fast_objective(monkeypatch)
    tune.main(args(root, out, "--trials=1", "--heartbeat=60"))
    capsys.readouterr()
    with pytest.raises(SystemExit):  # its 2 s grace would fail the others' live trials
        tune.main(args(root, out, "--trials=2", "--heartbeat=1"))
    err = capsys.readouterr().err
    assert err.startswith(f"error: option --heartbeat: study {STUDY} was started with --heartbeat=60, this "
                          f"command gives 1") and err.count("\n") == 1
    assert states(out) == ["COMPLETE"]


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_a_failed_heartbeat_is_retried_and_the_trial_kept(tmp_path, monkeypatch):
    root, out = make_data(tmp_path / "data"), tmp_path / "out"
    calls = []
    real_beat = optuna.storages.RDBStorage.record_heartbeat

    def record_heartbeat(self, trial_id):
        calls.append(time.monotonic())
        if len(calls) == 2:  # one storage error, say a dropped connection
            raise sqlalchemy.exc.OperationalError("UPDATE trial_heartbeats", {}, Exception("server closed"))
        return real_beat(self, trial_id)

    def score(trial):
        if trial.number == 0:
            deadline = time.monotonic() + 6
            while len(calls) < 4 and time.monotonic() < deadline:  # beats keep coming after the error
                time.sleep(0.05)
            optuna.storages.fail_stale_trials(trial.study)  # what another worker does: fails it if it went quiet
        return 50.0

    monkeypatch.setattr(optuna.storages.RDBStorage, "record_heartbeat", record_heartbeat)
    fast_objective(monkeypatch, score)
    tune.main(args(root, out, "--trials=2", "--heartbeat=1"))
    assert states(out) == ["COMPLETE", "COMPLETE"] and len(calls) >= 4


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_a_trial_failed_under_its_worker_ends_that_run_in_one_line(tmp_path, monkeypatch, capsys):
    root, out = make_data(tmp_path / "data"), tmp_path / "out"

    def score(trial):
        if trial.number == 0:  # its heartbeats did not reach the storage: another worker fails and requeues it
            age_heartbeats(trial.study._storage)
            optuna.storages.fail_stale_trials(trial.study)
            trial.report(40.0, 20)  # the run's next evaluation
        return 50.0

    fast_objective(monkeypatch, score)
    tune.main(args(root, out, "--trials=2"))
    captured = capsys.readouterr()
    done = trials(out)
    assert [t.state.name for t in done] == ["FAIL", "COMPLETE", "COMPLETE"]
    assert done[1].system_attrs["failed_trial"] == 0
    lines = [l for l in captured.out.splitlines() if l.startswith("trial   0")]
    assert len(lines) == 1 and "failed by another worker" in lines[0]
    assert "Traceback" not in captured.out + captured.err


def test_a_worker_joining_before_the_settings_are_stored_waits_for_them(tmp_path, monkeypatch, capsys):
    root, out = make_data(tmp_path / "data"), tmp_path / "out"
    (out / "tune").mkdir(parents=True)
    url = f"sqlite:///{out / 'tune' / 'tune.db'}"
    optuna.create_study(storage=url, study_name=STUDY, direction="maximize")  # its creator, still setting it up
    other = config.parse_overrides(train_APY.config, args(Path("."), Path("."), "--gen_nepoch=11")[1:])
    creator = threading.Timer(2.0, lambda: optuna.load_study(study_name=STUDY, storage=url).set_user_attr(
        "base_config", tune.fingerprint(other)))
    fast_objective(monkeypatch)
    creator.start()
    try:
        with pytest.raises(SystemExit):
            tune.main(args(root, out, "--trials=1"))
    finally:
        creator.join()
    assert capsys.readouterr().err.startswith(f"error: option --gen_nepoch: study {STUDY} was started with "
                                              f"--gen_nepoch=11")
    assert trials(out) == []


def test_a_study_whose_creator_died_before_storing_its_settings_is_set_up_by_the_next(tmp_path, monkeypatch, capsys):
    root, out = make_data(tmp_path / "data"), tmp_path / "out"
    (out / "tune").mkdir(parents=True)
    optuna.create_study(storage=f"sqlite:///{out / 'tune' / 'tune.db'}", study_name=STUDY, direction="maximize")
    monkeypatch.setattr(studies, "SETUP_WAIT", 0.5, raising=False)
    fast_objective(monkeypatch)
    tune.main(args(root, out, "--trials=1"))
    (first,) = trials(out)
    assert first.params == tune.script_values(config.parse_overrides(train_APY.config, TINY))
    assert first.user_attrs["origin"] == "train_APY.py"
    capsys.readouterr()
    with pytest.raises(SystemExit):
        tune.main(args(root, out, "--trials=2", "--gen_nepoch=11"))
    assert capsys.readouterr().err.startswith(f"error: option --gen_nepoch: study {STUDY} was started with "
                                              f"--gen_nepoch=10")


def test_workers_on_other_data_or_another_search_space_are_refused(tmp_path, monkeypatch, capsys):
    root, out = make_data(tmp_path / "data"), tmp_path / "out"
    fast_objective(monkeypatch)
    tune.main(args(root, out, "--trials=1"))
    other = tmp_path / "other"
    synthetic.generate(other / "APY", "APY", seed=4, per_seen=(20, 5), per_unseen=10, feature_dim=64, noise=3.0)
    capsys.readouterr()
    with pytest.raises(SystemExit):
        tune.main(["APY", f"--dataroot={other}", f"--out_dir={out}", *TINY, "--trials=2"])
    err = capsys.readouterr().err
    assert re.match(rf"error: option --dataroot: study {STUDY} was started on other data: its "
                    rf"(res101|att_splits)\.mat has sha256 \w+\.\.\., this worker's has sha256 ", err)
    assert err.count("\n") == 1
    monkeypatch.setitem(tune.SPACE, "dropout", ("uniform", 0.0, 0.6))  # SPACE edited, SPACE_VERSION not
    with pytest.raises(SystemExit):
        tune.main(args(root, out, "--trials=2"))
    err = capsys.readouterr().err
    assert err.startswith(f"error: option --study: study {STUDY} was started with another search space") \
        and err.count("\n") == 1
    assert states(out) == ["COMPLETE"]


def test_joining_workers_propose_other_points_even_with_the_same_pid(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "getpid", lambda: 7)  # containers: every worker is pid 7
    cfg = config.parse_overrides(train_APY.config, TINY)
    storage = tune.open_storage(f"sqlite:///{tmp_path / 'tune.db'}", 60)
    study, created = tune.open_study(storage, STUDY, cfg)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        first = study.ask()
        study.tell(first, 50.0)
        joined = [tune.open_study(storage, STUDY, cfg) for _ in range(2)]
        assert created and not joined[0][1] and not joined[1][1]
        points = [tune.suggest(s.ask(), cfg) for s, _ in joined]
    assert points[0] != points[1]


def test_no_safety_checks_that_python_O_would_remove():
    from conftest import ROOT
    for name in ("tune.py", "studies.py", "train.py", "evaluate.py", "runs.py"):
        tree = ast.parse((ROOT / name).read_text(), name)
        lines = [node.lineno for node in ast.walk(tree) if isinstance(node, ast.Assert)]
        assert not lines, f"{name}: assert at lines {lines} (gone under python -O): raise an error instead"


def test_the_search_space_is_the_registry_s_in_a_fixed_order():
    assert list(tune.TMM_SPACE) == [n for n in tune.SUGGEST_ORDER if n in config.SPACE]
    assert set(tune.TMM_SPACE) == set(config.SPACE), "a tunable option of config.py is missing from SUGGEST_ORDER"
    assert list(tune.MM21_SPACE) == list(tune.SUGGEST_ORDER[:8])  # MM'21 studies search what they always did
