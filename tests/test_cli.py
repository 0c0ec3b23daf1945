"""The option registry and the one command-line convention (cli.py), for every command."""
import dataclasses
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import benchmarks
import cli
import config
from cli import ConfigError, opt
from config import Config, parse_overrides

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def commands() -> list[list[str]]:
    """Every command a user runs (README), as argv after `python`."""
    scripts = [[p.name] for p in sorted(ROOT.glob("train*.py"))]
    others = [["tune.py"], ["plot.py"], ["synthetic.py"], ["-m", "data.prepare"], ["-m", "data.make_dataset"],
              ["-m", "bench.bench"], ["-m", "bench.bench_mining"], ["-m", "bench.precision"],
              ["-m", "bench.expected_time"]]
    if (ROOT / "reproduce.py").exists():
        others.append(["reproduce.py"])
    return scripts + others


def run(args, **kw):
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120,
                          **kw)


@pytest.mark.parametrize("command", commands(), ids=lambda c: " ".join(c))
def test_every_command_answers_help(command):
    out = run([*command, "--help"])
    assert out.returncode == 0, out.stderr
    assert "usage:" in out.stdout and "--key=value" in out.stdout
    assert "(default:" in out.stdout or "default:" in out.stdout


@pytest.mark.parametrize("command", commands(), ids=lambda c: " ".join(c))
def test_every_command_refuses_an_unknown_option_with_exit_2(command):
    out = run([*command, "--no_such_option=1"])
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert out.stderr.strip().splitlines()[-1].startswith("error: ") and "--no_such_option" in out.stderr


def test_train_help_lists_every_option_with_its_help_and_the_scripts_default():
    out = run(["train_FLO.py", "--help"]).stdout
    flat = " ".join(out.split())
    for f in dataclasses.fields(Config):
        assert f"--{f.name} " in out, f.name
        assert " ".join(f.metadata["help"].split()[:4]) in flat, f.name
    assert re.search(r"--gen_nepoch INT\s+flow epochs.*default: 300\)", flat)  # FLO's value, not Config's 500


def test_registry_fields_all_have_help_kind_and_derived_lists():
    for f in dataclasses.fields(Config):
        assert f.metadata["help"] and f.metadata["kind"] in cli.KINDS, f.name
    assert set(config.RUN_CONTROL) == {"device", "quiet", "disp_interval", "resume", "save_synthetic"}
    assert set(config.ARCHITECTURE) == {"anchors", "num_coupling_layers", "hidden_dim", "input_dim"}
    assert {"dataroot", "out_dir", "device", "quiet", "synth_chunk", "keep_freed_memory", "select"} <= \
        set(config.MACHINE_LOCAL)
    assert not {"lr", "pi", "nSample", "manualSeed", "validation"} & set(config.MACHINE_LOCAL)
    assert {"pi", "prototype", "lr", "weight_decay", "num_coupling_layers", "nSample", "classifier_lr",
            "dropout", "aug_lr", "loops_adv", "entropy_weight", "relation_lr"} == set(config.SPACE)
    assert {"validation", "seeds", "resume", "eval_only", "save_synthetic"} == set(config.NOT_FOR_TUNING)


def test_a_new_field_lands_in_the_derived_lists_by_its_metadata():
    @dataclasses.dataclass
    class Extended(Config):
        blocks_extra: int = opt(2, "an invented architecture option", "architecture", low=1)
        trace: bool = opt(False, "an invented run-control option", "run")
    assert "blocks_extra" in cli.names_where(Extended, kind="architecture")
    assert "trace" in cli.names_where(Extended, resume=True) and "trace" in cli.names_where(Extended, local=True)
    with pytest.raises(ConfigError, match=r"option --blocks_extra: must be >= 1, got 0"):
        cli.check(Extended(blocks_extra=0))


def test_total_iterations_is_the_reference_formula():
    cfg = Config(batchsize=256, gen_nepoch=500)
    assert cfg.total_iterations(23300) == 91 * 500
    assert Config(batchsize=100, gen_nepoch=3).total_iterations(250) == 6
    assert Config(eval_start=4, evl_interval=2, batchsize=100, gen_nepoch=3).evaluations(250) == [6]


@pytest.mark.parametrize("argv,expected", [
    (["--nSample", "30", "--pi=0.1"], dict(nSample=30, pi=0.1)),
    (["--validation", "--lr", "1e-3"], dict(validation=True, lr=1e-3)),
    (["--eval_zsl=no", "--quiet", "yes"], dict(eval_zsl=False, quiet=True)),
    (["--dataset=awa2"], dict(dataset="AWA2")),
    (["--dataset", "cub"], dict(dataset="CUB")),
    (["--dataset=MyBirds"], dict(dataset="MyBirds")),  # own data keeps its spelling
    (["--device=cuda:1"], dict(device="cuda:1")),
])
def test_both_spellings_strict_booleans_and_case_insensitive_benchmarks(argv, expected):
    cfg = parse_overrides(Config(), argv)
    assert {k: getattr(cfg, k) for k in expected} == expected


def test_paths_expand_the_home_folder():
    cfg = parse_overrides(Config(), ["--out_dir=~/runs", "--dataroot", "~/data"])
    assert cfg.out_dir == os.path.expanduser("~/runs") and not cfg.out_dir.startswith("~")
    assert cfg.dataroot == os.path.expanduser("~/data")


@pytest.mark.parametrize("arg,match", [
    ("--eval_zsl=on", "option --eval_zsl: expected true or false"),
    ("--synthetic=on", "option --synthetic: .on. is not one of .., quick, full"),
    ("--prototype=nan", "option --prototype: must be a finite number"),
    ("--lr=inf", "option --lr: must be a finite number"),
    ("--manualSeed=-1", r"option --manualSeed: must be in \[0, 4294967295\]"),
    ("--manualSeed=4294967296", "option --manualSeed: must be in"),
    ("--device=cuda:x", "option --device: expected auto, cpu, cuda or cuda:N"),
    ("--device=cuda:", "option --device: expected auto, cpu, cuda or cuda:N"),
    ("--device=gpu", "option --device: expected auto, cpu, cuda or cuda:N"),
    ("--select=last", "option --select: 'last' is not one of test, val"),
    ("--seeds=1,x", "option --seeds: expected comma-separated integers"),
    ("--seeds=1,-2", "option --seeds: must be in"),
    ("--nSam=3", r"unknown option --nSam \(did you mean --nSample\?\)"),
])
def test_bad_values_are_one_line_naming_the_option(arg, match):
    with pytest.raises(ConfigError, match=match):
        parse_overrides(Config(), [arg])


def test_a_repeated_key_is_an_error_not_the_last_value():
    with pytest.raises(ConfigError, match="option --nSample given twice"):
        parse_overrides(Config(), ["--nSample=3", "--nSample", "4"])


def test_exit_codes_usage_and_data_errors_are_2(tmp_path):
    out = run(["train_AWA2.py", "--lr=fast"])
    assert out.returncode == 2 and out.stderr.strip() == "error: option --lr: expected a number, got 'fast'"
    out = run(["train_AWA2.py", f"--dataroot={tmp_path}"])  # no data there
    assert out.returncode == 2 and out.stderr.startswith("error: ") and str(tmp_path) in out.stderr


def signal_state(pid: int) -> str:
    """The process's blocked, ignored and caught signal masks (for a failure's message)."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return "(no /proc status)"
    return " ".join(l.replace("\t", "") for l in lines if l.startswith(("SigBlk", "SigIgn", "SigCgt")))


@pytest.mark.parametrize("blocked", [False, True])
def test_ctrl_c_exits_130(tmp_path, blocked):
    """Also when started with SIGINT blocked (a mask is inherited through exec): cli.main_guard unblocks it."""
    def child_signals():  # SIGINT's default, whatever this process has (GNU time's children run with it ignored)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        if blocked:
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    proc = subprocess.Popen([sys.executable, "train_AWA2.py", "--synthetic", f"--out_dir={tmp_path}", "--quiet"],
                            cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=child_signals)
    deadline = time.time() + 90
    for line in proc.stdout:  # wait until it trains
        if line.startswith("training:") or time.time() > deadline:
            break
    state = signal_state(proc.pid)
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError(f"SIGINT did not stop the run; its signal masks: {state}") from None
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == "interrupted"


def test_benchmark_counts_live_in_one_table():
    """No count of benchmarks.py appears as a literal in any other source file."""
    counts = {str(getattr(b, k)) for b in benchmarks.BENCHMARKS.values()
              for k in ("images", "trainval", "test_seen", "test_unseen")}
    dataset_dict = re.compile(r"""["'](AWA2|APY|CUB|FLO)["']\s*:\s*[\d({\[]""")
    offenders = []
    for path in ROOT.rglob("*.py"):
        if path.name == "benchmarks.py" and path.parent == ROOT or ".git" in path.parts:
            continue
        text = path.read_text()
        for n in counts:
            if re.search(rf"(?<![\d.]){n}(?![\d.])", text):
                offenders.append(f"{path.relative_to(ROOT)}: {n}")
        if dataset_dict.search(text):
            offenders.append(f"{path.relative_to(ROOT)}: a per-dataset table {dataset_dict.search(text).group(0)}")
    assert not offenders, offenders


def test_a_boolean_before_a_positional_stays_a_flag_and_positionals_may_follow_options():
    @dataclasses.dataclass
    class Options:
        names: list[str] = opt([], "positional names", positional=True)
        force: bool = opt(False, "a flag")
        retries: int = opt(3, "a number", low=0)
    parser = cli.parser_for("t", "", (Options, None))
    assert cli.parse(parser, ["--force", "A", "B"]) == {"force": True, "names": ["A", "B"]}
    assert cli.parse(parser, ["A", "--force", "no", "--retries", "1", "B"]) == {"names": ["A", "B"], "force": False,
                                                                             "retries": 1}


@pytest.mark.parametrize("path", ["data/make_dataset.py", "data/prepare.py", "bench/bench.py", "bench/bench_mining.py",
                                  "bench/expected_time.py", "bench/precision.py", "bench/standin_hardness.py"])
def test_a_module_run_by_path_names_its_python_m_form(path):
    proc = subprocess.run([sys.executable, path, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    module = path[:-3].replace("/", ".")
    assert proc.returncode == 2 and proc.stderr == f"error: run it from the repository root as: python -m {module}\n"
