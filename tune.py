"""Tune a dataset's settings with Optuna on the leak-free validation split, on one machine or many.

    python tune.py AWA2 --trials=40                          # one machine; SQLite study under out/tune/
    python tune.py AWA2 --storage=postgresql://u:p@db/gsm    # the same line on every machine/GPU
    python tune.py AWA2 --report [--final_seeds=6152,1,2]    # best settings, trial table, plots

A trial is one full training run of train_<DATASET>.py's `config`, with this command line's
--key=value overrides applied, then the trial's values from SPACE, and --validation on: it trains
and scores on a split of the training data alone (README "Honest selection"), so no trial reads
the test split. Its value is the validation H under the rule --select=val uses: the best
(evaluation, classifier epoch) on the validation split. A dataset without a train_<DATASET>.py
(a folder made by data/make_dataset.py) starts from Config defaults, as `train.py --dataset=NAME`.
"""
from __future__ import annotations

import contextlib
import csv
import dataclasses
import gc
import importlib
import json
import os
import re
import socket
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import optuna
import torch
from optuna.trial import TrialState

import provenance
import train
import util
import cli
import config
from benchmarks import canonical_name
from cli import ConfigError, opt
from config import NOT_FOR_TUNING, Config
from fileio import atomic_text, atomic_write
from report import choose_on_validation, print_seed_table
from runs import NonFiniteError, read_jsonl
from studies import (check_same_config, check_same_settings, exclusive, fingerprint, joiner_seed,  # noqa: F401
                     load_existing_study, open_storage, run_trial, shown, store_settings, wait_for_settings,
                     work_left)

ROOT = Path(__file__).resolve().parent

# ----------------------------------------------------------------------------- search space

SPACE_VERSION = 1  # part of the study name: change it with SPACE, so old trials are not mixed in
# name: (kind, low, high). "uniform" and "log": absolute bounds (log: log-uniform); "int": integer
# bounds; "factor": log-uniform from low x to high x the script's value, so each dataset keeps
# its own scale and a short schedule (--synthetic: nSample=50) stays short. The script's own
# values are always trial 0 of a new study.
# name: (kind, low, high), from the `tune=` of each option in config.py. "uniform" and "log":
# absolute bounds (log: log-uniform); "int": integer bounds; "factor": log-uniform from low x to
# high x the script's value, so each dataset keeps its own scale and a short schedule
# (--synthetic: nSample=50) stays short. The script's own values are always trial 0 of a new study.
# The order trials draw their values in: part of what a seed proposes, so kept as SPACE_VERSION 1
# drew them (tests/test_tune.py checks it names every option config.py marks for tuning); the
# GSMFlow-TMM knobs (kind "variant") are searched only with --variant=tmm (docs/tmm.md).
SUGGEST_ORDER = ("pi", "prototype", "lr", "weight_decay", "num_coupling_layers", "nSample", "classifier_lr", "dropout",
                 "aug_lr", "loops_adv", "entropy_weight", "relation_lr")
TMM_KNOBS = cli.names_where(Config, kind="variant")
MM21_SPACE = {name: config.SPACE[name] for name in SUGGEST_ORDER if name in config.SPACE and name not in TMM_KNOBS}
TMM_SPACE = {name: config.SPACE[name] for name in SUGGEST_ORDER if name in config.SPACE}
SPACE = MM21_SPACE  # the space of this command's variant (use_space)


def use_space(cfg: Config) -> None:
    global SPACE
    SPACE = TMM_SPACE if cfg.variant == "tmm" else MM21_SPACE
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


def check_in_space(cfg: Config) -> None:
    """A study's first trial runs the script's own values: each must lie in its SPACE range."""
    for name in SPACE:
        low, high, _ = bounds(name, cfg)
        value = getattr(cfg, name)
        if not low <= value <= high:
            raise ConfigError(f"option --{name}={value:g}: outside tune.py's search range {low:g} .. {high:g} "
                              f"(SPACE); a study's first trial runs the script's own values, so give one inside it")


def space_record() -> dict:
    """SPACE as stored with a study (JSON): workers with another SPACE are refused."""
    return {"version": SPACE_VERSION, **{k: list(v) for k, v in SPACE.items()}}


# ----------------------------------------------------------------------------- objective

def objective(trial: optuna.Trial, cfg: Config, study_dir: Path) -> float:
    """One training run on the validation split; reports each evaluation's H for pruning."""
    trial_cfg = dataclasses.replace(cfg, **suggest(trial, cfg), validation=True, out_dir=str(study_dir),
                                    seeds="", save_synthetic="", resume="", eval_only="")
    if not trial_cfg.validation:
        raise RuntimeError("a trial must train and score on the validation split, never the test split")
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
    if summary["split"] != "validation":
        raise RuntimeError(f"trial {trial.number} ran on the {summary['split']} split, not the validation split")
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


def make_pruner() -> optuna.pruners.BasePruner:
    """Stops a trial whose validation H at an evaluation is below the median of earlier trials' there."""
    return optuna.pruners.MedianPruner(n_startup_trials=PRUNER_STARTUP_TRIALS)


def open_study(storage, name: str, cfg: Config, data: dict | None = None) -> tuple[optuna.Study, bool]:
    """Create the study (its first trial: the script's own values) or join it; True if created.
    `data`: {file name: sha256} of the data files (None: not compared, as for --synthetic)."""
    pruner = make_pruner()
    shared = {"space": space_record(), "heartbeat": storage.get_heartbeat_interval(), "data": data}
    first = (script_values(cfg), f"train_{cfg.dataset}.py")
    try:
        study = optuna.create_study(storage=storage, study_name=name, direction="maximize", pruner=pruner,
                                    sampler=optuna.samplers.TPESampler(seed=cfg.manualSeed))
    except optuna.exceptions.DuplicatedStudyError:
        # Joining workers must not propose the first worker's points, nor each other's: a seed of their own.
        study = optuna.load_study(storage=storage, study_name=name, pruner=pruner,
                                  sampler=optuna.samplers.TPESampler(seed=joiner_seed()))
        if not wait_for_settings(study):  # its creator died before storing them: this worker does
            store_settings(study, cfg, shared, *first)
        check_same_settings(study, cfg, shared)
        return study, False
    store_settings(study, cfg, shared, *first)
    return study, True


def preflight(cfg: Config, study_dir: Path) -> tuple[str, dict | None]:
    """Load the validation split once, as every trial will, so bad input fails here in one line.
    Returns its description and {file name: sha256} of its files (None with --synthetic: the stand-in
    is generated on each machine, and its MAT headers carry the time)."""
    vcfg = dataclasses.replace(cfg, validation=True, out_dir=str(study_dir))
    with exclusive(study_dir / ".data.lock"):  # --synthetic: one worker generates the stand-in, the others wait
        data = train.prepare_data(vcfg)
    if data.split != "validation":
        raise RuntimeError(f"tune.py loaded the {data.split} split; trials must use the validation split")
    n = len(data.train_label)
    if cfg.batchsize >= n:
        raise ConfigError(f"option --batchsize={cfg.batchsize}: must be smaller than the {n} training images "
                          f"of the validation split")
    total, evaluations = cfg.total_iterations(n), cfg.evaluations(n, data.reference_train)
    if not evaluations:
        raise ConfigError(f"option --eval_start={cfg.eval_start}: a run on the {data.reference_train} trainval rows "
                          f"trains {cfg.total_iterations(data.reference_train)} iterations, so no evaluation "
                          f"(multiples of --evl_interval={cfg.evl_interval} above --eval_start) would score a trial")
    files = None if cfg.synthetic else {Path(f["path"]).name: f["sha256"]
                                        for f in provenance.describe_files(data.files)}
    return f"{data.describe()}; {total} iterations, evaluations at {evaluations}", files


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


def print_taken(trial: optuna.trial.FrozenTrial, heartbeat: int) -> None:
    """One line for a trial another worker failed while it ran here (it is retried as a new trial)."""
    from tqdm import tqdm
    tqdm.write(f"trial {trial.number:3d} failed by another worker while it ran here (no heartbeat from this "
               f"worker reached the storage for {2 * heartbeat} s); it is retried as a new trial, and this "
               f"worker's run of it stopped", file=sys.stdout)
    sys.stdout.flush()


def fmt_params(params: dict) -> str:
    return " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def work(cfg: Config, opts: dict, storage, name: str, study_dir: Path) -> optuna.Study:
    """Run trials while the study has work left for `opts['trials']` (or until --timeout passes)."""
    described, files = preflight(cfg, study_dir)
    print(f"data: {described}")
    study, created = open_study(storage, name, cfg, files)
    print(f"study {name} ({'created' if created else 'joined'}) in {shown(opts['storage'])}; "
          f"{opts['trials']} trials in all; run directories under {study_dir}/{cfg.dataset}/")
    print(f"objective: validation H (best evaluation and classifier epoch, --select=val's rule); "
          f"the test split is never read by a trial")
    deadline = time.monotonic() + opts["timeout"] if opts["timeout"] else None
    while work_left(study, opts["trials"]) and (deadline is None or time.monotonic() < deadline):
        trial, finished_here = run_trial(study, lambda t: objective(t, cfg, study_dir))
        gc.collect()
        if finished_here:
            print_trial(study, trial)
        else:
            print_taken(trial, study._storage.get_heartbeat_interval())
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

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as f:
            out = csv.writer(f)
            out.writerow(["number", "state", "value", "seconds", "retry_of", *SPACE, *attrs])
            for t in study.get_trials(deepcopy=False):
                seconds = round(t.duration.total_seconds(), 1) if t.duration else ""
                out.writerow([t.number, t.state.name, "" if t.value is None else t.value, seconds,
                              t.system_attrs.get("failed_trial", ""), *(t.params.get(k, "") for k in SPACE),
                              *(t.user_attrs.get(k, "") for k in attrs)])
    atomic_write(path, write)


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
    atomic_text(out, json.dumps({**best, "select": select, **result}, indent=2) + "\n")
    print(f"written: {out}")
    return result


# ----------------------------------------------------------------------------- command line

STUDY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


@dataclass
class TuneOptions:
    dataset: str = opt("", "AWA2 | APY | CUB | FLO (their train_<DATASET>.py settings), or a folder under "
                           "--dataroot made by data/make_dataset.py (Config defaults)", positional=True, dataset=True)
    trials: int = opt(40, "the study ends when this many trials have finished (completed or pruned), over all "
                          "workers", low=1)
    storage: str = opt("", "any SQLAlchemy URL (default: sqlite:///<out_dir>/tune/tune.db)")
    study: str = opt("", "study name (default: <DATASET>[-synthetic]-space<SPACE_VERSION>); letters, digits, "
                         "'.', '_', '-'")
    timeout: float = opt(0.0, "this worker starts no trial after this many seconds (0: no limit)", low=0)
    heartbeat: int = opt(60, "seconds between a trial's heartbeats; a trial silent for twice this is failed and "
                             "retried (stored with the study: every worker uses the same)", low=1)
    report: bool = opt(False, "print the best settings, write trials.csv and the plots; no new trial. Reads the "
                              "study's stored settings: the workers' overrides need not be typed again")
    final_seeds: str = opt("", "with --report: run the best settings on the test split over these seeds, "
                               "e.g. 6152,1,2")


def command_parser() -> "cli.argparse.ArgumentParser":
    return cli.parser_for("tune.py", __doc__, (TuneOptions, None), (Config, None),
                          epilog="Config options (the run's; defaults shown are Config's, a dataset's script sets "
                                 "its own): any --key=value of train_<DATASET>.py --help.")


def script_config(dataset: str, explicit: dict) -> Config:
    """The settings a trial starts from: train_<DATASET>.py's (its TMM block with --variant=tmm), or
    Config defaults for your own folder, as `python train.py --dataset=NAME`."""
    if (ROOT / f"train_{dataset}.py").is_file():
        module = importlib.import_module(f"train_{dataset}")
        return train.variant_settings(module.config, explicit, getattr(module, "TMM", None))
    return train.variant_settings(Config(dataset=dataset), explicit, train.OWN_DATA_TMM)


def stored_study_name(storage, dataset: str, name: str) -> str:
    """--report without --study: the default name, or the one study of this dataset in the storage."""
    names = optuna.get_all_study_names(storage)
    if name in names:
        return name
    mine = [n for n in names if re.fullmatch(rf"{re.escape(dataset)}(-synthetic(-full)?)?(-tmm)?-space{SPACE_VERSION}", n)]
    return mine[0] if len(mine) == 1 else name


def tune(argv: list[str]):
    given = cli.parse(command_parser(), argv)
    own = {f.name for f in dataclasses.fields(TuneOptions)}
    opts = TuneOptions(**{k: v for k, v in given.items() if k in own})
    explicit = {k: v for k, v in given.items() if k not in own}
    if not opts.dataset:
        raise ConfigError("a dataset is needed: python tune.py DATASET [--key=value ...] (see --help)")
    for key in NOT_FOR_TUNING:
        if key in explicit:
            raise ConfigError(f"option --{key}: not for tune.py (every trial runs with --validation; "
                              f"the test-split runs are --report --final_seeds=...)")
    if opts.final_seeds:
        if not opts.report:
            raise ConfigError("option --final_seeds: runs after --report (add --report)")
        config.seed_list(opts.final_seeds, "final_seeds")
    if opts.study and not STUDY_NAME.fullmatch(opts.study):
        raise ConfigError(f"option --study: {opts.study!r} is not a study name (letters, digits, '.', '_', "
                          f"'-', from a letter or digit; it names a folder under out_dir/tune/)")
    script = script_config(canonical_name(opts.dataset), explicit)
    cfg = config.apply(script, explicit)
    use_space(cfg)
    tune_dir = Path(cfg.out_dir) / "tune"
    storage_url = opts.storage
    if not storage_url:
        tune_dir.mkdir(parents=True, exist_ok=True)
        storage_url = f"sqlite:///{(tune_dir / 'tune.db').resolve()}"
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our own line per trial instead of Optuna's
    storage = open_storage(storage_url, opts.heartbeat)
    variant = "-tmm" if cfg.variant == "tmm" else ""
    standin = config.STANDIN_SUFFIX[cfg.synthetic]
    name = opts.study or f"{cfg.dataset}{standin}{variant}-space{SPACE_VERSION}"
    run_opts = {**dataclasses.asdict(opts), "storage": storage_url}
    if opts.report:
        name = opts.study or stored_study_name(storage, cfg.dataset, name)
        cfg = stored_config(storage, name, cfg, explicit)
        use_space(cfg)
        # final runs default to --select=val: the evaluation and classifier epoch are chosen on validation too
        return report(cfg, script, run_opts, storage, name, tune_dir / name, explicit.get("select", "val"))
    check_in_space(cfg)
    return work(cfg, run_opts, storage, name, tune_dir / name)


def stored_config(storage, name: str, cfg: Config, explicit: dict) -> Config:
    """The study's base settings as its workers ran them, with this machine's local options (--report)."""
    try:
        stored = optuna.load_study(storage=storage, study_name=name).user_attrs.get("base_config") or {}
    except KeyError:
        return cfg  # load_existing_study names the missing study
    known = {f.name for f in dataclasses.fields(Config)}
    base = {**dataclasses.asdict(cfg), **{k: v for k, v in stored.items() if k in known}}
    # what this command gives explicitly wins (load_existing_study then refuses it if the study differs)
    return config.validate(Config(**{**base, **explicit}))


def main(argv: list[str] | None = None):
    return cli.main_guard(tune, sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    main()
