"""Where a study lives: Optuna storage (SQLite or a server), heartbeats and retries of trials
whose worker died, the config every worker of a study must share, and a file lock.

tune.py's plumbing, kept apart so tune.py reads as search space, objective, worker, report.
Imports config only.
"""
from __future__ import annotations

import contextlib
import dataclasses
import time
import warnings
from pathlib import Path

import optuna
from optuna.trial import TrialState

from config import Config, ConfigError


# Options that may differ between the workers of one study: where things are, not what is computed.
MACHINE_LOCAL = ("dataroot", "out_dir", "device", "quiet", "disp_interval", "synth_chunk", "keep_freed_memory",
                 "select")


def fingerprint(cfg: Config) -> dict:
    """The base config every trial of a study starts from (stored with the study)."""
    return {k: v for k, v in dataclasses.asdict(cfg).items() if k not in MACHINE_LOCAL}


def open_storage(url: str, heartbeat: int) -> optuna.storages.RDBStorage:
    if url.startswith("sqlite"):
        engine = {"connect_args": {"timeout": 120}}  # workers on one file wait for its lock
    else:
        engine = {"pool_pre_ping": True}  # a server may drop idle connections between long trials
    for attempt in range(3):
        try:
            with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna 5, and work
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(
                    url, engine_kwargs=engine, heartbeat_interval=heartbeat,
                    heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=3))
        except Exception as exc:  # SQLAlchemy and the drivers raise many types
            error = exc
            time.sleep(1 + attempt)  # workers started together on a new database race to create its tables
    raise ConfigError(f"option --storage: cannot open {shown(url)} "
                      f"({type(error).__name__}: {str(error).splitlines()[0][:200]})")


def shown(url: str) -> str:
    """The URL without its password."""
    from sqlalchemy.engine import make_url
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@")[-1]


def check_same_config(study: optuna.Study, cfg: Config) -> None:
    theirs = study.user_attrs.get("base_config")
    if theirs is None:
        return  # its creator is still writing it
    diff = sorted(k for k, v in fingerprint(cfg).items() if theirs.get(k) != v)
    if diff:
        k = diff[0]
        raise ConfigError(f"option --{k}: study {study.study_name} was started with --{k}={theirs.get(k)}, this "
                          f"command gives {getattr(cfg, k)}; run every worker with the same options, or start a "
                          f"new study with --study=NAME")


def load_existing_study(storage, name: str, cfg: Config) -> optuna.Study:
    try:
        study = optuna.load_study(storage=storage, study_name=name)
    except KeyError:
        names = optuna.get_all_study_names(storage)
        raise ConfigError(f"option --study: no study {name!r} in this storage "
                          f"(it holds: {', '.join(names) or 'none'})") from None
    check_same_config(study, cfg)
    return study


@contextlib.contextmanager
def exclusive(lock_path: Path):
    import fcntl
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def started(study: optuna.Study) -> int:
    """Trials finished or under way, after failing those whose worker stopped beating (they are retried)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    live = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)
    return len(study.get_trials(deepcopy=False, states=live))
