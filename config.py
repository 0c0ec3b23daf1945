"""The run options: one registry of every option of a training run, and its overrides.

Each `Config` field carries its help text, its kind (cli.KINDS: data, architecture, schedule,
evaluation, selection, run, place, speed), its bounds or choices and, for tune.py, its search
range: every list of options elsewhere (what --resume may change, what --eval_only rebuilds,
what a tuning study's workers may differ in, what tune.py searches) is derived from here.
Adding an option is one field. Field names follow the authors' command-line options
(`gen_nepoch`, `nSample`, `manualSeed`, ...) so their commands keep working. The per-dataset
scripts set the reference values; `parse_overrides` applies the command line on top.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import cli
from benchmarks import NAMES as BENCHMARKS
from cli import ConfigError, opt  # noqa: F401 (ConfigError: config's API)

POS, NONNEG = dict(low=0, low_open=True), dict(low=0)
COUNT = dict(high=100_000)  # a schedule count beyond this is a typo, not a plan (26 digits would train forever)


@dataclass
class Config:
    # --- data ---
    dataset: str = opt("AWA2", "AWA2 | APY | CUB | FLO, or your own: any folder name under --dataroot", "data",
                       dataset=True)
    layout: str = opt("auto", "file layout; auto: epgn when data.mat is present, else xlsa17", "data",
                      choices=("auto", "xlsa17", "epgn"))
    image_embedding: str = opt("res101", "xlsa17 feature file stem (<stem>.mat)", "data")
    class_embedding: str = opt("att", "xlsa17 split file stem: att | sent (<stem>_splits.mat)", "data",
                               choices=("att", "sent"))
    synthetic: str = opt("", "generated stand-in data instead of the benchmark files (not benchmark numbers): "
                             "quick (--synthetic alone) = a small stand-in and a short demo schedule; full = a "
                             "stand-in at the benchmark's real size, run with the script's own schedule",
                         "data", choices=("", "quick", "full"), bare="quick")

    # --- architecture ---
    anchors: str = opt("seen", "relative-positioning anchors from the 'seen' or 'all' class vectors", "architecture",
                       choices=("seen", "all"))
    num_coupling_layers: int = opt(3, "GLOW coupling blocks of the flow", "architecture", low=1,
                                   tune=("int", 2, 6))  # the authors: 3 or 5
    hidden_dim: int = opt(2048, "width of each coupling subnet", "architecture", **POS)
    input_dim: int = opt(1024, "size of the global semantic vector (the flow's condition)", "architecture", **POS)

    # --- flow training ---
    gen_nepoch: int = opt(500, "flow epochs; iterations = floor(N_train / batchsize) * gen_nepoch", "schedule", **POS,
                          **COUNT)
    lr: float = opt(3e-4, "Adam learning rate of the flow", "schedule", **NONNEG,
                    tune=("factor", 1 / 3, 3.0))  # the authors: 3e-4 everywhere
    weight_decay: float = opt(3e-6, "Adam weight decay of the flow", "schedule", **NONNEG,
                              tune=("factor", 0.1, 10.0))  # the authors: 1e-6 .. 1e-4
    lr_gamma: float = opt(0.92, "StepLR gamma (the authors hard-coded it per script)", "schedule", **NONNEG)
    lr_step: int = opt(15, "StepLR step, in epochs of ceil(N_train / batchsize) iterations", "schedule", **POS)
    batchsize: int = opt(256, "flow batch size", "schedule", **POS)
    prototype: float = opt(10.0, "weight of the prototype loss (0: off)", "schedule", **NONNEG,
                           tune=("log", 0.3, 30.0))  # the authors: 1 .. 10
    pi: float = opt(0.15, "scale of the visual perturbation", "schedule", **NONNEG,
                    tune=("uniform", 0.0, 0.3))  # the authors: 0.02 (APY) .. 0.15 (AWA2)
    dropout: float = opt(0.0, "probability that a feature dimension gets no perturbation", "schedule",
                         low=0, high=1, high_open=True, tune=("uniform", 0.0, 0.5))  # the authors: 0
    manualSeed: int = opt(6152, "seed of every random draw (python, numpy, torch)", "schedule", low=0, high=2**32 - 1)

    # --- evaluation ---
    nSample: int = opt(50000, "synthetic features per unseen class", "evaluation", **POS,
                       tune=("factor", 0.25, 2.0))  # the authors: 600 .. 50,000 (x2 at most: AWA2's 4 GB buffer)
    eval_start: int = opt(30000, "evaluate only at iterations above this ...", "evaluation")
    evl_interval: int = opt(500, "... that are multiples of this", "evaluation", **POS)
    classifier_lr: float = opt(1e-3, "Adam learning rate of the softmax classifiers", "evaluation", **NONNEG,
                               tune=("factor", 1 / 3, 3.0))  # the authors: 1e-3 .. 1e-2
    classifier_epochs: int = opt(30, "epochs of each softmax classifier", "evaluation", **POS, **COUNT)
    classifier_batch: int = opt(1200, "batch size of the softmax classifiers", "evaluation", **POS)
    eval_zsl: bool = opt(True, "also train the unseen-only (ZSL) softmax at each evaluation", "evaluation")

    # --- honest selection ---
    validation: bool = opt(False, "train and evaluate on a leak-free split of trainval (xlsa17's val classes "
                                  "as unseen); the test split is not read", "selection", tune=False)
    val_seen_share: float = opt(0.2, "share of each other class's trainval images held out as seen-validation",
                                "selection", low=0, high=1, low_open=True, high_open=True)
    select: str = opt("test", "reported result: test = the paper's rule (best H on the test set); val = training "
                              "length and classifier epoch chosen on a --validation run first", "selection",
                      choices=("test", "val"), local=True)

    # --- run ---
    device: str = opt("auto", "auto | cpu | cuda | cuda:N", "run")
    out_dir: str = opt("out", "each run writes out_dir/<dataset>/<UTC time>/", "place", path=True)
    dataroot: str = opt("./data", "holds <dataset>/res101.mat + <stem>_splits.mat, or data.mat + label.mat",
                        "place", path=True)
    disp_interval: int = opt(200, "log the losses every this many iterations", "run", **POS)
    quiet: bool = opt(False, "no progress bars (off anyway when stderr is not a terminal)", "run")
    seeds: str = opt("", "e.g. 6152,1,2: one run per seed, then a mean +- std table", "run", resume=False,
                     tune=False)
    resume: str = opt("", "RUN_DIR: continue that run from its last checkpoint", "run", path=True, tune=False)
    eval_only: str = opt("", "CHECKPOINT: evaluate a saved flow, no training", "run", path=True, resume=False,
                         tune=False)
    save_synthetic: str = opt("", "FILE.npz | FILE.mat: write the synthetic unseen features of the final "
                                  "evaluation", "run", path=True, tune=False)

    # --- speed; exact = the defaults' numbers bit for bit ---
    synth_chunk: int = opt(0, "rows per reverse pass when synthesising; 0: 2048 on a CPU, sized from the free "
                              "memory on CUDA (bounds memory; exact)", "speed", low=0, local=True)
    cuda_graphs: bool = opt(True, "on CUDA, replay the flow's and the classifiers' gradient passes as CUDA graphs "
                                  "(off: launched one by one; exact)", "speed", local=True)
    host_rng_threads: int = opt(0, "on CUDA, threads that draw the CPU generator's noise, each from where the "
                                   "one stream would be (mt19937.py); 0: up to 8, as the cores allow (exact)",
                                "speed", low=0, local=True)
    keep_freed_memory: bool = opt(True, "glibc keeps freed blocks instead of page-faulting them back (exact)",
                                  "speed", local=True)
    bf16: bool = opt(False, "bf16 autocast for flow training, synthesis and classifiers (other numbers)", "speed")
    tf32: bool = opt(False, "TF32 matmuls on CUDA (no effect on CPU; other numbers)", "speed")
    fused_adam: bool = opt(False, "torch's fused Adam for the flow: faster, ~1 ulp from the reference's rounding",
                           "speed")
    device_noise: bool = opt(False, "draw perturbation and synthesis noise on the GPU's generator, not the CPU's "
                                    "(other numbers)", "speed")

    # --- GSMFlow-TMM variant (docs/tmm.md); off with the default variant ---
    variant: str = opt("mm21", "mm21 = the MM'21 method (the paper's); tmm = GSMFlow-TMM: boundary-sample mining "
                               "before flow training, with the script's TMM settings block", "variant",
                       choices=("mm21", "tmm"))
    relation_nepoch: int = opt(50, "relation-network epochs of floor(N_train / batchsize) iterations (+1 iteration)",
                               "variant", low=0, **COUNT)
    relation_batchsize: int = opt(200, "relation-network batch; quirk: under tmm the flow's batch too", "variant",
                                  **POS)
    relation_lr: float = opt(1e-3, "relation-network Adam learning rate", "variant", **NONNEG,
                             tune=("factor", 1 / 3, 3.0))  # the authors: 1e-4 .. 1e-3
    relation_wd: float = opt(3e-6, "relation-network Adam weight decay", "variant", **NONNEG)
    aug_lr: float = opt(30.0, "mining: SGD learning rate on the features", "variant", **NONNEG,
                        tune=("factor", 0.2, 5.0))  # the authors: 20 .. 100
    aug_wd: float = opt(0.0, "mining: SGD weight decay", "variant", **NONNEG)
    aug_mt: float = opt(0.0, "mining: SGD momentum", "variant", **NONNEG)
    loops_adv: int = opt(20, "mining: SGD steps per batch", "variant", **POS, **COUNT,
                         tune=("factor", 0.5, 2.0))  # the authors: 20 .. 30
    entropy_weight: float = opt(10.0, "mining: weight of the entropy (maximised)", "variant", **NONNEG,
                                tune=("factor", 0.1, 10.0))  # the authors: 1 .. 20
    mse: float = opt(1.0, "mining: weight of the MSE to the one-hot target (the authors' --mse)", "variant",
                     **NONNEG)
    mse_weight: float = opt(1.0, "quirk: parsed but unused by the authors' TMM code (accepted, changes nothing)",
                            "variant")

    def total_iterations(self, n_train: int) -> int:
        """Flow iterations of a run on n_train images: floor(n_train / batchsize) * gen_nepoch (docs/method.md)."""
        return (n_train // self.batchsize) * self.gen_nepoch

    def evaluations(self, n_train: int, reference_train: int = 0) -> list[int]:
        """The iterations that evaluate: multiples of evl_interval above eval_start, up to the total inclusive.

        `reference_train` (a run on the validation split: the rows of the trainval set it was cut
        from): the plan of a run on that many rows, each iteration moved to the same fraction of
        this run's schedule, round(t * total / reference_total). So a validation run evaluates as
        often, and at the same points of its schedule, as the test run it chooses for
        (docs/method.md, "Honest selection"), though it has fewer rows and iterations.
        """
        if reference_train:
            total, reference_total = self.total_iterations(n_train), self.total_iterations(reference_train)
            return sorted({max(1, round(t * total / reference_total)) for t in self.evaluations(reference_train)})
        return [it for it in range(self.eval_start + 1, self.total_iterations(n_train) + 1)
                if it % self.evl_interval == 0]


# What the run modes and tune.py derive from the registry.
CHOICES = {f.name: f.metadata["choices"] for f in dataclasses.fields(Config) if f.metadata["choices"]}
RUN_CONTROL = cli.names_where(Config, resume=True)        # the only options --resume accepts
ARCHITECTURE = cli.names_where(Config, kind="architecture")  # what --eval_only takes from the checkpoint
MACHINE_LOCAL = cli.names_where(Config, local=True)       # may differ between the workers of one study
NOT_FOR_TUNING = cli.names_where(Config, tune=False)      # tune.py sets or refuses these
SPACE = {f.name: f.metadata["tune"] for f in dataclasses.fields(Config) if isinstance(f.metadata["tune"], tuple)}



# A short schedule for `--synthetic` (quick; not --synthetic=full): about two minutes on 2 CPU cores. Applied before
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

DEVICE_HELP = "option --device: expected auto, cpu, cuda or cuda:N (N = 0, 1, ...)"


STANDIN_SUFFIX = {"": "", "quick": "-synthetic", "full": "-synthetic-full"}  # in study and table names


def standin(value) -> str:
    """The --synthetic value: '' (the benchmark files), 'quick' or 'full'; a boolean of older
    config.json files (true = the quick demo) is read as such."""
    return ("quick" if value else "") if isinstance(value, bool) or value is None else value


def validate(cfg: Config) -> Config:
    """Every option in its bounds and choices (cli.check), then the rules that involve several."""
    cfg.synthetic = standin(cfg.synthetic)
    cli.check(cfg)
    name = cfg.dataset
    if not name or name in (".", "..") or "/" in name or "\\" in name:
        raise ConfigError(f"option --dataset: expected a folder name under --dataroot, got {name!r}")
    if cfg.synthetic and name not in BENCHMARKS:
        raise ConfigError(f"option --synthetic: stand-ins exist for {', '.join(BENCHMARKS)} only, "
                          f"not --dataset={name}")
    if 0 < cfg.synth_chunk < 32:
        raise ConfigError(f"option --synth_chunk: must be 0 (sized to the device) or >= 32, got {cfg.synth_chunk}")
    if cfg.save_synthetic and not cfg.save_synthetic.endswith((".npz", ".mat")):
        raise ConfigError(f"option --save_synthetic: the file name must end in .npz or .mat, got {cfg.save_synthetic!r}")
    if not cfg.out_dir.strip():
        raise ConfigError("option --out_dir: empty (it would write into the working directory); give a folder, "
                          "e.g. --out_dir=out")
    if cfg.validation and cfg.select == "val":
        raise ConfigError("options --validation and --select=val cannot be combined: --select=val runs the "
                          "validation split itself to choose, then the test split to report (drop --validation)")
    if cfg.seeds:
        seed_list(cfg.seeds, "seeds")
    if sum(map(bool, (cfg.resume, cfg.eval_only, cfg.seeds))) > 1:
        raise ConfigError("options --resume, --eval_only and --seeds cannot be combined")
    device, _, index = cfg.device.partition(":")
    if device not in ("auto", "cpu", "cuda") or (index and (device != "cuda" or not index.isdigit())) \
            or cfg.device.endswith(":"):
        raise ConfigError(f"{DEVICE_HELP}, got {cfg.device!r}")
    return cfg


JSON_KINDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def of_kind(value, kind: type) -> bool:
    """Whether a JSON value is one of an option of type `kind` (an integer is a number; a boolean is neither)."""
    if isinstance(value, bool) or kind is bool:
        return isinstance(value, bool) and kind is bool
    return isinstance(value, (int, float) if kind is float else kind)


def saved_config(saved: dict, path, updates: dict | None = None) -> Config:
    """The Config of a run's saved options (its config.json, less data_files), `updates` over them.

    An unknown key, a value of the wrong type or out of bounds: one ConfigError naming the file and key."""
    kinds = cli.field_types(Config)
    if "synthetic" in saved:  # a boolean before --synthetic=full existed
        saved = {**saved, "synthetic": standin(saved["synthetic"])}
    for key, value in saved.items():
        if key not in kinds:
            raise ConfigError(f"{path}: unknown key '{key}' (not an option of Config)")
        if not of_kind(value, kinds[key]):
            raise ConfigError(f"{path}: key '{key}' is {value!r}, expected {JSON_KINDS[kinds[key]]}")
    try:
        return validate(Config(**{**saved, **(updates or {})}))
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def seed_list(text: str, option: str = "seeds") -> list[int]:
    """'6152,1,2' -> [6152, 1, 2]: the one parser of every seed list (--seeds, --final_seeds, reproduce)."""
    meta = cli.options(Config)["manualSeed"].metadata
    try:
        seeds = [int(s) for s in text.split(",")]
    except ValueError:
        raise ConfigError(f"option --{option}: expected comma-separated integers, got {text!r}") from None
    for s in seeds:
        cli.check_value(option, s, meta)
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"option --{option}: a seed is repeated in {text!r}")
    return seeds


def parser(defaults: Config | None = None, prog: str | None = None, description: str = "", *more):
    """The argparse parser of a training command: every Config option, defaults from `defaults`."""
    return cli.parser_for(prog, description, *more, (Config, defaults))


def parse_args(argv: list[str], defaults: Config | None = None) -> dict:
    """`--key=value` / `--key value` strings -> {key: typed value} of the options given."""
    return cli.parse(parser(defaults), argv)


def apply(cfg: Config, updates: dict) -> Config:
    """`cfg` with `updates` applied; --synthetic (quick) switches to the short schedule first."""
    base = dataclasses.asdict(cfg)
    if standin(updates.get("synthetic", cfg.synthetic)) == "quick":
        base.update(SYNTHETIC_SCHEDULE)
    base.update(updates)
    return validate(Config(**base))


def parse_overrides(cfg: Config, argv: list[str]) -> Config:
    """Return a copy of `cfg` with `--key=value` (or `--flag` for booleans) applied."""
    return apply(cfg, parse_args(argv, cfg))
