"""Where a study lives: Optuna storage (SQLite or a server), heartbeats and retries of trials
whose worker died, the config every worker of a study must share, and a file lock.

tune.py's plumbing, kept apart so tune.py reads as search space, objective, worker, report.
Imports config only.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import threading
import time
import warnings
from pathlib import Path

import optuna
from optuna.trial import TrialState

import config
from config import Config, ConfigError


# Options that may differ between the workers of one study: where things are and how fast, not what is
# computed (config.MACHINE_LOCAL: the options marked local=True).
MACHINE_LOCAL = config.MACHINE_LOCAL


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


# ----------------------------------------------------------------------------- what the workers share

SETUP_WAIT = 60.0  # seconds a worker joining a new study waits for its creator to store the settings


def store_settings(study: optuna.Study, cfg: Config, shared: dict, first_trial: dict, origin: str) -> None:
    """What every worker must share (`shared`: search space, heartbeat, data), then the first trial (the
    script's own values), then `base_config`, last: a study that has it is set up."""
    for key, value in shared.items():
        if value is not None:
            study.set_user_attr(key, value)
    study.enqueue_trial(first_trial, user_attrs={"origin": origin}, skip_if_exists=True)
    study.set_user_attr("base_config", fingerprint(cfg))


def wait_for_settings(study: optuna.Study) -> bool:
    """True once the study's creator has stored its settings; False if it has not after SETUP_WAIT
    seconds (it died between creating the study and storing them)."""
    deadline = time.monotonic() + SETUP_WAIT
    while "base_config" not in study.user_attrs:
        if time.monotonic() >= deadline:
            return False
        time.sleep(min(0.5, SETUP_WAIT))
    return True


def check_same_settings(study: optuna.Study, cfg: Config, shared: dict) -> None:
    """Refuse a worker whose base config, search space, heartbeat or data differ from the study's."""
    check_same_config(study, cfg)
    stored, name = study.user_attrs, study.study_name
    if shared.get("space") is not None and stored.get("space", shared["space"]) != shared["space"]:
        raise ConfigError(f"option --study: study {name} was started with another search space (tune.py's "
                          f"SPACE) than this worker's; run every worker with the same tune.py, or change "
                          f"SPACE_VERSION to start a new study")
    theirs = stored.get("heartbeat", shared.get("heartbeat"))
    if theirs != shared.get("heartbeat"):
        raise ConfigError(f"option --heartbeat: study {name} was started with --heartbeat={theirs}, this command "
                          f"gives {shared.get('heartbeat')}; every worker must use the same (a shorter one would "
                          f"fail the other workers' live trials)")
    mine = shared.get("data") or {}
    for file, digest in sorted((stored.get("data") or {}).items()) if mine else ():
        if mine.get(file) != digest:
            found = f"sha256 {mine[file][:16]}..." if file in mine else "no such file"
            raise ConfigError(f"option --dataroot: study {name} was started on other data: its {file} has sha256 "
                              f"{digest[:16]}..., this worker's has {found}; every worker must read the same files")


def joiner_seed() -> int:
    """A joining worker's sampler seed, its own: random, since process ids repeat (containers)."""
    return int.from_bytes(os.urandom(4), "little")


def check_same_config(study: optuna.Study, cfg: Config) -> None:
    theirs = study.user_attrs.get("base_config")
    if theirs is None:
        return  # a study whose creator died before storing it (wait_for_settings)
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


# ----------------------------------------------------------------------------- running trials

def work_left(study: optuna.Study, n_trials: int) -> bool:
    """Whether to start another trial: fewer than n_trials finished or running, or a retry queued.
    Fails first the trials whose worker stopped beating (which queues their retries)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    trials = study.get_trials(deepcopy=False)
    counted = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING) for t in trials)
    return counted < n_trials or any(t.state == TrialState.WAITING for t in trials)


class Heartbeat:
    """A running trial's heartbeat, as Optuna's thread records it, except that a storage error does not
    end it: the beat is retried (every quarter interval, at most 5 s apart) until it is recorded. The
    first beat is recorded before the trial starts."""

    def __init__(self, storage, trial: optuna.Trial):
        self.storage, self.trial = storage, trial
        self.interval = storage.get_heartbeat_interval()
        self.failures = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self):
        ok = self._beat()
        self._thread = threading.Thread(target=self._run, args=(ok,), daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _run(self, ok: bool) -> None:
        while not self._stop.wait(self.interval if ok else min(5.0, self.interval / 4)):
            ok = self._beat()

    def _beat(self) -> bool:
        try:
            self.storage.record_heartbeat(self.trial._trial_id)
        except Exception as exc:  # SQLAlchemy and the drivers raise many types
            if not self.failures:
                print(f"warning: trial {self.trial.number}: heartbeat not recorded ({type(exc).__name__}: "
                      f"{str(exc).splitlines()[0][:200]}); retrying", file=sys.stderr)
            self.failures += 1
            return False
        self.failures = 0
        return True


def run_trial(study: optuna.Study, objective) -> tuple[optuna.trial.FrozenTrial, bool]:
    """One trial, as Study.optimize runs it but with Heartbeat; returns (the trial, True), or (the trial,
    False) when another worker failed it meanwhile (its heartbeats did not reach the storage for the
    grace period, and it is retried): this worker's run of it ends there and it is left as it is."""
    storage = study._storage
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed")  # we beat, not optimize
        optuna.storages.fail_stale_trials(study)
        trial = study.ask()
    value, state, taken = None, None, None
    with Heartbeat(storage, trial):
        try:
            value = objective(trial)
        except optuna.TrialPruned:
            state = TrialState.PRUNED
        except optuna.exceptions.UpdateFinishedTrialError as exc:  # a write to it after it was failed
            taken = exc
        except BaseException:
            with contextlib.suppress(ValueError, optuna.exceptions.UpdateFinishedTrialError):
                study.tell(trial, state=TrialState.FAIL)
            raise
    if storage.get_trial(trial._trial_id).state.is_finished():
        return storage.get_trial(trial._trial_id), False
    if taken is not None:
        raise taken
    try:
        study.tell(trial, value, state=state)
    except (ValueError, optuna.exceptions.UpdateFinishedTrialError):  # failed by another worker just now
        if not storage.get_trial(trial._trial_id).state.is_finished():
            raise
        return storage.get_trial(trial._trial_id), False
    return storage.get_trial(trial._trial_id), True
