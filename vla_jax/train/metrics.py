"""Metric logging (JSONL + TensorBoard, process 0 only) and throughput / MFU accounting.

MFU = achieved model FLOP/s / (peak FLOP/s per device * devices). FLOPs per step come from the
compiled step's ``cost_analysis()`` (``config.metrics.flops = "compiled"``) or from the analytic
count 6 * params * tokens (+ attention), MaxText style (``"analytic"``). The peak is
``config.metrics.peak_flops_per_device`` if set, else a table for known accelerators, else measured
with a float32 matmul (CPU). The run's ``perf.json`` records both and where they came from.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time

import jax
import jax.numpy as jnp

PERF_FILE = "perf.json"  # in the workdir: FLOPs per step, peak per device, their sources

# Dense bf16 peak FLOP/s per chip (vendor data sheets).
PEAK_FLOPS = {
    "TPU v4": 275e12,
    "TPU v5 lite": 197e12,
    "TPU v5e": 197e12,
    "TPU v5p": 459e12,
    "TPU v5": 459e12,
    "TPU v6 lite": 918e12,
    "TPU v6e": 918e12,
    "NVIDIA H100": 989e12,
    "NVIDIA H200": 989e12,
    "NVIDIA A100": 312e12,
}


class MetricsWriter:
    """Appends ``{"step": s, **scalars}`` lines to ``<workdir>/metrics.jsonl`` and TensorBoard events
    to ``<workdir>/tb`` (and to W&B when given a ``WandbWriter``). Only process 0 writes. On resume from step ``start_step`` lines after that
    step (written before a crash, to be re-done) are dropped so the log has each step once."""

    def __init__(self, workdir: str, *, enabled: bool | None = None, start_step: int = 0, wandb=None):
        self.enabled = jax.process_index() == 0 if enabled is None else enabled
        self.path = os.path.join(workdir, "metrics.jsonl")
        self._file = None
        self._tb = None
        self._wandb = wandb  # an optional WandbWriter (vla_jax/train/wandb_writer.py), process 0 only
        if not self.enabled:
            return
        os.makedirs(workdir, exist_ok=True)
        self._truncate_after(start_step)
        self._file = open(self.path, "a", buffering=1)
        try:
            from tensorboardX import SummaryWriter
            self._tb = SummaryWriter(os.path.join(workdir, "tb"), purge_step=start_step + 1 if start_step else None,
                                     flush_secs=30)
        except ImportError:  # pragma: no cover - tensorboardX is a dependency
            self._tb = None

    def _truncate_after(self, start_step: int) -> None:
        if not os.path.exists(self.path):
            return
        keep = []
        with open(self.path) as f:
            for line in f:
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:  # a line cut by a crash
                    continue
                if row.get("step", 0) <= start_step:
                    keep.append(json.dumps(row) + "\n")
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            f.writelines(keep)
        os.replace(tmp, self.path)

    def write(self, step: int, scalars: dict) -> None:
        if not self.enabled:
            return
        row = {"step": int(step)}
        for k, v in scalars.items():
            v = float(v)
            row[k] = v if math.isfinite(v) else str(v)
        self._file.write(json.dumps(row) + "\n")
        if self._tb is not None:
            for k, v in scalars.items():
                self._tb.add_scalar(k, float(v), int(step))
        if self._wandb is not None:
            self._wandb.write(step, scalars)

    def write_text(self, tag: str, text: str, step: int = 0) -> None:
        if self.enabled and self._tb is not None:
            self._tb.add_text(tag, text, step)

    def flush(self) -> None:
        if self._file:
            self._file.flush()
        if self._tb is not None:
            self._tb.flush()

    def close(self) -> None:
        """Flushes and closes both logs. A full or failing disk is one warning line on stderr, never an
        exception: closing runs while the run stops, and the reason it stops is what must be reported."""
        for name, handle in (("metrics.jsonl", self._file), ("TensorBoard events", self._tb)):
            if handle is None:
                continue
            try:
                handle.close()
            except OSError as e:
                print(f"warning: could not finish writing {name} in {os.path.dirname(self.path)}: {e}", file=sys.stderr)
        self._file = None
        self._tb = None
        if self._wandb is not None:
            self._wandb.close()
            self._wandb = None


def read_metrics(workdir: str) -> list[dict]:
    """All rows of ``<workdir>/metrics.jsonl`` (for plotting and tests)."""
    rows = []
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        for line in f:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    return rows


# ----------------------------------------------------------------------------- FLOPs
def measure_matmul_flops(n: int = 2048, reps: int = 5) -> float:
    """Achieved float32 FLOP/s of an n x n matmul on the first device (a stand-in peak for CPUs)."""
    x = jnp.ones((n, n), jnp.float32)
    f = jax.jit(lambda a: a @ a)
    f(x).block_until_ready()
    t = time.perf_counter()
    for _ in range(reps):
        y = f(x)
    y.block_until_ready()
    return reps * 2 * n**3 / (time.perf_counter() - t)


def peak_flops_per_device(configured: float | None = None) -> tuple[float, str]:
    """(peak FLOP/s per device, where it came from)."""
    if configured:
        return float(configured), "config.metrics.peak_flops_per_device"
    kind = jax.devices()[0].device_kind
    for name, value in PEAK_FLOPS.items():
        if kind.startswith(name):
            return value, f"data sheet ({kind})"
    return measure_matmul_flops(), f"measured float32 matmul ({kind})"


def tokens_per_example(model_cfg) -> dict[str, int]:
    """Token counts of one example: vision patches, prefix (images + text [+ action tokens]), suffix."""
    patches = (model_cfg.image_size // model_cfg.vit.patch_size) ** 2
    images = model_cfg.num_cameras * patches
    discrete = model_cfg.action_head == "discrete"
    prefix = images + model_cfg.max_text_len + (1 + model_cfg.action_horizon * model_cfg.max_action_dim if discrete else 0)
    suffix = 0 if discrete else 1 + model_cfg.action_horizon
    return {"patches": images, "prefix": prefix, "suffix": suffix, "total": prefix + suffix}


def analytic_flops_per_example(model_cfg, counts: dict[str, int]) -> float:
    """Training FLOPs (forward + backward = 3 x forward) of one example: 6 * params * tokens for each
    component on the tokens it processes, plus attention score/value matmuls and the tied logits.

    ``counts``: parameters per component (``vla_jax.models.summary.count_by_component``).
    """
    tok = tokens_per_example(model_cfg)
    seq = tok["total"]
    heads, head_dim = model_cfg.llm.num_heads, model_cfg.llm.head_dim
    vit_seq = (model_cfg.image_size // model_cfg.vit.patch_size) ** 2
    flops = 6 * (counts["vision encoder"] + counts["vision projection"] + counts["add-ons"]) * tok["patches"]
    flops += 6 * counts["backbone layers"] * tok["prefix"]
    flops += 6 * counts["action expert layers"] * tok["suffix"]
    flops += 6 * counts["action/state projections"] * max(tok["suffix"], 1)
    flops += 6 * model_cfg.vocab_size * model_cfg.llm.width * model_cfg.max_text_len  # tied logits
    flops += 12 * model_cfg.llm.depth * seq * seq * heads * head_dim  # QK^T and PV, fwd+bwd
    flops += 12 * model_cfg.vit.depth * vit_seq * vit_seq * model_cfg.vit.width * model_cfg.num_cameras
    return float(flops)


class Throughput:
    """Step timing -> steps/s, examples/s, tokens/s, achieved FLOP/s and MFU."""

    def __init__(self, *, batch_size: int, tokens_per_example: int, flops_per_step: float | None,
                 peak_flops: float, num_devices: int):
        self.batch_size = batch_size
        self.tokens = tokens_per_example
        self.flops_per_step = flops_per_step
        self.peak = peak_flops * num_devices
        self._t = None
        self._steps = 0

    def start(self) -> None:
        self._t, self._steps = time.perf_counter(), 0

    def tick(self) -> None:
        self._steps += 1

    def summary(self) -> dict[str, float]:
        """Averages since the last ``start`` (then restarts the window)."""
        if self._t is None or self._steps == 0:
            return {}
        dt = (time.perf_counter() - self._t) / self._steps
        out = {
            "perf/step_time_s": dt,
            "perf/examples_per_s": self.batch_size / dt,
            "perf/tokens_per_s": self.batch_size * self.tokens / dt,
        }
        if self.flops_per_step:
            out["perf/model_flops_per_s"] = self.flops_per_step / dt
            out["perf/mfu"] = self.flops_per_step / dt / self.peak
        self.start()
        return out
