"""Ahead-of-time compilation of the real train step for a TPU (or other) topology, on any machine.

``jax.experimental.topologies.get_topology_desc`` describes a slice (e.g. ``v5p:4x4x4``) without the
hardware; the train step is lowered with the run's shardings on a mesh of those devices and compiled
by libtpu. Nothing runs: the compiled executable only reports per-device memory and FLOPs.
"""

from __future__ import annotations

import dataclasses
import os

from jax.experimental import topologies

from vla_jax.models.summary import count_by_component, dummy_batch
from vla_jax.models.vla import VLA, make_config
from vla_jax.train import sharding as sh
from vla_jax.train.metrics import analytic_flops_per_example
from vla_jax.train.optimizer import make_optimizer
from vla_jax.train.state import state_shardings, with_shardings
from vla_jax.train.step import compile_train_step, compiled_flops, make_train_step

# High-bandwidth memory per chip, bytes (public data sheets), by ``device.device_kind``.
HBM_BYTES = {
    "TPU v4": 32e9,
    "TPU v5 lite": 16e9,   # v5e
    "TPU v5": 95e9,        # v5p
    "TPU v6 lite": 32e9,   # v6e (Trillium)
}


class TopologyError(ValueError):
    """A topology string the TPU compiler does not accept; the message says which form is expected."""


@dataclasses.dataclass
class CompileReport:
    topology: str
    device_kind: str
    num_devices: int
    mesh: dict[str, int]
    sharding: str
    global_batch: int
    argument_bytes: int
    output_bytes: int
    alias_bytes: int
    temp_bytes: int
    flops_per_device: float | None
    analytic_flops_per_device: float
    estimated_seconds: float | None
    hbm_bytes: float | None

    @property
    def peak_bytes(self) -> int:
        """Live bytes per device during the step: arguments + temporaries + outputs not aliased to inputs."""
        return self.argument_bytes + self.temp_bytes + self.output_bytes - self.alias_bytes

    @property
    def fits(self) -> bool | None:
        return None if self.hbm_bytes is None else self.peak_bytes <= self.hbm_bytes

    def table(self) -> str:
        gib = lambda b: f"{b / 2**30:9.2f} GiB"
        rows = [
            ("topology", f"{self.topology} ({self.num_devices} x {self.device_kind})"),
            ("mesh", ", ".join(f"{k}={v}" for k, v in self.mesh.items()) + f"  rules={self.sharding}"),
            ("global batch", f"{self.global_batch}"),
            ("arguments / device", gib(self.argument_bytes)),
            ("temporaries / device", gib(self.temp_bytes)),
            ("outputs / device", gib(self.output_bytes) + f"  (aliased {gib(self.alias_bytes).strip()})"),
            ("peak / device", gib(self.peak_bytes)),
            ("HBM / chip", "unknown" if self.hbm_bytes is None else gib(self.hbm_bytes)),
            ("fits", {None: "unknown", True: "yes", False: "NO"}[self.fits]),
            ("FLOPs / step / device", f"{self.analytic_flops_per_device:.3e}  (analytic: 6 x params x tokens + attention)"),
            ("XLA cost analysis", "n/a" if self.flops_per_device is None else
             f"{self.flops_per_device:.3e}  (counts each scanned layer body once)"),
            ("estimated step time", "n/a" if not self.estimated_seconds or self.estimated_seconds <= 0
             else f"{self.estimated_seconds:.3f} s  (compiler estimate)"),
        ]
        return "\n".join(f"{k:<24}{v}" for k, v in rows)


def topology_devices(topology: str) -> list:
    """``'v5p:4x4x4'`` or ``'tpu:v5p:4x4x4'`` -> the slice's (abstract) devices."""
    # Only compiling: several processes may load libtpu at once (its lockfile guards real chips).
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    platform, name = ("tpu", topology) if topology.count(":") == 1 else topology.split(":", 1)
    try:
        return list(topologies.get_topology_desc(platform=platform, topology_name=name).devices)
    except Exception as e:  # noqa: BLE001 - libtpu raises assorted errors for bad names
        raise TopologyError(f"--topology={topology!r} was not accepted ({str(e).splitlines()[0][:120]}); "
                            "use e.g. v5p:2x2x2, v5p:4x4x4, v4:2x2x1, v5e:4x4 (libtpu must be installed)") from None


def compile_report(config, topology: str) -> CompileReport:
    """Lowers and compiles ``config``'s train step for ``topology``; returns memory / FLOPs figures."""
    devices = topology_devices(topology)
    mesh = sh.make_mesh(config.mesh.shape, devices)
    rules = sh.get_rules(config.sharding)
    model = VLA(make_config(config.model))
    tx, schedule = make_optimizer(config.optimizer, config.num_steps)
    ema = config.optimizer.ema_decay or None
    abstract, shardings = state_shardings(model, tx, mesh, rules, config.seed, use_ema=ema is not None)
    step = make_train_step(model, tx, schedule, loss_weights=dict(config.loss_weights),
                           num_sources=max(len(config.data.get("mixture", {})), 1), ema_decay=ema,
                           grad_accum_steps=config.optimizer.grad_accum_steps)
    batch = dummy_batch(model.cfg, config.batch_size)
    compiled = compile_train_step(step, with_shardings(abstract, shardings), shardings, batch,
                                  sh.batch_sharding(mesh), mesh, rules)
    mem = compiled.memory_analysis()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    kind = devices[0].device_kind
    return CompileReport(
        topology=topology, device_kind=kind, num_devices=len(devices), mesh=dict(mesh.shape),
        sharding=config.sharding, global_batch=config.batch_size,
        argument_bytes=int(mem.argument_size_in_bytes), output_bytes=int(mem.output_size_in_bytes),
        alias_bytes=int(mem.alias_size_in_bytes), temp_bytes=int(mem.temp_size_in_bytes),
        flops_per_device=compiled_flops(compiled),
        analytic_flops_per_device=analytic_flops_per_example(
            config.model, count_by_component(abstract.params)) * config.batch_size / len(devices),
        estimated_seconds=(cost or {}).get("optimal_seconds"),
        hbm_bytes=HBM_BYTES.get(kind))
