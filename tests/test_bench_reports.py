"""bench/precision.py and bench/expected_time.py: their arithmetic and records, without running a training."""
import json
import math

import torch

import fast
from bench import environment, expected_time, precision


def test_precision_skips_bf16_exactly_where_oneDNN_has_no_bf16_kernels():
    cpu = torch.device("cpu")
    assert (precision.skip_reason("bf16", cpu) is not None) == fast.slow_bf16_matmul(cpu)
    assert precision.skip_reason("tf32", cpu) is not None
    assert precision.skip_reason("fp32", cpu) is None and precision.skip_reason("fused_adam", cpu) is None


def test_precision_table_is_mean_and_sample_std_over_seeds():
    runs = [dict(variant="fp32", seed=s, H=h, T1=t, H_last=h - 1, wall_seconds=w)
            for s, h, t, w in ((6152, 60.0, 80.0, 100.0), (1, 62.0, 82.0, 110.0), (2, 64.0, 84.0, 120.0))]
    runs.append(dict(variant="fused_adam", seed=6152, error="boom"))
    text = precision.table(runs, ["fp32", "fused_adam", "bf16"], {"bf16": "no bf16 kernels: slow"})
    fp32 = next(line for line in text.splitlines() if line.startswith("| fp32"))
    assert "62.00 ± 2.00" in fp32 and "82.00 ± 2.00" in fp32 and "61.00 ± 2.00" in fp32 and "110 ± 10" in fp32
    assert "| 3 |" in fp32
    assert "skipped: no bf16 kernels" in text and "| `--fused_adam` | - |" in text


def test_environment_records_command_date_commit_cpu_flags_and_bf16_kernels():
    env = environment.environment(["python", "-m", "bench.precision"], torch.device("cpu"))
    for key in ("command", "date", "commit", "cpu_model", "avx2", "avx512f", "avx512_bf16", "amx_bf16",
                "onednn_bf16_kernels", "torch", "python", "threads", "load_average"):
        assert key in env, key
    assert env["onednn_bf16_kernels"] == (not fast.slow_bf16_matmul(torch.device("cpu")))
    assert "commit:" in environment.describe(env)


def test_expected_time_reproduces_awa2_and_scales_the_others_by_their_workload():
    res = {"stages": {"train": {"fp32": {"time": 0.5}},
                      "eval": {"synthesis": 100.0, "n_synthetic": 50000,
                               "gzsl": {"time": 2.0, "rows": 73527}, "zsl": {"time": 1.0, "rows": 50000}}},
           "projection": {"h200_seconds": {"fp32": {"flow training": 300.0, "synthesis": 100.0, "classifier": 120.0}}}}
    ref = expected_time.workload("AWA2")
    awa2 = expected_time.project(res, ref, ref)
    assert math.isclose(awa2["here"]["flow training"], ref["iterations"] * 0.5)
    assert math.isclose(awa2["here"]["synthesis"], ref["evaluations"] * ref["synthetic"] * 100.0 / 50000)
    for part, seconds in {"flow training": 300.0, "synthesis": 100.0, "classifier": 120.0}.items():
        assert math.isclose(awa2["h200"][part], seconds)
    flo = expected_time.workload("FLO")
    p = expected_time.project(res, flo, ref)
    per_iter = 0.5 * flo["blocks"] * (flo["batch"] + flo["seen"]) / (ref["blocks"] * (ref["batch"] + ref["seen"]))
    assert math.isclose(p["here"]["flow training"], flo["iterations"] * per_iter)
    assert math.isclose(p["h200"]["flow training"], 300.0 * flo["iterations"] * flo["blocks"] / (ref["iterations"] * 3))


def full_run_record(path, dataset, wall, faithful=True, stand_in="full", **options):
    from bench.full_run import NAMED_OPTIONS
    record = dict(dataset=dataset, stand_in=stand_in, faithful=faithful, wall_seconds=wall, peak_gpu_gib=5.1,
                  device_name="NVIDIA H200", date="2026-12-07 10:00 UTC", commit="abc1234",
                  options={**{n: False for n in NAMED_OPTIONS}, **options})
    path.write_text(json.dumps(record))


def test_expected_time_shows_measured_full_runs_with_device_date_and_commit(tmp_path, capsys):
    full_run_record(tmp_path / "full-FLO-h200.json", "FLO", 95.0)
    full_run_record(tmp_path / "full-FLO-h200-tf32.json", "FLO", 70.0, tf32=True)
    full_run_record(tmp_path / "full-APY-h200-tf32.json", "APY", 80.0, tf32=True)  # no fp32 run: projected only
    full_run_record(tmp_path / "full-CUB-h200-custom.json", "CUB", 5.0, faithful=False)  # another schedule
    full_run_record(tmp_path / "full-AWA2-cpu-quick.json", "AWA2", 9.0, stand_in="quick")  # not the benchmark's size
    out = expected_time.expected([f"--measured={tmp_path}"])
    assert [r["label"] for r in out["FLO"]["measured"]] == ["fp32", "tf32"] and not out["CUB"]["measured"]
    lines = capsys.readouterr().out.splitlines()
    table = {line.split()[0]: line for line in lines if line.split() and line.split()[0] in out}
    assert table["FLO"].endswith(" 1.6 min") and table["APY"].endswith(" -") and table["AWA2"].endswith(" -")
    assert "MEASURED FLO fp32: 95 s end to end (NVIDIA H200, 2026-12-07 10:00 UTC, commit abc1234, peak GPU memory " \
           "5.1 GiB; full-FLO-h200.json)" in lines
    assert any(line.startswith("MEASURED APY tf32: 80 s") for line in lines)
    assert "PROJECTED from the AWA2 unit times measured on" in lines[0]
