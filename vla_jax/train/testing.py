"""Helpers for trainer tests and smoke runs: a tiny model config and subprocess launching.

``TINY`` shrinks the debug preset to something that compiles in seconds on a 2-core CPU while
keeping every code path (ViT, two experts, text + flow losses, scanned layers, 3 data sources).
"""

from __future__ import annotations

import atexit
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
from typing import Callable

REPO = pathlib.Path(__file__).resolve().parents[2]
CONFIG = "configs/pretrain.py:debug,mixture=synthetic"
GLOO_RENDEZVOUS_TIMEOUT = "Gloo context initialization failed"

TINY = {
    "model.image_size": 16, "model.num_cameras": 2, "model.max_text_len": 8, "model.action_horizon": 4,
    "model.max_action_dim": 6, "model.max_state_dim": 6, "model.vocab_size": 300,
    "model.vit.width": 32, "model.vit.depth": 1, "model.vit.mlp_dim": 64, "model.vit.num_heads": 2,
    "model.vit.patch_size": 8, "model.addons": ("location_tokens(grid=8, first_id=4)", "prefix_readout"),
    "model.llm.width": 32, "model.llm.depth": 2, "model.llm.mlp_dim": 64, "model.llm.num_heads": 2,
    "model.llm.num_kv_heads": 1, "model.llm.head_dim": 16,
    "model.expert.width": 16, "model.expert.mlp_dim": 32,
    "batch_size": 16, "num_steps": 8, "log_every": 1, "checkpoint.every": 4, "optimizer.warmup_steps": 2,
    "metrics.peak_flops_per_device": 1e11,
}


def tiny_config(**overrides):
    """The tiny config as a ConfigDict (``overrides`` use ``a__b`` for ``a.b``)."""
    from vla_jax.config import load_config

    return load_config(CONFIG, {**TINY, **{k.replace("__", "."): v for k, v in overrides.items()}})


def flag_args(overrides: dict | None = None, base: dict | None = None) -> list[str]:
    """``--config=... --config.a.b=v ...`` for ``python -m vla_jax.train``."""
    merged = {**(TINY if base is None else base), **(overrides or {})}
    return [f"--config={CONFIG}"] + [f"--config.{k}={v}" for k, v in merged.items()]


# One persistent compilation cache per test session: subprocesses running the same program
# (a run and its resumption) compile once.
_CACHE_DIR: list[str] = []


def cache_dir() -> str:
    if not _CACHE_DIR:
        _CACHE_DIR.append(tempfile.mkdtemp(prefix="vla_jax_jit_cache_"))
        atexit.register(shutil.rmtree, _CACHE_DIR[0], ignore_errors=True)
    return _CACHE_DIR[0]

# Cheaper LLVM optimisation: tiny test programs compile ~2x faster and still run in milliseconds.
TEST_XLA_FLAGS = "--xla_backend_optimization_level=0"


def env(devices: int = 1, **extra) -> dict[str, str]:
    """Environment for a CPU subprocess with ``devices`` host devices (and the shared jit cache)."""
    e = dict(os.environ)
    e.update(JAX_PLATFORMS="cpu", XLA_FLAGS=f"--xla_force_host_platform_device_count={devices} {TEST_XLA_FLAGS}",
             PYTHONPATH=str(REPO) + os.pathsep + e.get("PYTHONPATH", ""), TF_CPP_MIN_LOG_LEVEL="3",
             JAX_COMPILATION_CACHE_DIR=cache_dir(), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
             JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
    e.update({k: str(v) for k, v in extra.items()})
    return e


def train_cmd(workdir, overrides: dict | None = None, base: dict | None = None) -> list[str]:
    return [sys.executable, "-m", "vla_jax.train", f"--workdir={workdir}", *flag_args(overrides, base)]


def run_train(workdir, overrides: dict | None = None, devices: int = 1, timeout: float = 300,
              base: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(train_cmd(workdir, overrides, base), cwd=REPO, env=env(devices), capture_output=True,
                          text=True, timeout=timeout)


def run_launcher(processes: int, devices_per_process: int, args_for_attempt: Callable[[int], list[str]],
                 timeout: float = 600) -> subprocess.CompletedProcess:
    """``bash launch/local.sh <processes> <args>`` with ``devices_per_process`` CPU devices each. Run again, once,
    with ``args_for_attempt(2)`` (e.g. a fresh workdir) when gloo's rendezvous of a first collective timed out:
    gloo waits 30 s for every device thread of every process, and on a 2-core machine running other tests'
    processes one thread was seen not to get there in time (a whole process arriving 40 s late is waited out).
    The returned run is the one whose outcome the test checks."""
    run_env = env(devices=devices_per_process, DEVICES_PER_PROCESS=devices_per_process, PYTHON=sys.executable)
    for attempt in (1, 2):
        proc = subprocess.run(["bash", "launch/local.sh", str(processes), *args_for_attempt(attempt)], cwd=REPO,
                              env=run_env, capture_output=True, text=True, timeout=timeout)
        if GLOO_RENDEZVOUS_TIMEOUT not in proc.stdout + proc.stderr:
            break
    return proc


def run_python(code: str, devices: int = 1, timeout: float = 300) -> subprocess.CompletedProcess:
    """Runs ``code`` in a fresh interpreter with ``devices`` CPU devices."""
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env(devices), capture_output=True, text=True,
                          timeout=timeout)
