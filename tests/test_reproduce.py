"""reproduce.py: cells as real subprocess jobs, the table, resuming, bad options, a real SLURM."""
import csv
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
        assert row["n_seeds"] == "2" and row["synthetic"] == "True"
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
