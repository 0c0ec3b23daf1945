"""Where a measurement ran: command, date, commit, CPU model and flags, bf16 kernels, torch, threads,
GPU (its CUDA version and driver).

Recorded by bench.py and precision.py in their JSON and printed under their tables, so every
number in the README names the machine and the code that produced it.
"""
from __future__ import annotations

import datetime
import os
import platform
import shlex
import subprocess
from pathlib import Path

import torch

import fast
from provenance import cpu_model, git_commit

ISA_FLAGS = ("avx512f", "avx2", "avx512_bf16", "amx_bf16")


def cpu_facts() -> dict:
    """CPU model (provenance.cpu_model), its instruction-set flags that decide the precision paths, and whether
    oneDNN has bf16 kernels here (fast.slow_bf16_matmul)."""
    flags = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    return dict(cpu_model=cpu_model(), cpu_count=os.cpu_count(), **{f: f in flags for f in ISA_FLAGS},
                onednn_bf16_kernels=not fast.slow_bf16_matmul(torch.device("cpu")))


def gpu_driver() -> str | None:
    """The NVIDIA driver's version (nvidia-smi), None where there is none."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.splitlines()[0].strip() if out.returncode == 0 and out.stdout.strip() else None


def environment(command: list[str], device: torch.device) -> dict:
    cuda = device.type == "cuda"
    return dict(command=shlex.join(command),
                date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                commit=git_commit(), device=str(device), **cpu_facts(),
                gpu=torch.cuda.get_device_name(device) if cuda else None,
                cuda=torch.version.cuda if cuda else None, driver=gpu_driver() if cuda else None,
                torch=torch.__version__, python=platform.python_version(),
                OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS"), threads=torch.get_num_threads(),
                load_average=[round(x, 2) for x in os.getloadavg()])


def describe(env: dict) -> str:
    """Three lines for under a table."""
    isa = ", ".join(f"{k} {'yes' if env.get(k) else 'no'}" for k in ISA_FLAGS)
    where = env.get("gpu") or f"{env['cpu_model']}, {env['cpu_count']} cores"
    return (f"command: {env['command']}\ndate: {env['date']}; commit: {env['commit']}\n"
            f"device: {env['device']} ({where}); CPU flags: {isa}; oneDNN bf16 kernels: "
            f"{'yes' if env['onednn_bf16_kernels'] else 'no'}\n"
            f"torch {env['torch']}, Python {env['python']}, OMP_NUM_THREADS={env['OMP_NUM_THREADS']}, "
            f"{env['threads']} torch threads, load average at start {env['load_average']}")
