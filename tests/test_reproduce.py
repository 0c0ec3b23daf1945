"""reproduce.py: cells as real subprocess jobs, the table, resuming, bad options, a real SLURM."""
import csv
import dataclasses
import errno
import fcntl
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import reproduce
import synthetic
import train
import util
from config import Config
from conftest import ROOT

# A schedule of a few iterations: the numbers are meaningless, the machinery is what is tested.
TINY = ["--synthetic", "--device=cpu", "--gen_nepoch=3", "--eval_start=0", "--evl_interval=3", "--nSample=20",
        "--classifier_epochs=2", "--hidden_dim=64", "--num_coupling_layers=1"]


def tiny(*changes: str) -> list[str]:
    """TINY with some of its options changed (a key may not be given twice)."""
    keys = {c.split("=")[0] for c in changes}
    return [t for t in TINY if t.split("=")[0] not in keys] + list(changes)


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    """The machine is shared: each cell's subprocess uses one thread (they inherit the environment)."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def results_of(cells_root: Path) -> dict:
    return {p.parent.name: json.loads(p.read_text()) for p in sorted(cells_root.glob("*/result.json"))}


def test_cells_run_as_subprocesses_then_a_second_run_only_rebuilds_the_table(tmp_path, capsys):
    argv = ["AWA2", "APY", "--seeds=1,2", "--parallel=2", f"--out_dir={tmp_path}", *TINY]
    first = reproduce.main(argv)
    out = capsys.readouterr().out
    table_dir = Path(first["table_dir"])
    assert table_dir.parent == tmp_path / "reproduce"
    assert re.fullmatch(r"mm21-seeds1,2-AWA2\+APY-synthetic-[0-9a-f]{8}", table_dir.name), table_dir.name
    starts = re.findall(r"^\[start\] (\w+) seed (\d) \(pid (\d+), log ", out, re.M)
    assert sorted(s[:2] for s in starts) == [("APY", "1"), ("APY", "2"), ("AWA2", "1"), ("AWA2", "2")]
    assert os.getpid() not in {int(s[2]) for s in starts} and len({s[2] for s in starts}) == 4  # own processes
    finished = re.findall(r"^\[(\d)/4 done\] \w+ seed \d: finished in \S+ on cpu .*; (.*)$", out, re.M)
    assert [f[0] for f in finished] == ["1", "2", "3", "4"]
    assert "ETA" in finished[0][1] and finished[-1][1] == "none left"

    cells_root = next((tmp_path / "reproduce" / "cells").iterdir())
    results = results_of(cells_root)
    assert sorted(results) == ["APY-seed1", "APY-seed2", "AWA2-seed1", "AWA2-seed2"]
    for name, r in results.items():
        assert {"paper", "val", "last"} <= set(r["summary"]) and r["phases"] == {"validation": "run", "test": "run"}
        assert r["host"] == socket.gethostname() and r["device"].startswith("cpu (")
        run_dirs = {json.loads((d / "config.json").read_text())["validation"]: d
                    for d in (cells_root / name / r["dataset"]).iterdir()}
        assert set(run_dirs) == {True, False}  # the validation run and the test run of --select=val
        assert json.loads((run_dirs[False] / "config.json").read_text())["manualSeed"] == r["seed"]
    assert (cells_root / "AWA2-seed1" / "synthetic_data").is_symlink()  # one stand-in for all cells

    with open(table_dir / "table.csv") as f:
        rows = {(r["dataset"], r["rule"]): r for r in csv.DictReader(f)}
    assert sorted(rows) == sorted((d, rule) for d in ("AWA2", "APY") for rule in ("paper", "val", "last"))
    for (dataset, rule), row in rows.items():
        h = [results[f"{dataset}-seed{s}"]["summary"][rule]["H"] for s in (1, 2)]
        assert float(row["H_mean"]) == pytest.approx(np.mean(h), abs=1e-4)
        assert float(row["H_std"]) == pytest.approx(np.std(h, ddof=1), abs=1e-4)
        assert row["n_seeds"] == "2" and row["synthetic"] == "quick"
    md = (table_dir / "table.md").read_text()
    assert "NOT benchmark numbers" in md and md.count("| 2/2 |") == 6 and "## Cells" in md
    assert (table_dir / "table.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(list(csv.DictReader(open(table_dir / "cells.csv")))) == 4

    # The same command again: no cell runs, nothing of theirs is written, the table is rebuilt.
    stamps = {p: p.stat().st_mtime_ns for p in cells_root.rglob("*") if p.is_file()}
    jobs = sorted((table_dir / "jobs").iterdir())
    t0 = time.monotonic()
    second = reproduce.main(argv)
    rebuilt_in = time.monotonic() - t0
    out = capsys.readouterr().out
    assert "[start]" not in out and out.count("finished earlier") == 4, out
    assert {p: p.stat().st_mtime_ns for p in cells_root.rglob("*") if p.is_file()} == stamps
    assert sorted((table_dir / "jobs").iterdir()) == jobs  # no job was submitted
    assert second["results"] == first["results"] and rebuilt_in < 20


def test_a_killed_cell_continues_from_its_checkpoint(tmp_path, capsys):
    argv = ["APY", "--seeds=1", f"--out_dir={tmp_path}", *tiny("--gen_nepoch=10", "--evl_interval=4",
                                                               "--classifier_epochs=3")]
    found = {}

    def kill_at_the_test_runs_first_checkpoint():
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            for run in tmp_path.glob("reproduce/cells/*/APY-seed1/APY/*"):
                config = run / "config.json"
                if config.is_file() and not json.loads(config.read_text())["validation"] and (run / "last.pt").is_file():
                    found["run"] = run
                    started = json.loads((run.parents[1] / "started.json").read_text())
                    os.kill(started["pid"], signal.SIGKILL)  # the cell's process, as on a lost machine
                    return
            time.sleep(0.05)

    watcher = threading.Thread(target=kill_at_the_test_runs_first_checkpoint)
    watcher.start()
    with pytest.raises(SystemExit) as stop:
        reproduce.main(argv)
    watcher.join()
    out, err = capsys.readouterr()
    run = found["run"]
    assert stop.value.code == 2 and "[1/1 done] APY seed 1: FAILED" in out and "1 of 1 cells failed" in err
    assert "killed by signal 9 (SIGKILL" in out, out  # not the last line of its log
    cell_dir = run.parents[1]
    assert not (cell_dir / "result.json").exists() and not (run / "summary.json").exists()
    done_before = len((run / "metrics.jsonl").read_text().splitlines())

    result = reproduce.main(argv)
    out = capsys.readouterr().out
    r = result["results"][("APY", 1)]
    assert r["phases"] == {"validation": "done earlier", "test": "resumed"}
    assert r["summary"]["run_dir"] == str(run) and len(list(run.parent.iterdir())) == 2  # no new run
    rows = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    assert [row["iteration"] for row in rows] == [4, 8, 12, 16, 20] and done_before < len(rows)
    assert "resumed from" in (run / "log.txt").read_text()
    assert "(resumed)" in out and "(1 resumed)" in (Path(result["table_dir"]) / "table.md").read_text()


@pytest.mark.parametrize("extra,message", [
    (["--nosuch=1"], "unknown option --nosuch"),
    (["--parallel=x"], "option --parallel: expected an integer, got 'x'"),
    (["--resume=maybe"], "option --resume: expected true or false"),
    (["--seeds=1,a"], "option --seeds: expected comma-separated integers"),
    (["--executor=k8s"], "option --executor: 'k8s' is not one of local, slurm"),
    (["XYZ"], "option DATASETS: 'XYZ' is not one of AWA2, APY, CUB, FLO"),
    (["--select=val"], "option --select: every cell reports all three rules"),
    (["--manualSeed=3"], "option --manualSeed: one cell per seed: use --seeds"),
    (["--gen_nepoch=0"], "option --gen_nepoch: must be in (0, 100000]"),
])
def test_bad_options_fail_in_one_line_before_anything_runs(tmp_path, capsys, extra, message):
    with pytest.raises(SystemExit) as stop:
        reproduce.main(["APY", f"--out_dir={tmp_path}", *TINY, *extra])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.startswith(f"error: {message}") and err.count("\n") == 1, err
    assert not (tmp_path / "reproduce").exists()


def test_a_cell_of_other_settings_is_refused(tmp_path, capsys):
    argv = ["APY", "--seeds=1", f"--out_dir={tmp_path}", *TINY]
    datasets, opts, overrides = reproduce.parse_command(argv)
    (cell,), _, _ = reproduce.make_plan(datasets, opts, overrides)
    cell.dir.mkdir(parents=True)
    settings = {**reproduce.cell_settings(cell.cfg), "lr": 1e-3}  # as if train_APY.py had been edited since
    (cell.dir / "cell.json").write_text(json.dumps({"settings": settings}))
    with pytest.raises(SystemExit) as stop:
        reproduce.main(argv)
    err = capsys.readouterr().err
    assert stop.value.code == 2 and f"{cell.dir} was run with lr=0.001, this command has lr=0.0003" in err


def test_help_lists_every_option_and_exits_0():
    done = subprocess.run([sys.executable, str(ROOT / "reproduce.py"), "--help"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    for f in reproduce.dataclasses.fields(reproduce.ReproduceOptions):
        assert (f.name.upper() if f.metadata["positional"] else f"--{f.name}") in done.stdout
    for name in ("gen_nepoch", "device", "variant"):
        assert f"--{name}" in done.stdout


def test_names_keep_distinct_commands_apart():
    name = lambda *a: reproduce.table_name(reproduce.settings_name(list(a)), ["AWA2", "APY", "CUB", "FLO"], "6152,1,2")
    assert name() == "mm21-seeds6152,1,2"
    assert name("--device=cuda", "--quiet") == name()  # where a cell runs is not what it computes
    assert name("--nSample=1200") != name("--nSample=1300") != name()
    assert name("--synthetic").startswith("mm21-seeds6152,1,2-synthetic")
    assert reproduce.table_name("mm21", ["APY", "AWA2"], "1") == "mm21-seeds1-APY+AWA2"


def test_the_table_means_stds_and_a_published_column_with_its_source(tmp_path, monkeypatch):
    cells = [reproduce.Cell("AWA2", s, Config(), tmp_path / f"AWA2-seed{s}") for s in (1, 2, 3)]
    results = {}
    for cell, h in zip(cells[:2], (60.0, 64.0)):  # seed 3 did not finish
        rule = {"T1": 70.0, "U": 50.0, "S": 80.0, "H": h, "iteration": 10}
        results[("AWA2", cell.seed)] = {"dataset": "AWA2", "seed": cell.seed, "summary": {"paper": rule, "val": rule, "last": rule}, "wall_seconds": 3600.0,
                                        "phases": {"validation": "run", "test": "run"}, "device": "cuda (X)", "host": "h"}
    written = reproduce.write_table(tmp_path / "t", cells, results, "python reproduce.py AWA2", synthetic=False)
    md = written[0].read_text()
    assert "| AWA2 | paper protocol | 2/3 | 70.00 ± 0.00 | 50.00 ± 0.00 | 80.00 ± 0.00 | 62.00 ± 2.83 | 1h00m | cuda (X) |" in md
    assert "Published numbers: not shown" in md and "| 3 | not finished |" in md
    monkeypatch.setitem(reproduce.PUBLISHED, "AWA2", {"T1": 1.0, "U": 2.0, "S": 3.0, "H": 4.0, "source": "https://x/y"})
    md = reproduce.write_table(tmp_path / "t", cells, results, "python reproduce.py AWA2", synthetic=False)[0].read_text()
    assert "| published T1 / U / S / H |" in md and "1.0 / 2.0 / 3.0 / 4.0 ([source](https://x/y))" in md


# ----------------------------------------------------------------------------- cells in this process

def plan(argv: list[str]) -> list:
    datasets, opts, overrides = reproduce.parse_command(argv)
    return reproduce.make_plan(datasets, opts, overrides)[0]


def fake_result(cell, h: float = 60.0) -> dict:
    rule = {"T1": 70.0, "U": 50.0, "S": 80.0, "H": h, "iteration": 3}
    return {"dataset": cell.dataset, "seed": cell.seed, "summary": {"paper": rule, "val": rule, "last": rule},
            "phases": {"validation": "run", "test": "run"}, "wall_seconds": 1.0, "device": "cpu (test)",
            "host": "h", "commit": "0123456789ab"}


def finish(cell, h: float = 60.0) -> dict:
    """A finished cell on disk, as run_cell leaves it (its runs left out)."""
    cell.dir.mkdir(parents=True, exist_ok=True)
    (cell.dir / "cell.json").write_text(json.dumps({"settings": reproduce.cell_settings(cell.cfg)}))
    result = fake_result(cell, h)
    (cell.dir / "result.json").write_text(json.dumps(result))
    return result


class InProcess:
    """submitit's executor as run_cells uses it: each job runs reproduce.run_cell at once, in this process."""

    def __init__(self):
        self.ran = []

    def update_parameters(self, **_):
        pass

    def submit(self, function, dataset, seed, *args):
        self.ran.append((dataset, seed))
        job = type("Job", (), {})()
        value = function(dataset, seed, *args)
        job.job_id, job.paths = len(self.ran), type("Paths", (), {"stdout": "-", "stderr": "-"})()
        job.done, job.result, job.cancel = (lambda: True), (lambda: value), (lambda check=True: None)
        return job


@pytest.fixture
def in_process(monkeypatch):
    """Cells run by `cell_job` (set it), in this process: the driver's bookkeeping without real training."""
    executor = InProcess()
    monkeypatch.setattr(reproduce, "make_executor", lambda *a: executor)
    executor.cell_job = lambda cell: finish(cell)

    def run_cell(dataset, seed, overrides, cell_dir, *rest):
        (cell,) = [c for c in plan([dataset, f"--seeds={seed}", *overrides]) if c.dir == Path(cell_dir)]
        return executor.cell_job(cell)
    monkeypatch.setattr(reproduce, "run_cell", run_cell)
    return executor


def test_a_damaged_cell_file_is_named_and_the_cell_runs_again(tmp_path, capsys, in_process):
    argv = ["APY", "--seeds=1,2,3", f"--out_dir={tmp_path}", *TINY]
    one, two, three = plan(argv)
    for cell in (one, two, three):
        finish(cell)
    cut = lambda path: path.write_text(path.read_text()[:20])  # a write cut short
    cut(two.dir / "result.json")
    cut(three.dir / "cell.json")
    result = reproduce.main(argv)
    err = capsys.readouterr().err
    warnings = [l for l in err.splitlines() if l.startswith("warning: ")]
    assert len(warnings) == 2 and str(two.dir / "result.json") in warnings[0] and str(three.dir / "cell.json") in warnings[1], err
    assert "Traceback" not in err and in_process.ran == [("APY", 2), ("APY", 3)]  # cell 1 is finished
    md = (Path(result["table_dir"]) / "table.md").read_text()
    assert "| APY | paper protocol | 3/3 |" in md and "not finished" not in md


def test_a_cell_another_driver_finished_counts_as_finished(tmp_path, capsys, in_process):
    """Two drivers on one --out_dir: this one finds seed 2 locked, the other finishes it before this one ends."""
    argv = ["APY", "--seeds=1,2", f"--out_dir={tmp_path}", *TINY]

    def cell_job(cell):
        if cell.seed == 1:
            return finish(cell)
        finish(cell, h=64.0)  # the other driver's job, still running when this one's job started
        return {"error": f"{cell.dir}: another job is running this cell now (pid 1 on elsewhere)", "exit_code": 2}
    in_process.cell_job = cell_job
    result = reproduce.main(argv)  # no failure is left once seed 2's result is on disk
    md = (Path(result["table_dir"]) / "table.md").read_text()
    assert "| APY | paper protocol | 2/2 |" in md and "62.00 ± 2.83" in md and "not finished" not in md
    assert sorted(result["results"]) == [("APY", 1), ("APY", 2)]


def test_the_table_names_each_cells_commit(tmp_path, in_process):
    argv = ["APY", "--seeds=1,2", f"--out_dir={tmp_path}", *TINY]
    finish(plan(argv)[0])  # seed 1 finished earlier, at commit 0123456789ab

    def at_another_commit(cell):
        result = {**finish(cell), "commit": "fedcba987654"}
        (cell.dir / "result.json").write_text(json.dumps(result))
        return result
    in_process.cell_job = at_another_commit
    table_dir = Path(reproduce.main(argv)["table_dir"])
    md = (table_dir / "table.md").read_text()
    assert "Commits: 0123456789ab (APY seed 1), fedcba987654 (APY seed 2)" in md, md
    cells = {r["seed"]: r for r in csv.DictReader(open(table_dir / "cells.csv"))}
    assert cells["1"]["commit"] == "0123456789ab" and cells["2"]["commit"] == "fedcba987654"


def test_a_finished_cell_is_reused_only_on_the_same_data(tmp_path, capsys):
    """--dataroot is not part of a cell's settings: the data files' sha256 decide whether a cell is reused."""
    roots = {name: tmp_path / name for name in ("dA", "dB")}
    for seed, root in enumerate(roots.values(), 1):
        synthetic.generate(root / "AWA2", "AWA2", seed=seed, per_seen=(6, 2), per_unseen=4, feature_dim=64, noise=2.0)
    shutil.copytree(roots["dA"], tmp_path / "copy_of_dA")  # the same bytes elsewhere
    real = [*(t for t in TINY if t != "--synthetic"), "--batchsize=16"]  # the schedule of TINY on these files
    argv = lambda root: ["AWA2", "--seeds=1", f"--out_dir={tmp_path / 'out'}", f"--dataroot={root}", *real]
    first = reproduce.main(argv(roots["dA"]))
    (cell_dir,) = (tmp_path / "out" / "reproduce" / "cells").glob("*/AWA2-seed1")
    stamps = {p: p.stat().st_mtime_ns for p in cell_dir.rglob("*") if p.is_file()}
    r = first["results"][("AWA2", 1)]
    assert r["commit"] == reproduce.git_commit()
    md = (Path(first["table_dir"]) / "table.md").read_text()
    assert f"Commit: {r['commit']}" in md and str(roots["dA"] / "AWA2" / "res101.mat") in md
    capsys.readouterr()

    with pytest.raises(SystemExit) as stop:
        reproduce.main(argv(roots["dB"]))
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.count("\n") == 1, err
    assert err.startswith(f"error: {cell_dir} was computed on {roots['dA'] / 'AWA2'}/") and str(roots["dB"]) in err
    assert {p: p.stat().st_mtime_ns for p in cell_dir.rglob("*") if p.is_file()} == stamps  # nothing ran

    again = reproduce.main(argv(tmp_path / "copy_of_dA"))
    assert "finished earlier" in capsys.readouterr().out and again["results"] == first["results"]


def test_the_cells_lock_names_its_holder(tmp_path):
    cell = plan(["APY", "--seeds=1", f"--out_dir={tmp_path}", *TINY])[0]
    cell.dir.mkdir(parents=True)
    with open(cell.dir / ".lock", "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write(f"pid 4242 on otherhost")
        held.flush()
        result = reproduce.run_cell("APY", 1, TINY, str(cell.dir))
    assert result["exit_code"] == 2 and "another job is running this cell now (pid 4242 on otherhost)" in result["error"]
    assert not (cell.dir / "started.json").exists()


def test_a_killed_driver_takes_its_local_cells_with_it(tmp_path):
    """Also: the jobs import this repository's modules, not those of the folder the command was started in."""
    elsewhere = tmp_path / "another_checkout"
    elsewhere.mkdir()
    (elsewhere / "reproduce.py").write_text("raise SystemExit('the jobs imported another checkout')\n")
    argv = [sys.executable, str(ROOT / "reproduce.py"), "APY", "--seeds=1", f"--out_dir={tmp_path}",
            *tiny("--gen_nepoch=2000")]
    driver = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=elsewhere)
    try:
        deadline = time.monotonic() + 120
        started = None
        while started is None and time.monotonic() < deadline and driver.poll() is None:
            found = list(tmp_path.glob("reproduce/cells/*/APY-seed1/started.json"))
            started = json.loads(found[0].read_text()) if found else None
            time.sleep(0.1)
        assert started is not None and _alive(started["pid"]), "the cell did not start"
        driver.kill()  # kill -9: the driver can clean nothing up
        driver.wait()
        deadline = time.monotonic() + 60
        while _alive(started["pid"]) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(started["pid"]), "the cell outlived its driver"
    finally:
        if driver.poll() is None:
            driver.kill()
        if started and _alive(started["pid"]):
            os.kill(started["pid"], signal.SIGKILL)


def test_a_failed_resume_names_the_way_out(tmp_path, monkeypatch):
    """A TMM run without its mined.pt cannot continue: the cell's line says that --resume=false starts it again."""
    cell = plan(["APY", "--seeds=1", f"--out_dir={tmp_path}", *TINY, "--variant=tmm"])[0]
    run_dir = cell.dir / "APY" / "2026-01-01_00-00-00"
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps({"validation": False}))
    (run_dir / "last.pt").write_bytes(b"")

    def resume(cfg, argv):
        raise util.DataError(f"{run_dir / 'mined.pt'}: not found (a TMM run keeps its mined rows there)")
    monkeypatch.setattr(train, "resume", resume)
    with pytest.raises(util.DataError) as failed:
        reproduce._run_phase(dataclasses.replace(cell.cfg, validation=False), resume=True)
    assert str(run_dir / "mined.pt") in str(failed.value) and "--resume=false" in str(failed.value)


def test_an_empty_or_non_utf8_out_dir_is_refused_before_anything_runs(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    bad = os.fsdecode(bytes(tmp_path) + b"/out\xff")
    for out_dir, message in (("", "option --out_dir: empty"), (bad, "option --out_dir: ")):
        with pytest.raises(SystemExit) as stop:
            reproduce.main(["APY", f"--out_dir={out_dir}", *TINY])
        err = capsys.readouterr().err
        assert stop.value.code == 2 and err.startswith(f"error: {message}") and err.count("\n") == 1, err
    assert "UTF-8" in err and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("where", ["a file", "under a file", "read-only"])
def test_an_unwritable_out_dir_is_one_error_line(tmp_path, capsys, where):
    if where == "read-only" and os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    (tmp_path / "file").write_text("x")
    out_dir = {"a file": tmp_path / "file", "under a file": tmp_path / "file" / "out", "read-only": tmp_path / "ro"}[where]
    if where == "read-only":
        out_dir.mkdir(mode=0o500)
    with pytest.raises(SystemExit) as stop:
        reproduce.main(["APY", "--seeds=1", f"--out_dir={out_dir}", *TINY])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1 and str(out_dir) in err, err
    assert (tmp_path / "file").read_text() == "x"


def test_a_full_disk_while_writing_the_table_loses_nothing(tmp_path, capsys, monkeypatch, in_process):
    argv = ["APY", "--seeds=1", f"--out_dir={tmp_path}", *TINY]
    table_dir = Path(reproduce.main(argv)["table_dir"])
    before = {p.name: p.read_bytes() for p in table_dir.glob("table.*")}
    result = (plan(argv)[0].dir / "result.json").read_text()

    def full(path, *_):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    monkeypatch.setattr(reproduce, "atomic_text", full)
    with pytest.raises(SystemExit) as stop:
        reproduce.main(argv)
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.startswith(f"error: {table_dir / 'table.md'}: No space left on device")
    assert err.count("\n") == 1, err
    assert {p.name: p.read_bytes() for p in table_dir.glob("table.*")} == before
    assert (plan(argv)[0].dir / "result.json").read_text() == result


# ----------------------------------------------------------------------------- SLURM

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def daemon(name: str) -> str | None:
    return shutil.which(name) or next((str(p) for p in (Path("/usr/sbin") / name,) if p.exists()), None)


@pytest.fixture
def slurm_cluster(monkeypatch):
    """A one-node SLURM (munged, slurmctld, slurmd) on loopback in a temp dir; stopped and removed afterwards."""
    missing = [n for n in ("munged", "slurmctld", "slurmd", "sbatch", "sinfo") if daemon(n) is None]
    if missing:
        pytest.skip(f"SLURM not installed ({', '.join(missing)} missing; .ci/run installs Debian's slurm-wlm and munge)")
    if os.geteuid() != 0:
        pytest.skip("the throwaway SLURM runs its daemons as root, and this test is not root")
    work = Path(tempfile.mkdtemp(prefix="slurm", dir="/tmp"))  # short: unix socket paths are limited
    host = socket.gethostname()
    key = work / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o600)
    conf = work / "slurm.conf"
    conf.write_text("\n".join([
        "ClusterName=gsmflowtest", f"SlurmctldHost={host}(127.0.0.1)", f"SlurmctldPort={free_port()}",
        f"SlurmdPort={free_port()}", "SlurmUser=root", "SlurmdUser=root", "AuthType=auth/munge",
        f"AuthInfo=socket={work}/munge.sock", "CredType=cred/munge", f"StateSaveLocation={work}/state",
        f"SlurmdSpoolDir={work}/spool", f"SlurmctldPidFile={work}/slurmctld.pid", f"SlurmdPidFile={work}/slurmd.pid",
        f"SlurmctldLogFile={work}/slurmctld.log", f"SlurmdLogFile={work}/slurmd.log",
        "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none", "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core", "AccountingStorageType=accounting_storage/none", "JobCompType=jobcomp/none",
        "JobAcctGatherType=jobacct_gather/none", "MpiDefault=none", "ReturnToService=2",
        f"NodeName={host} NodeAddr=127.0.0.1 CPUs={os.cpu_count()} RealMemory=1000 State=UNKNOWN",
        f"PartitionName=test Nodes={host} Default=YES MaxTime=INFINITE State=UP", ""]))
    (work / "state").mkdir()
    (work / "spool").mkdir()
    env = {**os.environ, "SLURM_CONF": str(conf)}
    pid_files = [work / "slurmd.pid", work / "slurmctld.pid", work / "munged.pid"]  # stopped in this order
    try:
        for cmd in ([daemon("munged"), "-f", f"--key-file={key}", f"--socket={work}/munge.sock",
                     f"--pid-file={work}/munged.pid", f"--seed-file={work}/munged.seed", f"--log-file={work}/munged.log"],
                    [daemon("slurmctld"), "-c", "-i"], [daemon("slurmd"), "-c"]):
            started = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
            if started.returncode != 0:
                pytest.skip(f"could not start {Path(cmd[0]).name}: {(started.stderr or started.stdout).strip()[-300:]}")
        deadline = time.monotonic() + 60
        while True:
            state = subprocess.run([daemon("sinfo"), "-h", "-o", "%T"], env=env, capture_output=True, text=True,
                                   timeout=30).stdout.strip()
            if state == "idle":
                break
            if time.monotonic() > deadline:
                logs = " | ".join(p.read_text()[-300:] for p in work.glob("slurm*.log"))
                pytest.skip(f"the SLURM node did not come up within 60 s (state {state!r}): {logs}")
            time.sleep(0.5)
        monkeypatch.setenv("SLURM_CONF", str(conf))
        yield host
    finally:
        stop_jobs(env)  # before the daemons: a job step left behind would wait for its slurmd forever
        pids = []
        for pid_file in pid_files:
            try:
                pids.append(int(pid_file.read_text().strip()))
                os.kill(pids[-1], signal.SIGTERM)
            except (OSError, ValueError):
                pass
        deadline = time.monotonic() + 20
        while pids and time.monotonic() < deadline:  # until they are gone (their files are removed next)
            pids = [pid for pid in pids if _alive(pid)]
            time.sleep(0.05)
        shutil.rmtree(work, ignore_errors=True)


def stop_jobs(env: dict) -> None:
    """Wait until the queue is empty (a finished job leaves it once its steps have ended); cancel what remains."""
    deadline, cancelled = time.monotonic() + 20, False
    while True:
        try:
            queue = subprocess.run([daemon("squeue"), "-h", "-o", "%i"], env=env, capture_output=True, text=True,
                                   timeout=30)
        except (OSError, subprocess.SubprocessError, TypeError):
            return
        jobs = queue.stdout.split()
        if queue.returncode != 0 or not jobs:
            return
        if time.monotonic() > deadline:
            if cancelled:
                return
            subprocess.run([daemon("scancel"), *jobs], env=env, capture_output=True, timeout=30)
            deadline, cancelled = time.monotonic() + 10, True
        time.sleep(0.2)


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status  # a zombie has exited


def test_cells_run_as_slurm_jobs(tmp_path, capsys, slurm_cluster):
    result = reproduce.main(["APY", "--seeds=1", "--executor=slurm", "--slurm_gpus_per_job=0",
                             "--slurm_cpus_per_task=1", "--slurm_time=10", f"--out_dir={tmp_path}", *TINY])
    out = capsys.readouterr().out
    (job_id,) = re.findall(r"^\[queue\] APY seed 1: SLURM job (\d+)", out, re.M)
    assert re.search(rf"^\[start\] APY seed 1 on {re.escape(slurm_cluster)} \(SLURM job {job_id}\)", out, re.M), out
    r = result["results"][("APY", 1)]
    assert {"paper", "val", "last"} <= set(r["summary"]) and r["device"] == "cpu (" + reproduce.cpu_model() + ", 1 thread)"
    cell_dir = Path(r["summary"]["run_dir"]).parents[1]
    assert json.loads((cell_dir / "started.json").read_text())["job_id"] == job_id  # it ran inside that SLURM job
    assert (Path(result["table_dir"]) / "table.md").is_file()
