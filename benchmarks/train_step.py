"""Train-step benchmark: step time, examples/s, tokens/s, model FLOP/s and MFU against this machine's
measured float32 matmul peak (measured in the same run), for several device counts.

    python benchmarks/train_step.py --config=configs/pretrain.py:small,mixture=synthetic \
        --config.model.dtype=float32 --config.batch_size=8 --config.mesh.shape.data=1 \
        --config.mesh.shape.fsdp=-1 --devices=1,8

Each device count runs in its own subprocess (``--xla_force_host_platform_device_count`` must be
set before JAX starts). The batch is random data in the batch format: this measures the step, not
the loader (see benchmarks/data_throughput.py). MFU uses analytic FLOPs (6 x params x tokens + attention).
"""

import json
import os
import subprocess
import sys
import time

from vla_jax.platform import jax_defaults

jax_defaults()

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from vla_jax.config import flags_parser  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file[:arg].", lock_config=True)
_DEVICES = flags.DEFINE_string("devices", "1,8", "Comma-separated device counts (one subprocess each).")
_STEPS = flags.DEFINE_integer("steps", 5, "Timed steps after one warm-up step.")
_WORKER = flags.DEFINE_bool("worker", False, "Internal: run one measurement in this process.")


def measure(config, steps: int) -> dict:
    """Compiles the real sharded train step on all local devices and times ``steps`` calls."""
    import jax

    from vla_jax.batch import random_batch
    from vla_jax.models.summary import count_by_component, dummy_batch
    from vla_jax.models.vla import VLA, make_config
    from vla_jax.train import metrics, sharding as sh, state as state_lib, step as step_lib
    from vla_jax.train.optimizer import make_optimizer

    mesh = sh.make_mesh(config.mesh.shape)
    rules = sh.get_rules(config.sharding)
    model = VLA(make_config(config.model))
    tx, schedule = make_optimizer(config.optimizer, config.num_steps)
    ema = config.optimizer.ema_decay or None
    state, shardings = state_lib.create_train_state(model, tx, mesh, rules, config.seed, ema is not None)
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)
    batch_sh = sh.batch_sharding(mesh)
    train_step = step_lib.make_train_step(model, tx, schedule, loss_weights=dict(config.loss_weights),
                                          num_sources=2, ema_decay=ema)
    batch_abstract = {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=batch_sh)
                      for k, v in dummy_batch(model.cfg, config.batch_size).items()}
    t0 = time.perf_counter()
    compiled = step_lib.compile_train_step(train_step, abstract, shardings, batch_abstract, batch_sh, mesh, rules)
    compile_s = time.perf_counter() - t0
    batch = sh.global_batch(random_batch(model.cfg, config.batch_size, seed=0), batch_sh)
    state, m = compiled(state, batch)
    jax.block_until_ready(m)
    t0 = time.perf_counter()
    for _ in range(steps):
        state, m = compiled(state, batch)
    jax.block_until_ready(m)
    step_s = (time.perf_counter() - t0) / steps
    flops = metrics.analytic_flops_per_example(config.model, count_by_component(abstract.params)) * config.batch_size
    peak = metrics.measure_matmul_flops()  # one device's float32 matmul; CPU devices share the same cores
    tokens = metrics.tokens_per_example(config.model)["total"]
    return dict(devices=jax.device_count(), mesh=dict(mesh.shape), batch=config.batch_size, compile_s=compile_s,
                step_s=step_s, examples_s=config.batch_size / step_s, tokens_s=config.batch_size * tokens / step_s,
                flops_s=flops / step_s, peak=peak, mfu=flops / step_s / peak, loss=float(m["loss"]))


def main(argv):
    config = _CONFIG.value
    if _WORKER.value:
        print("RESULT " + json.dumps(measure(config, _STEPS.value)), flush=True)
        return
    rows = []
    counts = [int(x) for x in _DEVICES.value.split(",")]
    for n in counts:
        if config.batch_size % n:
            raise SystemExit(f"error: config.batch_size={config.batch_size} must be divisible by every --devices "
                             f"count ({n}); the batch is split over the devices")
    for n in counts:
        env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=f"--xla_force_host_platform_device_count={n}")
        cmd = [sys.executable, os.path.abspath(__file__), "--worker"] + [a for a in argv[1:]] + \
              [a for a in sys.argv[1:] if a.startswith("--config") or a.startswith("--steps")]
        out = subprocess.run(cmd, env=env, capture_output=True, text=True)
        line = [l for l in out.stdout.splitlines() if l.startswith("RESULT ")]
        if out.returncode or not line:
            raise SystemExit(f"error: benchmark with {n} devices failed (exit code {out.returncode}; -9 is usually "
                             f"out of host memory: shard the state with --config.mesh.shape.fsdp=-1):\n"
                             f"{out.stderr[-2000:]}")
        rows.append(json.loads(line[0][7:]))
        print(f"{n} devices: {rows[-1]['step_s']:.3f} s/step", flush=True)
    print(f"preset={config.preset} dtype={config.model.dtype} batch={config.batch_size} sharding={config.sharding}")
    print(f"{'devices':>7} {'mesh':>18} {'compile s':>9} {'step s':>8} {'examples/s':>10} {'tokens/s':>9} "
          f"{'GFLOP/s':>8} {'peak GFLOP/s':>12} {'MFU':>6}")
    for r in rows:
        mesh = "x".join(str(v) for v in r["mesh"].values())
        print(f"{r['devices']:>7} {mesh:>18} {r['compile_s']:>9.1f} {r['step_s']:>8.3f} {r['examples_s']:>10.2f} "
              f"{r['tokens_s']:>9.0f} {r['flops_s'] / 1e9:>8.1f} {r['peak'] / 1e9:>12.1f} {r['mfu']:>6.1%}")


if __name__ == "__main__":
    app.run(main, flags_parser=flags_parser)
