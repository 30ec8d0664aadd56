"""Train-step benchmark: step time, examples/s, tokens/s, model FLOP/s and MFU, for several device counts.

    python benchmarks/train_step.py --config=configs/pretrain.py:debug,mixture=synthetic --devices=1,8 \
        --rounds=5 --write_docs

MFU's peak is this machine's float32 2048^2 matmul throughput, measured interleaved with the timed steps in
the same process: each round times ``--steps`` steps, then the matmul, so both see the same load. The table
reports the median over rounds and the min-max spread of MFU, with the load average during the run; a run
whose load average exceeded the core count is flagged. Each device count runs in its own subprocess
(``--xla_force_host_platform_device_count`` must be set before JAX starts). The batch is random data in the
batch format: this measures the step, not the loader (benchmarks/data_throughput.py). MFU uses analytic FLOPs
(6 x params x tokens + attention). ``--write_docs`` replaces the "### Train step: <preset>" section of
docs/performance.md with the table and its conditions.
"""

import json
import os
import statistics
import subprocess
import sys
import time

from vla_jax.platform import jax_defaults

jax_defaults()

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from conditions import LoadWatch, machine, write_section  # noqa: E402
from vla_jax.config import flags_parser  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file[:arg].", lock_config=True)
_DEVICES = flags.DEFINE_string("devices", "1,8", "Comma-separated device counts (one subprocess each).")
_STEPS = flags.DEFINE_integer("steps", 3, "Timed steps per round (after one warm-up step).")
_ROUNDS = flags.DEFINE_integer("rounds", 5, "Rounds of (timed steps, matmul peak), interleaved.")
_WRITE_DOCS = flags.DEFINE_bool("write_docs", False, "Write the table into docs/performance.md.")
_WORKER = flags.DEFINE_bool("worker", False, "Internal: run one measurement in this process.")


def measure(config, steps: int, rounds: int) -> dict:
    """Compiles the real sharded train step on all local devices; ``rounds`` x (time ``steps`` calls, then
    measure the matmul peak). Returns per-round step times and peaks plus the medians and MFU spread."""
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
    metrics.measure_matmul_flops()  # compile the peak's matmul outside the rounds
    step_times, peaks = [], []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(steps):
            state, m = compiled(state, batch)
        jax.block_until_ready(m)
        step_times.append((time.perf_counter() - t0) / steps)
        peaks.append(metrics.measure_matmul_flops())  # one device's float32 matmul; CPU devices share the cores
    flops = metrics.analytic_flops_per_example(config.model, count_by_component(abstract.params)) * config.batch_size
    tokens = metrics.tokens_per_example(config.model)["total"]
    mfus = [flops / t / p for t, p in zip(step_times, peaks)]
    step_s, peak = statistics.median(step_times), statistics.median(peaks)
    return dict(devices=jax.device_count(), mesh=dict(mesh.shape), batch=config.batch_size, compile_s=compile_s,
                step_s=step_s, examples_s=config.batch_size / step_s, tokens_s=config.batch_size * tokens / step_s,
                flops_s=flops / step_s, peak=peak, mfu=statistics.median(mfus), mfu_min=min(mfus),
                mfu_max=max(mfus), step_times=step_times, peaks=peaks, loss=float(m["loss"]))


def table(config, rows: list[dict]) -> str:
    name = f"{config.preset}, {config.model.dtype}"
    lines = ["| preset | batch | devices | mesh (data×fsdp×tensor) | compile s | step s | examples/s | tokens/s "
             "| model GFLOP/s | peak GFLOP/s (interleaved) | MFU (min-max over rounds) |",
             "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        mesh = "×".join(str(v) for v in r["mesh"].values())
        lines.append(f"| {name} | {r['batch']} | {r['devices']} | {mesh} | {r['compile_s']:.1f} | {r['step_s']:.3f} "
                     f"| {r['examples_s']:.2f} | {r['tokens_s']:,.0f} | {r['flops_s'] / 1e9:.1f} "
                     f"| {r['peak'] / 1e9:.1f} | {r['mfu']:.1%} ({r['mfu_min']:.1%}-{r['mfu_max']:.1%}) |")
    return "\n".join(lines)


def main(argv):
    config = _CONFIG.value
    if _WORKER.value:
        print("RESULT " + json.dumps(measure(config, _STEPS.value, _ROUNDS.value)), flush=True)
        return
    rows = []
    counts = [int(x) for x in _DEVICES.value.split(",")]
    for n in counts:
        if config.batch_size % n:
            raise SystemExit(f"error: config.batch_size={config.batch_size} must be divisible by every --devices "
                             f"count ({n}); the batch is split over the devices")
    load = LoadWatch()
    for n in counts:
        env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=f"--xla_force_host_platform_device_count={n}")
        cmd = [sys.executable, os.path.abspath(__file__), "--worker"] + [a for a in argv[1:]] + \
              [a for a in sys.argv[1:] if a.startswith(("--config", "--steps", "--rounds"))]
        out = subprocess.run(cmd, env=env, capture_output=True, text=True)
        load.sample()
        line = [l for l in out.stdout.splitlines() if l.startswith("RESULT ")]
        if out.returncode or not line:
            raise SystemExit(f"error: benchmark with {n} devices failed (exit code {out.returncode}; -9 is usually "
                             f"out of host memory: shard the state with --config.mesh.shape.fsdp=-1):\n"
                             f"{out.stderr[-2000:]}")
        rows.append(json.loads(line[0][7:]))
        print(f"{n} devices: {rows[-1]['step_s']:.3f} s/step (rounds: "
              f"{', '.join(f'{t:.3f}' for t in rows[-1]['step_times'])})", flush=True)
    text = table(config, rows)
    conditions = (f"{machine()}; {load.describe()}; {_ROUNDS.value} rounds of {_STEPS.value} timed steps, each "
                  f"followed by the peak matmul; sharding={config.sharding}")
    print(text)
    print(f"conditions: {conditions}")
    if _WRITE_DOCS.value:
        flags_used = " ".join(a for a in sys.argv[1:] if a != "--write_docs")
        heading = f"### Train step: {config.preset}"
        write_section(heading, f"{heading}\n\n`python benchmarks/train_step.py {flags_used} --write_docs` on a "
                               f"{conditions}.\n\n{text}\n")
        print("wrote docs/performance.md")


if __name__ == "__main__":
    app.run(main, flags_parser=flags_parser)
