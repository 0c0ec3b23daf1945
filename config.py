"""Typed run configuration with `--key=value` overrides.

Field names follow the authors' command-line options (`gen_nepoch`, `nSample`,
`manualSeed`, ...) so their commands keep working. The per-dataset scripts set
the reference values; `parse_overrides` applies the command line on top and
rejects unknown keys and values of the wrong type.
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass


class ConfigError(ValueError):
    """A bad option on the command line (one line, names the option)."""


@dataclass
class Config:
    # --- data ---
    dataset: str = "AWA2"             # AWA2 | APY | CUB | FLO, or your own (any folder name under dataroot)
    dataroot: str = "./data"          # holds <dataset>/res101.mat + <class_embedding>_splits.mat, or data.mat + label.mat
    layout: str = "auto"              # auto | xlsa17 | epgn (auto: epgn when data.mat is present, else xlsa17)
    image_embedding: str = "res101"   # xlsa17 feature file stem
    class_embedding: str = "att"      # xlsa17 split file stem: att | sent
    anchors: str = "seen"             # relative-positioning anchors from 'seen' or 'all' class vectors
    synthetic: bool = False           # generate a small benchmark-shaped dataset and run a short schedule

    # --- flow training ---
    gen_nepoch: int = 500             # flow epochs; total iterations = floor(N_train / batchsize) * gen_nepoch
    lr: float = 3e-4
    weight_decay: float = 3e-6
    lr_gamma: float = 0.92            # StepLR gamma (the authors hard-coded it per script)
    lr_step: int = 15                 # StepLR step size, in epochs of ceil(N_train / batchsize) iterations
    batchsize: int = 256
    num_coupling_layers: int = 3
    hidden_dim: int = 2048            # width of each coupling subnet
    input_dim: int = 1024             # size of the global semantic vector (flow condition)
    prototype: float = 10.0           # weight of the prototype loss (0 disables it)
    pi: float = 0.15                  # scale of the visual perturbation
    dropout: float = 0.0              # probability that a dimension gets no perturbation
    manualSeed: int = 6152

    # --- evaluation ---
    nSample: int = 50000              # synthetic features per unseen class
    eval_start: int = 30000           # evaluate only at iterations > eval_start ...
    evl_interval: int = 500           # ... that are multiples of evl_interval
    classifier_lr: float = 1e-3
    classifier_epochs: int = 30
    classifier_batch: int = 1200
    eval_zsl: bool = True             # also train the unseen-only (ZSL) softmax at each evaluation

    # --- honest selection ---
    validation: bool = False          # train/evaluate on a leak-free split of trainval (xlsa17 val classes as unseen)
    val_seen_share: float = 0.2       # share of each other class's trainval images held out as seen-validation
    select: str = "test"              # reported evaluation: test (paper rule) | val (chosen on --validation split) | last

    # --- run ---
    device: str = "auto"              # auto | cpu | cuda | cuda:N
    out_dir: str = "out"              # each run gets out_dir/<dataset>/<timestamp>/
    disp_interval: int = 200          # log the losses every this many iterations
    quiet: bool = False               # no progress bars (they are off anyway when stderr is not a terminal)
    seeds: str = ""                   # e.g. 6152,1,2: one run per seed, then a mean +- std table
    resume: str = ""                  # RUN_DIR: continue that run from its last checkpoint
    eval_only: str = ""               # CHECKPOINT: evaluate a saved flow, no training
    save_synthetic: str = ""          # FILE.npz | FILE.mat: write the synthetic unseen features of the final evaluation

    # --- speed (README "Speed"); the defaults compute exactly the reference's numbers ---
    synth_chunk: int = 2048           # rows per reverse pass when synthesising (bounds memory; same numbers)
    keep_freed_memory: bool = True    # glibc keeps freed blocks instead of page-faulting them back (same numbers)
    bf16: bool = False                # bf16 autocast for flow training, synthesis and classifiers (CPU and GPU)
    tf32: bool = False                # TF32 matmuls on CUDA (no effect on CPU)
    fused_adam: bool = False          # torch's fused Adam for the flow: faster, ~1 ulp from the reference's rounding
    device_noise: bool = False        # draw perturbation and synthesis noise on the GPU's generator, not the CPU's (other numbers)

    # --- TMM variant (docs/tmm.md) ---
    variant: str = "mm21"             # mm21 | tmm (GSMFlow-TMM: boundary-sample mining before flow training)
    relation_nepoch: int = 50         # relation-network epochs of floor(N_train / batchsize) iterations, +1 iteration
    relation_batchsize: int = 200     # relation-network batch; quirk: under tmm the flow's batch too
    relation_lr: float = 1e-3         # relation-network Adam learning rate
    relation_wd: float = 3e-6         # relation-network Adam weight decay
    aug_lr: float = 30.0              # mining: SGD learning rate on the features
    aug_wd: float = 0.0               # mining: SGD weight decay
    aug_mt: float = 0.0               # mining: SGD momentum
    loops_adv: int = 20               # mining: SGD steps per batch
    entropy_weight: float = 10.0      # mining: weight of the entropy (maximised)
    mse: float = 1.0                  # mining: weight of the MSE to the one-hot target (the authors' --mse)
    mse_weight: float = 1.0           # quirk: parsed but unused by the authors' code (accepted, changes nothing)


# A short schedule for `--synthetic`: about two minutes on 2 CPU cores. Applied before
# the command-line overrides, so `--synthetic --gen_nepoch=80` still works. The stand-in
# has ~24 images per seen class, so fewer samples per unseen class and a smaller classifier
# batch than the benchmarks' keep the classifier balanced and trained.
SYNTHETIC_SCHEDULE = dict(
    gen_nepoch=40,
    nSample=50,
    eval_start=79,
    evl_interval=40,
    classifier_batch=128,
    disp_interval=20,
)

# --synthetic with --variant=tmm: the relation network's epochs and the mining steps shortened as
# well (at the real settings' 50-100 epochs and 20-30 steps, mining the stand-in takes ~an hour
# on 2 CPU cores: each step scores 256 rows x 40 classes through a 2133 -> 2048 layer).
SYNTHETIC_TMM_SCHEDULE = dict(
    relation_nepoch=1,
    loops_adv=3,
)

# The benchmarks: each has a train_<DATASET>.py and a --synthetic stand-in. --dataset also
# takes any other folder under --dataroot (data/make_dataset.py writes one).
BENCHMARKS = ("AWA2", "APY", "CUB", "FLO")
CHOICES = {
    "layout": ("auto", "xlsa17", "epgn"),
    "class_embedding": ("att", "sent"),
    "anchors": ("seen", "all"),
    "select": ("test", "val", "last"),
    "variant": ("mm21", "tmm"),
}
# Options that only steer a run, not its numbers: the only ones --resume accepts.
RUN_CONTROL = ("device", "quiet", "disp_interval", "resume", "save_synthetic")
POSITIVE = ("gen_nepoch", "batchsize", "num_coupling_layers", "hidden_dim", "input_dim", "nSample",
            "evl_interval", "classifier_epochs", "classifier_batch", "lr_step", "disp_interval", "synth_chunk")
NON_NEGATIVE = ("lr", "weight_decay", "classifier_lr", "prototype", "pi", "lr_gamma")


def _convert(name: str, text: str, kind: type):
    if kind is bool:
        low = text.lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"option --{name}: expected true or false, got {text!r}")
    if kind is int:
        try:
            return int(text)
        except ValueError:
            raise ConfigError(f"option --{name}: expected an integer, got {text!r}") from None
    if kind is float:
        try:
            return float(text)
        except ValueError:
            raise ConfigError(f"option --{name}: expected a number, got {text!r}") from None
    return text


def field_types() -> dict:
    hints = typing.get_type_hints(Config)
    return {f.name: hints[f.name] for f in dataclasses.fields(Config)}


def validate_dataset(cfg: Config) -> None:
    """A folder name under dataroot (its existence is checked when it is loaded)."""
    name = cfg.dataset
    if not name or name in (".", "..") or "/" in name or "\\" in name:
        raise ConfigError(f"option --dataset: expected a folder name under --dataroot, got {name!r}")
    if cfg.synthetic and name not in BENCHMARKS:
        raise ConfigError(f"option --synthetic: stand-ins exist for {', '.join(BENCHMARKS)} only, "
                          f"not --dataset={name}")


def validate(cfg: Config) -> Config:
    validate_dataset(cfg)
    for name, allowed in CHOICES.items():
        if getattr(cfg, name) not in allowed:
            raise ConfigError(f"option --{name}: {getattr(cfg, name)!r} is not one of {', '.join(allowed)}")
    for name in POSITIVE:
        if getattr(cfg, name) <= 0:
            raise ConfigError(f"option --{name}: must be > 0, got {getattr(cfg, name)}")
    for name in NON_NEGATIVE:
        if getattr(cfg, name) < 0:
            raise ConfigError(f"option --{name}: must be >= 0, got {getattr(cfg, name)}")
    if not 0.0 < cfg.val_seen_share < 1.0:
        raise ConfigError(f"option --val_seen_share: must be in (0, 1), got {cfg.val_seen_share}")
    if cfg.save_synthetic and not cfg.save_synthetic.endswith((".npz", ".mat")):
        raise ConfigError(f"option --save_synthetic: the file name must end in .npz or .mat, got {cfg.save_synthetic!r}")
    if cfg.seeds:
        try:
            [int(s) for s in cfg.seeds.split(",")]
        except ValueError:
            raise ConfigError(f"option --seeds: expected comma-separated integers, got {cfg.seeds!r}") from None
    if sum(map(bool, (cfg.resume, cfg.eval_only, cfg.seeds))) > 1:
        raise ConfigError("options --resume, --eval_only and --seeds cannot be combined")
    if cfg.synth_chunk < 32:
        raise ConfigError(f"option --synth_chunk: must be >= 32 rows, got {cfg.synth_chunk}")
    if not 0.0 <= cfg.dropout < 1.0:
        raise ConfigError(f"option --dropout: must be in [0, 1), got {cfg.dropout}")
    if not (cfg.device in ("auto", "cpu", "cuda") or cfg.device.startswith("cuda:")):
        raise ConfigError(f"option --device: expected auto, cpu, cuda or cuda:N, got {cfg.device!r}")
    validate_tmm(cfg)
    return cfg


def validate_tmm(cfg: Config) -> None:
    """The TMM variant's options (docs/tmm.md); checked whatever the variant."""
    for name in ("relation_batchsize", "loops_adv"):
        if getattr(cfg, name) <= 0:
            raise ConfigError(f"option --{name}: must be > 0, got {getattr(cfg, name)}")
    for name in ("relation_nepoch", "relation_lr", "relation_wd", "aug_lr", "aug_wd", "aug_mt", "entropy_weight", "mse"):
        if getattr(cfg, name) < 0:
            raise ConfigError(f"option --{name}: must be >= 0, got {getattr(cfg, name)}")


def parse_args(argv: list[str]) -> dict:
    """`--key=value` strings -> {key: typed value}; unknown keys and bad values are errors."""
    types = field_types()
    updates: dict = {}
    args = list(argv)
    while args:
        arg = args.pop(0)
        if not arg.startswith("--"):
            raise ConfigError(f"unexpected argument {arg!r}: options look like --key=value")
        key, has_value, text = arg[2:].partition("=")
        if key not in types:
            raise ConfigError(f"unknown option --{key} (known: {', '.join(sorted(types))})")
        if not has_value:
            if types[key] is bool:
                text = "true"
            elif args and not args[0].startswith("--"):
                text = args.pop(0)  # argparse style, as in the authors' commands: --nSample 1000
            else:
                raise ConfigError(f"option --{key} needs a value: --{key}=VALUE")
        updates[key] = _convert(key, text, types[key])
    return updates


def parse_overrides(cfg: Config, argv: list[str]) -> Config:
    """Return a copy of `cfg` with `--key=value` (or `--flag` for booleans) applied."""
    updates = parse_args(argv)
    base = dataclasses.asdict(cfg)
    # --synthetic switches to the short schedule before any explicit override is applied.
    if updates.get("synthetic", cfg.synthetic):
        base.update(SYNTHETIC_SCHEDULE)
    base.update(updates)
    return validate(Config(**base))
