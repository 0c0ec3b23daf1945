"""bench/full_run.py: one dataset's protocol timed end to end, and the record it writes."""
import json

import pytest

from bench import full_run
from config import Config

REQUIRED = ("dataset", "device_name", "torch", "cuda", "driver", "commit", "options", "command", "date",
            "wall_seconds", "peak_gpu_bytes", "paper", "stand_in", "faithful", "stages")


def test_a_tiny_cpu_run_writes_its_record_with_the_paper_rule_numbers(tmp_path):
    tiny = ["--gen_nepoch=2", "--eval_start=0", "--evl_interval=3", "--nSample=5", "--classifier_epochs=1",
            "--hidden_dim=64", "--input_dim=32", "--num_coupling_layers=1"]
    record = full_run.main(["AWA2", "--synthetic", "--device=cpu", "--quiet", f"--out_dir={tmp_path / 'runs'}",
                            f"--json_dir={tmp_path}", *tiny])
    path = tmp_path / "full-AWA2-cpu-quick-custom.json"  # the quick stand-in, a shortened schedule
    assert json.loads(path.read_text()) == record
    assert all(key in record for key in REQUIRED)
    assert record["peak_gpu_bytes"] is None and record["cuda"] is None and record["wall_seconds"] > 0
    assert set(record["paper"]) == {"T1", "U", "S", "H", "iteration"} and record["stages"]["evaluations"] == 2
    assert record["options"]["gen_nepoch"] == 2 and record["options"]["nSample"] == 5
    assert record["options"]["batchsize"] == 256 and record["stand_in"] == "quick" and not record["faithful"]
    assert (tmp_path / "runs" / "AWA2").is_dir() and record["run_dir"].startswith(str(tmp_path / "runs"))


def test_the_file_name_says_the_device_and_the_options_that_change_numbers():
    h200 = {"gpu": "NVIDIA H200"}
    assert full_run.file_name("AWA2", h200, Config(), True) == "full-AWA2-h200.json"
    assert full_run.file_name("AWA2", h200, Config(tf32=True), True) == "full-AWA2-h200-tf32.json"
    assert full_run.file_name("CUB", {"gpu": "NVIDIA H100 80GB HBM3"}, Config(cuda_graphs=False), False) == \
        "full-CUB-h100-80gb-hbm3-eager-custom.json"
    assert full_run.file_name("FLO", {"gpu": None}, Config(), True) == "full-FLO-cpu.json"


@pytest.mark.parametrize("argv, message", [
    (["--device=cpu"], "name a dataset"),
    (["AWA2", "--seeds=1,2"], "option --seeds: not for bench.full_run"),
    (["AWA2", "--resume=x"], "option --resume: not for bench.full_run"),
])
def test_bad_commands_are_one_error_line(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        full_run.main(argv)
    assert exit_.value.code == 2 and message in capsys.readouterr().err
