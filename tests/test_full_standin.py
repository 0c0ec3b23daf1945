"""The full-size stand-in (--synthetic=full) and honest selection's evaluation plan at the real sizes."""
import dataclasses
import hashlib
import importlib

import numpy as np
import pytest
import scipy.io as sio

import config
import synthetic
import train
import tune
import util
from benchmarks import BENCHMARKS, NAMES
from config import SYNTHETIC_SCHEDULE, Config, ConfigError, parse_overrides


def script(name: str, variant: str = "mm21") -> Config:
    module = importlib.import_module(f"train_{name}")
    return train.variant_settings(module.config, {"variant": variant}, module.TMM)


@pytest.fixture(scope="module")
def full_roots(tmp_path_factory):
    """Every benchmark's full-size stand-in with 8-d features: the real counts, little disk."""
    root = tmp_path_factory.mktemp("full")
    for name in NAMES:
        synthetic.generate_full(root / name, name, feature_dim=8)
    return root


# ----------------------------------------------------------------------------- the stand-in

@pytest.mark.parametrize("name", NAMES)
def test_full_standin_has_every_count_of_the_benchmark(full_roots, name):
    b = BENCHMARKS[name]
    folder = full_roots / name
    labels = sio.loadmat(folder / "res101.mat")["labels"].ravel()
    assert labels.size == b.images
    for stem, dim in b.semantic_dims.items():
        m = sio.loadmat(folder / f"{stem}_splits.mat")
        assert m["att"].shape == (dim, b.classes)
        sizes = {k: m[k].size for k in ("trainval_loc", "test_seen_loc", "test_unseen_loc")}
        assert sizes == {"trainval_loc": b.trainval, "test_seen_loc": b.test_seen, "test_unseen_loc": b.test_unseen}
        seen = np.unique(labels[m["trainval_loc"].ravel() - 1])
        assert seen.size == b.seen and np.unique(labels[m["test_unseen_loc"].ravel() - 1]).size == b.unseen
        assert np.unique(labels[m["val_loc"].ravel() - 1]).size == b.validation_classes  # AWA2: 13 of the 40
    d = util.load_dataset(str(full_roots), name, "xlsa17", class_embedding=next(iter(b.semantic_dims)))
    sizes = np.bincount(d.train_label)
    assert sizes.min() >= 2 and sizes.max() > 2 * sizes.min()  # unequal classes, as in the real benchmarks


def test_full_standin_generation_is_deterministic_to_the_byte(tmp_path):
    digests = []
    for out in ("a", "b"):
        folder = synthetic.generate_full(tmp_path / out / "FLO", "FLO", feature_dim=16)
        digests.append({f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(folder.iterdir())})
    assert digests[0] == digests[1] and len(digests[0]) == 2


def test_synthetic_option_quick_and_full():
    assert parse_overrides(Config(), ["--synthetic"]).synthetic == "quick"
    assert parse_overrides(Config(), ["--synthetic", "--gen_nepoch=7"]).synthetic == "quick"
    full = parse_overrides(script("AWA2"), ["--synthetic=full"])
    assert full.synthetic == "full" and full.gen_nepoch == 500 and full.nSample == 50000  # the script's schedule
    quick = parse_overrides(script("AWA2"), ["--synthetic=quick"])
    assert quick.nSample == SYNTHETIC_SCHEDULE["nSample"]
    assert parse_overrides(Config(), ["--synthetic", "full"]).synthetic == "full"
    assert config.validate(Config(synthetic=True)).synthetic == "quick"  # config.json of older runs
    with pytest.raises(ConfigError, match=r"option --synthetic: 'half' is not one of '', quick, full"):
        parse_overrides(Config(), ["--synthetic=half"])


def test_a_run_with_synthetic_full_reads_the_full_size_standin(tmp_path):
    cfg = dataclasses.replace(script("FLO"), synthetic="full", out_dir=str(tmp_path))
    data = train.prepare_data(cfg)
    b = BENCHMARKS["FLO"]
    assert (len(data.train_label), len(data.test_seen_label), len(data.test_unseen_label)) == \
        (b.trainval, b.test_seen, b.test_unseen)
    assert data.feature_dim == 2048 and "FULL-SIZE SYNTHETIC" in data.source
    assert (tmp_path / "synthetic_full" / "FLO" / "res101.mat").is_file()


def test_full_standin_is_neither_trivial_nor_hopeless(tmp_path):
    """The proxy of bench.standin_hardness (a ridge-regression generator and the script's softmax):
    on the small CUB stand-in it scores near 100 (too easy to choose anything); on the full one, in
    the range of published GZSL results."""
    from bench.standin_hardness import score
    cfg = script("FLO")
    data = util.load_dataset(str(synthetic.ensure_standin(tmp_path, "FLO", "full")), "FLO", "xlsa17")
    h = score(data, dataclasses.replace(cfg, classifier_epochs=10), n_sample=300, ridge=1.0, seed=0)["H"]
    assert 40 < h < 90


# ----------------------------------------------------------------------------- selection plans

@pytest.mark.parametrize("variant", ["mm21", "tmm"])
@pytest.mark.parametrize("name", NAMES)
def test_validation_runs_plan_as_many_evaluations_as_test_runs_at_the_real_sizes(name, variant):
    b, cfg = BENCHMARKS[name], script(name, variant)
    test_plan = cfg.evaluations(b.trainval)
    assert test_plan, f"{name} {variant}: the test run itself evaluates nowhere"
    # the validation split keeps (seen - validation classes) / seen of the classes, 80% of their rows
    typical = int(b.trainval * (b.seen - b.validation_classes) / b.seen * 0.8)
    for n_val in (typical, b.trainval // 3, b.trainval - 1):
        if n_val <= cfg.batchsize:
            continue
        plan = cfg.evaluations(n_val, b.trainval)
        assert len(plan) == len(test_plan) and plan[-1] <= cfg.total_iterations(n_val)
        fractions = np.array(plan) / cfg.total_iterations(n_val)
        np.testing.assert_allclose(fractions, np.array(test_plan) / cfg.total_iterations(b.trainval),
                                   atol=1 / cfg.total_iterations(n_val))


def test_awa2s_validation_run_used_to_evaluate_nowhere():
    cfg = script("AWA2")
    assert cfg.total_iterations(12950) == 25000 < cfg.eval_start
    assert cfg.evaluations(12950) == []  # the old rule: no val row for AWA2
    assert len(cfg.evaluations(12950, BENCHMARKS["AWA2"].trainval)) == 31


@pytest.mark.parametrize("variant", ["mm21", "tmm"])
@pytest.mark.parametrize("name", NAMES)
def test_every_plan_has_evaluations_on_the_full_size_standin(full_roots, name, variant):
    cfg = script(name, variant)
    stem = next(iter(BENCHMARKS[name].semantic_dims))
    val = util.load_dataset(str(full_roots), name, "xlsa17", class_embedding=stem, validation=True)
    assert val.reference_train == BENCHMARKS[name].trainval
    n = len(val.train_label)
    assert cfg.batchsize < n
    assert len(cfg.evaluations(n, val.reference_train)) == len(cfg.evaluations(val.reference_train)) > 0


def test_tune_preflight_accepts_awa2_at_its_real_size(full_roots, tmp_path):
    cfg = dataclasses.replace(script("AWA2"), dataroot=str(full_roots))
    described, files = tune.preflight(cfg, tmp_path)
    assert "LEAK-FREE VALIDATION SPLIT" in described and len(files) == 2
    evaluations = eval(described.split("evaluations at ")[1])
    assert len(evaluations) == 31


def test_validation_with_select_val_is_refused():
    with pytest.raises(ConfigError, match="--validation and --select=val cannot be combined"):
        parse_overrides(script("FLO"), ["--validation", "--select=val"])


def test_reproduce_with_synthetic_full_shares_one_full_size_standin(tmp_path, monkeypatch):
    import reproduce
    real = synthetic.generate_full
    monkeypatch.setattr(synthetic, "generate_full", lambda folder, name, seed=0: real(folder, name, seed, feature_dim=8))
    datasets, opts, overrides = reproduce.parse_command(["FLO", "--synthetic=full", f"--out_dir={tmp_path}",
                                                         "--seeds=6152,1"])
    cells, table_dir, _ = reproduce.make_plan(datasets, opts, overrides)
    assert table_dir.name.endswith("-synthetic-full") and all(c.cfg.nSample == script("FLO").nSample for c in cells)
    reproduce.share_synthetic_data(cells)
    for cell in cells:  # each cell's run reads <its out_dir>/synthetic_full/FLO: the one shared copy
        data = train.prepare_data(cell.cfg)
        assert (cell.dir / "synthetic_full").is_symlink() and len(data.train_label) == BENCHMARKS["FLO"].trainval
