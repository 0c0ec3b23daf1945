"""Tune a dataset's settings with Optuna on the leak-free validation split, on one machine or many.

    python tune.py AWA2 --trials=40                          # one machine; SQLite study under out/tune/
    python tune.py AWA2 --storage=postgresql://u:p@db/gsm    # the same line on every machine/GPU
    python tune.py AWA2 --report [--final_seeds=6152,1,2]    # best settings, trial table, plots

A trial is one full training run of train_<DATASET>.py's `config`, with this command line's
--key=value overrides applied, then the trial's values from SPACE, and --validation on: it trains
and scores on a split of the training data alone (README "Honest selection"), so no trial reads
the test split. Its value is the validation H under the rule --select=val uses: the best
(evaluation, classifier epoch) on the validation split. Own options:

    --trials=N         the study ends when N trials have finished (completed or pruned), over all workers
    --storage=URL      any SQLAlchemy URL; default sqlite:///<out_dir>/tune/tune.db
    --study=NAME       default <DATASET>[-synthetic]-space<SPACE_VERSION>
    --timeout=SECONDS  this worker starts no trial after that long
    --heartbeat=SECONDS  a trial whose worker stops beating for twice this long is failed and retried
    --report           print the best settings, write trials.csv and the plots; no new trial
    --final_seeds=S,.. with --report: run the best settings on the test split over these seeds
"""
from __future__ import annotations

import contextlib
import csv
import dataclasses
import importlib
import json
import os
import socket
import sys
import time
import warnings
from pathlib import Path

import optuna
import torch
from optuna.trial import TrialState

import train
import util
from config import Config, ConfigError, parse_args, parse_overrides
from report import choose_on_validation, print_seed_table
from runs import NonFiniteError, fail, read_jsonl
from studies import (check_same_config, exclusive, fingerprint, load_existing_study, open_storage,  # noqa: F401
                     shown, started)

ROOT = Path(__file__).resolve().parent

# ----------------------------------------------------------------------------- search space

SPACE_VERSION = 1  # part of the study name: change it with SPACE, so old trials are not mixed in
# name: (kind, low, high). "uniform" and "log": absolute bounds (log: log-uniform); "int": integer
# bounds; "factor": log-uniform from low x to high x the script's value, so each dataset keeps
# its own scale and a short schedule (--synthetic: nSample=50) stays short. The script's own
# values are always trial 0 of a new study.
SPACE = {
    "pi":                  ("uniform", 0.0, 0.3),   # the authors: 0.02 (APY) .. 0.15 (AWA2)
    "prototype":           ("log", 0.3, 30.0),      # the authors: 1 .. 10
    "lr":                  ("factor", 1 / 3, 3.0),  # the authors: 3e-4 everywhere
    "weight_decay":        ("factor", 0.1, 10.0),   # the authors: 1e-6 .. 1e-4
    "num_coupling_layers": ("int", 2, 6),           # the authors: 3 or 5
    "nSample":             ("factor", 0.25, 2.0),   # the authors: 600 .. 50,000 (x2 at most: AWA2's 4 GB buffer)
    "classifier_lr":       ("factor", 1 / 3, 3.0),  # the authors: 1e-3 .. 1e-2
    "dropout":             ("uniform", 0.0, 0.5),   # the authors: 0
}
MM21_SPACE = SPACE
# With --variant=tmm (docs/tmm.md) the mining knobs are searched too, around the TMM block's values.
TMM_SPACE = {
    "aug_lr":              ("factor", 0.2, 5.0),    # the authors: 20 .. 100
    "loops_adv":           ("factor", 0.5, 2.0),    # the authors: 20 .. 30
    "entropy_weight":      ("factor", 0.1, 10.0),   # the authors: 1 .. 20
    "relation_lr":         ("factor", 1 / 3, 3.0),  # the authors: 1e-4 .. 1e-3
}
PRUNER_STARTUP_TRIALS = 5  # the median pruner stops nothing until this many trials have finished


def bounds(name: str, cfg: Config) -> tuple[float, float, bool]:
    """(low, high, log) of one SPACE entry for this dataset's config."""
    kind, low, high = SPACE[name]
    if kind != "factor":
        return low, high, kind == "log"
    base = getattr(cfg, name)
    if not base > 0:
        raise ConfigError(f"option --{name}: tune.py searches around the script's value, which must be > 0 "
                          f"(got {base})")
    if isinstance(base, int):
        return max(1, round(base * low)), max(1, round(base * high)), True
    return base * low, base * high, True


def suggest(trial: optuna.Trial, cfg: Config) -> dict:
    values = {}
    for name in SPACE:
        low, high, log = bounds(name, cfg)
        if isinstance(getattr(cfg, name), int):
            values[name] = trial.suggest_int(name, int(low), int(high), log=log)
        else:
            values[name] = trial.suggest_float(name, low, high, log=log)
    return values


def script_values(cfg: Config) -> dict:
    return {name: getattr(cfg, name) for name in SPACE}


# ----------------------------------------------------------------------------- objective

def objective(trial: optuna.Trial, cfg: Config, study_dir: Path) -> float:
    """One training run on the validation split; reports each evaluation's H for pruning."""
    trial_cfg = dataclasses.replace(cfg, **suggest(trial, cfg), validation=True, out_dir=str(study_dir),
                                    seeds="", save_synthetic="", resume="", eval_only="")
    assert trial_cfg.validation, "a trial must train and score on the validation split, never the test split"
    trial.set_user_attr("host", socket.gethostname())

    def on_evaluation(row: dict, run_dir: Path) -> None:
        trial.set_user_attr("run_dir", str(Path(run_dir).resolve()))
        trial.report(row["H"], row["iteration"])  # the evaluation's best-epoch validation H
        if trial.should_prune():
            note(run_dir, f"pruned by Optuna (trial {trial.number}) after the evaluation at iteration "
                          f"{row['iteration']}: validation H {row['H']:.2f}")
            raise optuna.TrialPruned(f"validation H {row['H']:.2f} at iteration {row['iteration']}")

    try:
        with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):  # the run's lines are in its log.txt
            summary = train.run(trial_cfg, on_evaluation=on_evaluation)
    except (NonFiniteError, MemoryError, torch.OutOfMemoryError) as exc:
        # settings that diverge or do not fit are an outcome, not a crash of the worker
        trial.set_user_attr("error", str(exc).splitlines()[0][:300])
        raise optuna.TrialPruned(type(exc).__name__) from None
    assert summary["split"] == "validation", f"trial {trial.number} ran on the {summary['split']} split"
    rows = read_jsonl(Path(summary["run_dir"]) / "metrics.jsonl")
    total = summary["total_iterations"]
    chosen = choose_on_validation(rows, total, rows, total)  # --select=val's rule, on validation rows
    trial.set_user_attr("iteration", chosen["iteration"])
    trial.set_user_attr("classifier_epoch", chosen["classifier_epoch"])
    return chosen["H"]


def note(run_dir: Path, text: str) -> None:
    with open(run_dir / "log.txt", "a") as f:
        f.write(text + "\n")


# ----------------------------------------------------------------------------- worker

NOT_FOR_TUNING = ("validation", "seeds", "resume", "eval_only", "save_synthetic")  # tune.py sets or refuses these

def make_pruner() -> optuna.pruners.BasePruner:
    """Stops a trial whose validation H at an evaluation is below the median of earlier trials' there."""
    return optuna.pruners.MedianPruner(n_startup_trials=PRUNER_STARTUP_TRIALS)


def open_study(storage, name: str, cfg: Config) -> tuple[optuna.Study, bool]:
    """Create the study (its first trial: the script's own values) or join it; True if created."""
    pruner = make_pruner()
    try:
        study = optuna.create_study(storage=storage, study_name=name, direction="maximize", pruner=pruner,
                                    sampler=optuna.samplers.TPESampler(seed=cfg.manualSeed))
    except optuna.exceptions.DuplicatedStudyError:
        # Joining workers must not propose the first worker's points: their TPE seed differs.
        seed = cfg.manualSeed + 1 + os.getpid()
        study = optuna.load_study(storage=storage, study_name=name, pruner=pruner,
                                  sampler=optuna.samplers.TPESampler(seed=seed))
        check_same_config(study, cfg)
        return study, False
    study.set_user_attr("base_config", fingerprint(cfg))
    study.set_user_attr("space", {"version": SPACE_VERSION, **{k: list(v) for k, v in SPACE.items()}})
    study.enqueue_trial(script_values(cfg), user_attrs={"origin": f"train_{cfg.dataset}.py"})
    return study, True


def preflight(cfg: Config, study_dir: Path) -> str:
    """Load the validation split once, as every trial will, so bad input fails here in one line."""
    vcfg = dataclasses.replace(cfg, validation=True, out_dir=str(study_dir))
    with exclusive(study_dir / ".data.lock"):  # --synthetic: one worker generates the stand-in, the others wait
        data = train.prepare_data(vcfg)
    assert data.split == "validation"
    n = len(data.train_label)
    if cfg.batchsize >= n:
        raise ConfigError(f"option --batchsize={cfg.batchsize}: must be smaller than the {n} training images "
                          f"of the validation split")
    total = (n // cfg.batchsize) * cfg.gen_nepoch
    evaluations = [it for it in range(cfg.eval_start + 1, total + 1) if it % cfg.evl_interval == 0]
    if not evaluations:
        raise ConfigError(f"option --eval_start={cfg.eval_start}: on the validation split a run trains {total} "
                          f"iterations, so no evaluation (multiples of --evl_interval={cfg.evl_interval} above "
                          f"--eval_start) would score a trial")
    return f"{data.describe()}; {total} iterations, evaluations at {evaluations}"


def print_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """One line per finished trial: state, value, wall time, values."""
    from tqdm import tqdm
    value = f"H {trial.value:6.2f}" if trial.value is not None else "H      -"
    seconds = trial.duration.total_seconds() if trial.duration else 0.0
    retry = trial.system_attrs.get("failed_trial")
    extra = (f" (retry of trial {retry})" if retry is not None else "") + \
        (f" [{trial.user_attrs['error']}]" if "error" in trial.user_attrs else "")
    tqdm.write(f"trial {trial.number:3d} {trial.state.name.lower():8s} {value}  {seconds:5.0f}s  "
               f"{fmt_params(trial.params)}{extra}", file=sys.stdout)
    sys.stdout.flush()


def fmt_params(params: dict) -> str:
    return " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def work(cfg: Config, opts: dict, storage, name: str, study_dir: Path) -> optuna.Study:
    """Run trials until the study has opts['trials'] finished or running ones (or --timeout passes)."""
    print(f"data: {preflight(cfg, study_dir)}")
    study, created = open_study(storage, name, cfg)
    print(f"study {name} ({'created' if created else 'joined'}) in {shown(opts['storage'])}; "
          f"{opts['trials']} trials in all; run directories under {study_dir}/{cfg.dataset}/")
    print(f"objective: validation H (best evaluation and classifier epoch, --select=val's rule); "
          f"the test split is never read by a trial")
    deadline = time.monotonic() + opts["timeout"] if opts["timeout"] else None
    while started(study) < opts["trials"] and (deadline is None or time.monotonic() < deadline):
        study.optimize(lambda t: objective(t, cfg, study_dir), n_trials=1, callbacks=[print_trial],
                       gc_after_trial=True)
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if done:
        best = study.best_trial
        print(f"best so far: trial {best.number}, validation H {best.value:.2f} "
              f"({len(done)} complete trials); python tune.py {cfg.dataset} ... --report prints its settings")
    return study


# ----------------------------------------------------------------------------- report

def rounded(value):
    """4 significant digits: the pasted block and the final runs use the same numbers."""
    return float(f"{value:.4g}") if isinstance(value, float) else value


def settings_block(study: optuna.Study, cfg: Config, script: Config) -> str:
    """The best trial's values as train_<DATASET>.py lines, each with the value it replaces."""
    best = study.best_trial
    n_finished = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))
    lines = [f"# study {study.study_name}: trial {best.number} of {n_finished}, validation H {best.value:.2f}"]
    under = [f"{k}={v}" for k, v in fingerprint(cfg).items() if k not in SPACE and getattr(script, k) != v]
    if under:
        lines.append(f"# found with these changes to train_{cfg.dataset}.py, which the values go with: {' '.join(under)}")
    target = "TMM = dict(...)" if cfg.variant == "tmm" else "Config(...)"
    lines.append(f"# settings selected on validation; paste into train_{cfg.dataset}.py's {target}:")
    for name, value in best.params.items():
        lines.append(f"    {name}={rounded(value)!r},".ljust(32) + f"# was {getattr(cfg, name)!r}")
    return "\n".join(lines)


def write_trials_csv(study: optuna.Study, path: Path) -> None:
    attrs = ("run_dir", "host", "iteration", "classifier_epoch", "origin", "error")
    with open(path.with_suffix(".tmp"), "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["number", "state", "value", "seconds", "retry_of", *SPACE, *attrs])
        for t in study.get_trials(deepcopy=False):
            seconds = round(t.duration.total_seconds(), 1) if t.duration else ""
            out.writerow([t.number, t.state.name, "" if t.value is None else t.value, seconds,
                          t.system_attrs.get("failed_trial", ""), *(t.params.get(k, "") for k in SPACE),
                          *(t.user_attrs.get(k, "") for k in attrs)])
    path.with_suffix(".tmp").replace(path)


def write_plots(study: optuna.Study, study_dir: Path) -> list[str]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm
    written = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        for file, plot in (("history.png", ovm.plot_optimization_history), ("importances.png", ovm.plot_param_importances)):
            try:
                ax = plot(study)
            except (ValueError, RuntimeError) as exc:  # e.g. importances of fewer than two trials
                print(f"{file}: not drawn ({exc})")
                continue
            ax.figure.savefig(study_dir / file, dpi=120, bbox_inches="tight")
            plt.close(ax.figure)
            written.append(str(study_dir / file))
    return written


def report(cfg: Config, script: Config, opts: dict, storage, name: str, study_dir: Path, select: str) -> dict:
    study = load_existing_study(storage, name, cfg)
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        raise ConfigError(f"option --report: study {name} has no complete trial yet")
    study_dir.mkdir(parents=True, exist_ok=True)
    print(settings_block(study, cfg, script))
    write_trials_csv(study, study_dir / "trials.csv")
    print(f"written: {study_dir / 'trials.csv'}")
    for path in write_plots(study, study_dir):
        print(f"written: {path}")
    result = {"study": name, "best_trial": study.best_trial.number, "validation_H": study.best_value,
              "params": {k: rounded(v) for k, v in study.best_params.items()}}
    if opts["final_seeds"]:
        result["final"] = final_runs(cfg, result, opts["final_seeds"], select, study_dir)
    return result


def final_runs(cfg: Config, best: dict, seeds: str, select: str, study_dir: Path) -> dict:
    """The best settings on the TEST split, once per seed (train.run_seeds), mean +- std."""
    final = dataclasses.replace(cfg, **best["params"], validation=False, select=select, seeds=seeds,
                                out_dir=str(study_dir))
    print(f"\nfinal runs: trial {best['best_trial']}'s settings on the test split, seeds {seeds}, --select={select}")
    result = train.run_seeds(final)
    print_seed_table(result["table"], f"{cfg.dataset}: settings selected on validation (study {best['study']}, trial "
                                      f"{best['best_trial']}), test split, mean +- std over seeds {seeds}")
    out = study_dir / f"final-trial{best['best_trial']}-seeds{seeds.replace(',', '_')}.json"
    out.write_text(json.dumps({**best, "select": select, **result}, indent=2) + "\n")
    print(f"written: {out}")
    return result


# ----------------------------------------------------------------------------- command line

TUNE_OPTIONS = {"trials": 40, "storage": "", "study": "", "timeout": 0.0, "heartbeat": 60, "report": False,
                "final_seeds": ""}


def parse_command(argv: list[str]) -> tuple[str, dict, list[str]]:
    """DATASET, tune.py's own options, and the --key=value overrides for the train script's config."""
    scripts = sorted(p.stem[len("train_"):] for p in ROOT.glob("train_*.py"))
    if not argv or argv[0].startswith("-"):
        raise ConfigError(f"usage: python tune.py DATASET [--trials=N] [--storage=URL] [--report] [--key=value ...] "
                          f"(DATASET: {', '.join(scripts)})")
    dataset, opts, overrides = argv[0], dict(TUNE_OPTIONS), []
    if dataset not in scripts:
        raise ConfigError(f"unknown dataset {dataset!r}: no train_{dataset}.py (known: {', '.join(scripts)})")
    for arg in argv[1:]:
        key, has_value, text = arg[2:].partition("=") if arg.startswith("--") else ("", False, "")
        if key not in TUNE_OPTIONS:
            overrides.append(arg)  # parse_overrides checks it, as the train scripts do
            continue
        kind = type(TUNE_OPTIONS[key])
        if kind is bool:
            opts[key] = not has_value or text.lower() in ("1", "true", "yes", "on")
            continue
        if not has_value:
            raise ConfigError(f"option --{key} needs a value: --{key}=VALUE")
        try:
            opts[key] = kind(text)
        except ValueError:
            raise ConfigError(f"option --{key}: expected {'an integer' if kind is int else 'a number'}, "
                              f"got {text!r}") from None
    if opts["trials"] < 1 or opts["heartbeat"] < 1 or opts["timeout"] < 0:
        bad = "trials" if opts["trials"] < 1 else "heartbeat" if opts["heartbeat"] < 1 else "timeout"
        raise ConfigError(f"option --{bad}: must be positive, got {opts[bad]}")
    if opts["final_seeds"]:
        if not opts["report"]:
            raise ConfigError("option --final_seeds: runs after --report (add --report)")
        try:
            [int(s) for s in opts["final_seeds"].split(",")]
        except ValueError:
            raise ConfigError(f"option --final_seeds: expected comma-separated integers, "
                              f"got {opts['final_seeds']!r}") from None
    return dataset, opts, overrides


def main(argv: list[str] | None = None):
    argv = sys.argv[1:] if argv is None else argv
    try:
        dataset, opts, overrides = parse_command(argv)
        explicit = parse_args(overrides)
        for key in NOT_FOR_TUNING:
            if key in explicit:
                raise ConfigError(f"option --{key}: not for tune.py (every trial runs with --validation; "
                                  f"the test-split runs are --report --final_seeds=...)")
        module = importlib.import_module(f"train_{dataset}")
        script = train.variant_defaults(module.config, overrides, getattr(module, "TMM", None))
        cfg = parse_overrides(script, overrides)
        global SPACE
        SPACE = {**MM21_SPACE, **TMM_SPACE} if cfg.variant == "tmm" else MM21_SPACE
        for name in SPACE:
            bounds(name, cfg)
        variant = "-tmm" if cfg.variant == "tmm" else ""
        name = opts["study"] or f"{dataset}{'-synthetic' if cfg.synthetic else ''}{variant}-space{SPACE_VERSION}"
        tune_dir = Path(cfg.out_dir) / "tune"
        if not opts["storage"]:
            tune_dir.mkdir(parents=True, exist_ok=True)
            opts["storage"] = f"sqlite:///{(tune_dir / 'tune.db').resolve()}"
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # our own line per trial instead of Optuna's
        storage = open_storage(opts["storage"], opts["heartbeat"])
        study_dir = tune_dir / name
        if opts["report"]:
            # final runs default to --select=val: the evaluation and classifier epoch are chosen on validation too
            return report(cfg, script, opts, storage, name, study_dir, explicit.get("select", "val"))
        return work(cfg, opts, storage, name, study_dir)
    except (ConfigError, util.DataError) as exc:
        fail(str(exc))


if __name__ == "__main__":
    main()
