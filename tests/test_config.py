import pytest

from config import SYNTHETIC_SCHEDULE, Config, ConfigError, parse_overrides


def test_overrides_are_typed():
    cfg = parse_overrides(Config(), ["--nSample=30", "--lr=1e-3", "--device=cpu", "--eval_zsl=false"])
    assert (cfg.nSample, cfg.lr, cfg.device, cfg.eval_zsl) == (30, 1e-3, "cpu", False)
    assert isinstance(cfg.lr, float) and isinstance(cfg.nSample, int)
    # the authors' argparse spelling works too
    cfg = parse_overrides(Config(), ["--nSample", "30", "--validation", "--pi", "0.1"])
    assert (cfg.nSample, cfg.validation, cfg.pi) == (30, True, 0.1)


@pytest.mark.parametrize("arg,match", [
    ("--nsample=3", "unknown option --nsample"),
    ("--nSample=3.5", "option --nSample: expected an integer"),
    ("--lr=fast", "option --lr: expected a number"),
    ("--quiet=maybe", "option --quiet: expected true or false"),
    ("--out_dir=", "option --out_dir: empty"),
    ("--synthetic=maybe", "option --synthetic: .maybe. is not one of .., quick, full"),
    ("--batchsize", "option --batchsize needs a value"),
    ("--dataset=../AWA2", "option --dataset: expected a folder name under --dataroot"),
    ("--batchsize=0", "option --batchsize: must be > 0"),
    ("--dropout=1", r"option --dropout: must be in \[0, 1\)"),
    ("nSample=3", "unexpected argument"),
])
def test_bad_overrides_name_the_option(arg, match):
    with pytest.raises(ConfigError, match=match):
        parse_overrides(Config(), [arg])


def test_dataset_is_any_folder_name_but_synthetic_only_for_benchmarks():
    assert parse_overrides(Config(), ["--dataset=BIRDS"]).dataset == "BIRDS"  # data/make_dataset.py output
    with pytest.raises(ConfigError, match="option --synthetic: stand-ins exist for AWA2, APY, CUB, FLO only"):
        parse_overrides(Config(), ["--dataset=BIRDS", "--synthetic"])


def test_synthetic_applies_short_schedule_under_explicit_overrides():
    cfg = parse_overrides(Config(gen_nepoch=500), ["--synthetic", "--gen_nepoch=7"])
    assert cfg.synthetic and cfg.gen_nepoch == 7 and cfg.nSample == SYNTHETIC_SCHEDULE["nSample"]
    assert parse_overrides(Config(gen_nepoch=500), []).gen_nepoch == 500


def test_dataset_scripts_hold_spec_settings():
    import train_APY, train_AWA2, train_CUB, train_FLO
    table = {  # docs/method.md: K, epochs, B, wd, gamma, pi, lambda, nSample, eval_start, interval, cls lr, cls epochs, cls batch
        train_AWA2: (3, 500, 256, 3e-6, 0.92, 0.15, 10, 50000, 30000, 500, 1e-3, 30, 1200, "att", "seen"),
        train_APY: (5, 600, 200, 1e-6, 0.55, 0.02, 3, 9000, 5000, 300, 1e-3, 20, 1200, "att", "all"),
        train_CUB: (5, 600, 256, 1e-5, 0.8, 0.05, 1, 600, 2000, 500, 1e-2, 30, 3000, "sent", "seen"),
        train_FLO: (5, 300, 256, 1e-4, 0.8, 0.07, 3, 3000, 2000, 500, 5e-3, 30, 1000, "att", "seen"),
    }
    for module, expected in table.items():
        c = module.config
        got = (c.num_coupling_layers, c.gen_nepoch, c.batchsize, c.weight_decay, c.lr_gamma, c.pi, c.prototype,
               c.nSample, c.eval_start, c.evl_interval, c.classifier_lr, c.classifier_epochs, c.classifier_batch,
               c.class_embedding, c.anchors)
        assert got == expected, module.__name__
        assert (c.lr, c.manualSeed, c.input_dim, c.dropout, c.lr_step) == (3e-4, 6152, 1024, 0.0, 15)


@pytest.mark.parametrize("option", ["gen_nepoch", "relation_nepoch", "classifier_epochs", "loops_adv"])
def test_schedule_counts_have_an_upper_bound(option):
    assert getattr(parse_overrides(Config(), [f"--{option}=100000"]), option) == 100000
    with pytest.raises(ConfigError, match=rf"option --{option}: must be .*100000\], got 1{'0' * 25}"):
        parse_overrides(Config(), [f"--{option}=1{'0' * 25}"])  # 26 digits: would train until the end of time
