"""The pretraining loop, big_vision style: one flat function, read top to bottom.

    python -m vla_jax.train --config=configs/pretrain.py:debug --workdir=runs/debug
    python -m vla_jax.train --config=configs/pretrain.py:debug,mixture=synthetic --workdir=runs/smoke \
        --config.num_steps=50 --config.mesh.shape.fsdp=2

Multi-host: pass ``--coordinator_address=HOST:PORT --num_processes=N --process_id=I`` (see launch/),
or run under SLURM / a TPU pod where ``jax.distributed.initialize()`` finds the cluster itself.
Resuming is automatic: if ``<workdir>/checkpoints`` holds a checkpoint, training continues from the
newest complete one (params, optimizer, EMA, rng and the data iterator position).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time

import jax
import numpy as np
from absl import flags, logging
from jax.experimental import multihost_utils
from ml_collections import config_flags

from vla_jax import data as data_lib
from vla_jax.batch import check_batch
from vla_jax.config import ConfigError
from vla_jax.data.errors import DataError
from vla_jax.data.mixture import dataset_stats
from vla_jax.data.settings import read_settings
from vla_jax.eval.run import PeriodicEvaluator
from vla_jax.models import addons, summary
from vla_jax.models.vla import CORE_LOSSES, VLA, make_config
from vla_jax.platform import CacheCounter
from vla_jax.progress import Progress
from vla_jax.train import checkpoint as ckpt_lib
from vla_jax.train import init_from
from vla_jax.train import metrics as metrics_lib
from vla_jax.train import sharding as sh
from vla_jax.train import state as state_lib
from vla_jax.train import step as step_lib
from vla_jax.train import synthetic, wandb_writer, workdir_lock
from vla_jax.train.optimizer import OptimizerError, make_optimizer, trainable_count

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Experiment config, e.g. configs/pretrain.py:debug.",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Where checkpoints, metrics and the resolved config go.")
flags.DEFINE_string("coordinator_address", None, "Multi-process: HOST:PORT of process 0's coordinator.")
flags.DEFINE_integer("num_processes", None, "Multi-process: number of processes.")
flags.DEFINE_integer("process_id", None, "Multi-process: this process's index.")
flags.DEFINE_bool("multihost", False, "Call jax.distributed.initialize() and let JAX detect the cluster "
                  "(TPU pod slices, SLURM, ...). Implied by --coordinator_address.")


class TrainError(RuntimeError):
    """Stops training with a one-line message (non-finite loss, bad batch size, ...)."""


# ----------------------------------------------------------------------------- distributed
def initialize_distributed() -> None:
    """``jax.distributed.initialize`` from flags, ``JAX_COORDINATOR_ADDRESS`` / ``JAX_NUM_PROCESSES`` /
    ``JAX_PROCESS_ID`` env vars, ``--multihost``, or a detected cluster (SLURM with > 1 task,
    ``TPU_WORKER_HOSTNAMES`` listing several workers). Single process otherwise."""
    address = FLAGS.coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS")
    num = FLAGS.num_processes or _int_env("JAX_NUM_PROCESSES")
    pid = FLAGS.process_id if FLAGS.process_id is not None else _int_env("JAX_PROCESS_ID")
    # CPU-only multi-process runs need a CPU collectives backend (harmless on TPU/GPU).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if address:
        jax.distributed.initialize(coordinator_address=address, num_processes=num, process_id=pid)
    elif FLAGS.multihost or _int_env("SLURM_NTASKS", 1) > 1 or "," in os.environ.get("TPU_WORKER_HOSTNAMES", ""):
        jax.distributed.initialize()


def _int_env(name: str, default=None):
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else default


# ----------------------------------------------------------------------------- data hookup
def make_data(config, process_index: int, process_count: int):
    """THE one place where the trainer meets the data pipeline.

    Returns ``(iterator, source_names, norm_stats)``: the iterator yields this process's share
    (``config.batch_size // process_count`` rows) of each global batch as numpy arrays in the
    vla_jax/batch.py format and has ``get_state()`` / ``set_state()``; ``source_names[i]`` names
    ``batch["source"] == i``; ``norm_stats`` (JSON-able) goes into every checkpoint.
    """
    if config.data.get("kind", "mixture") == "synthetic":
        it = synthetic.make_synthetic_iterator(config, process_index=process_index, process_count=process_count)
        return it, synthetic.source_names(config), {"kind": "synthetic (unnormalized)"}

    it = data_lib.make_train_iterator(config, process_index=process_index, process_count=process_count)
    names = data_lib.source_names(config)
    settings = read_settings(config)
    # per robot dataset: the (norm-group combined) statistics its batches were normalized with
    stats = {name: dataset_stats(settings, name)[1] for name in names if settings.datasets[name].is_robot}
    return it, names, stats


# ----------------------------------------------------------------------------- checks
def check_training_config(config) -> None:
    def need(cond, msg):
        if not cond:
            raise ConfigError(msg)

    need(config.batch_size >= 1, f"config.batch_size={config.batch_size} must be >= 1")
    need(config.num_steps >= 1, f"config.num_steps={config.num_steps} must be >= 1")
    need(config.log_every >= 1, f"config.log_every={config.log_every} must be >= 1")
    need(config.checkpoint.every >= 1, f"config.checkpoint.every={config.checkpoint.every} must be >= 1")
    need(config.metrics.flops in ("compiled", "analytic"),
         f"config.metrics.flops={config.metrics.flops!r} must be 'compiled' or 'analytic'")
    ema = config.optimizer.ema_decay
    need(ema is None or 0.0 <= ema < 1.0, f"config.optimizer.ema_decay={ema} must be in [0, 1) or None")
    known = CORE_LOSSES + tuple(n for cls in addons.REGISTRY.values() for n in cls.LOSS_NAMES)
    for name in config.loss_weights:
        need(name in known, f"config.loss_weights.{name}: loss terms are {', '.join(known)}")
    need(not (config.init.from_npz and config.init.get("from_checkpoint")),
         "config.init.from_npz and config.init.from_checkpoint are both set; keep one")
    if "wandb" in config.metrics:
        error = wandb_writer.settings_error(config.metrics.wandb)
        need(error is None, error)


# ----------------------------------------------------------------------------- main
def main(argv) -> None:
    del argv
    if not FLAGS["verbosity"].present:  # orbax logs every save at INFO
        logging.set_verbosity(logging.WARNING)
    errors = (ConfigError, DataError, ckpt_lib.CheckpointError, init_from.InitFromError, OptimizerError,
              sh.ShardingError, TrainError, workdir_lock.WorkdirLockError)
    try:
        train(FLAGS.config, FLAGS.workdir)
    except errors as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        sys.exit(1)


def train(config, workdir: str) -> dict:
    """Runs (or resumes) training in ``workdir``; returns the last step's host metrics."""
    # ====================================================================== setup: processes, config
    initialize_distributed()  # before anything touches the devices
    if config is None or not workdir:
        raise ConfigError("both --config and --workdir are required")
    check_training_config(config)
    with workdir_lock.hold(workdir):  # before anything in the workdir is written; released on any exit
        return _train(config, workdir)


def _train(config, workdir: str) -> dict:
    """:func:`train` while this run holds the workdir lock."""
    pid, nproc = jax.process_index(), jax.process_count()
    lead = pid == 0
    log = (lambda *a: print(*a, flush=True)) if lead else (lambda *a: None)
    os.makedirs(workdir, exist_ok=True)
    log(f"processes: {nproc}, devices: {jax.device_count()} ({jax.devices()[0].device_kind}), "
        f"local devices: {jax.local_device_count()}")

    # ====================================================================== mesh and sharding rules
    mesh = sh.make_mesh(config.mesh.shape)
    rules = sh.get_rules(config.sharding)
    batch_sh = sh.batch_sharding(mesh)
    shards = sh.batch_shard_count(mesh)
    if config.batch_size % shards or config.batch_size % nproc:
        raise ConfigError(f"config.batch_size={config.batch_size} must be divisible by the batch shards "
                          f"(data*fsdp={shards}) and by the number of processes ({nproc})")
    log(f"mesh: {dict(mesh.shape)}, sharding rules: {config.sharding}")

    # ====================================================================== model and optimizer
    try:
        model_cfg = make_config(config.model)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    model = VLA(model_cfg)
    tx, schedule = make_optimizer(config.optimizer, config.num_steps)
    ema_decay = config.optimizer.ema_decay or None
    k_accum = int(config.optimizer.grad_accum_steps)

    # ====================================================================== checkpoints (resume?)
    ck = config.checkpoint
    checkpointer = ckpt_lib.Checkpointer(workdir, every=ck.every, keep_last=ck.keep_last, keep_every=ck.keep_every,
                                         async_save=ck.async_save)
    resume_step = checkpointer.latest_step()
    if resume_step is not None:
        checkpointer.check_config(resume_step, config.to_dict())
        if resume_step >= config.num_steps:
            checkpointer.close()
            log(f"already finished at step {resume_step} (config.num_steps={config.num_steps}); "
                f"checkpoints in {checkpointer.directory}")
            return {}

    # ====================================================================== data
    data_it, source_names, norm_stats = make_data(config, pid, nproc)
    num_sources = max(len(source_names), 1)

    # ====================================================================== train state
    abstract, shardings = state_lib.state_shardings(model, tx, mesh, rules, config.seed, ema_decay is not None)
    if resume_step is not None:
        state, data_state, _ = checkpointer.restore(resume_step, state_lib.with_shardings(abstract, shardings),
                                                    config.to_dict())
        if data_state is not None:
            data_it.set_state(data_state)
        else:
            log(f"warning: checkpoint {resume_step} has no data-iterator state for {nproc} processes; "
                "the data stream restarts (not an exact resume)")
        log(f"resumed from step {resume_step} ({checkpointer.directory / str(resume_step)})")
    else:
        overrides, report = None, None
        if config.init.from_npz:
            overrides, report = init_from.load_paligemma(config.init.from_npz, abstract.params)
        elif config.init.get("from_checkpoint"):
            overrides, report = init_from.load_checkpoint(config.init.from_checkpoint, abstract.params,
                                                          ema=bool(config.init.get("ema", False)),
                                                          action_expert=model.cfg.action_expert)
        if report is not None:
            log(report.format())
            if lead:
                with open(os.path.join(workdir, "init_report.txt"), "w") as f:
                    f.write(report.format() + "\n")
        state, shardings = state_lib.create_train_state(model, tx, mesh, rules, config.seed, ema_decay is not None,
                                                        param_overrides=overrides)
    start_step = int(jax.device_get(state.step))
    n_train, n_total = trainable_count(abstract.params, config.optimizer.freeze)
    log(f"parameters: {n_total:,} ({n_train:,} trainable); step {start_step} -> {config.num_steps}")
    if lead:  # the resume checks (config, train state) passed: the workdir's config is now this one
        with open(os.path.join(workdir, "config.json"), "w") as f:
            f.write(config.to_json_best_effort(indent=2, sort_keys=True))
        with open(os.path.join(workdir, "sharding.txt"), "w") as f:
            f.write("\n".join(sh.describe(shardings.params, abstract.params)) + "\n")

    # ====================================================================== compile the step
    train_step = step_lib.make_train_step(model, tx, schedule, loss_weights=dict(config.loss_weights),
                                          num_sources=num_sources, ema_decay=ema_decay, grad_accum_steps=k_accum)
    batch_abstract = {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=batch_sh)
                      for k, v in summary.dummy_batch(model_cfg, config.batch_size).items()}
    t0, cache = time.perf_counter(), CacheCounter()
    compiled = step_lib.compile_train_step(train_step, state_lib.with_shardings(abstract, shardings), shardings,
                                           batch_abstract, batch_sh, mesh, rules)
    log(f"train step ready in {time.perf_counter() - t0:.1f}s: {cache.describe()}")

    # ====================================================================== metrics and FLOPs
    tokens = metrics_lib.tokens_per_example(config.model)["total"]
    flops = None
    if config.metrics.flops == "compiled":
        per_device = step_lib.compiled_flops(compiled)
        flops = per_device * jax.device_count() if per_device else None
    if flops is None:
        counts = summary.count_by_component(abstract.params)
        flops = metrics_lib.analytic_flops_per_example(config.model, counts) * config.batch_size
    peak, peak_src = metrics_lib.peak_flops_per_device(config.metrics.peak_flops_per_device)
    log(f"FLOPs/step: {flops:.3e} ({config.metrics.flops}); peak/device: {peak:.3e} ({peak_src})")
    if lead:  # what perf/mfu is relative to, for tools/plot_metrics.py and readers of metrics.jsonl
        with open(os.path.join(workdir, metrics_lib.PERF_FILE), "w") as f:
            json.dump({"flops_per_step": flops, "flops_source": config.metrics.flops, "peak_flops_per_device": peak,
                       "peak_source": peak_src, "num_devices": jax.device_count()}, f, indent=2)
    tracker = None
    if lead and config.metrics.get("wandb") and config.metrics.wandb.project:
        tracker = wandb_writer.WandbWriter(workdir, config.metrics.wandb, config.to_dict())
    writer = metrics_lib.MetricsWriter(workdir, enabled=lead, start_step=start_step, wandb=tracker)
    perf = metrics_lib.Throughput(batch_size=config.batch_size, tokens_per_example=tokens, flops_per_step=flops,
                                  peak_flops=peak, num_devices=jax.device_count())

    # ====================================================================== periodic evaluation (config.eval)
    # Off unless config.eval.every > 0. Process 0 evaluates closed loop + offline (vla_jax/eval/run.py);
    # it reads neither the train state's rng nor the data iterator, so resuming stays exact.
    evaluator = None
    if "eval" in config and config.eval.every:
        evaluator = PeriodicEvaluator(config, model, enabled=lead, log=log)

    # ====================================================================== signals
    stop = {"signal": None}

    def on_signal(signum, _frame):
        stop["signal"] = signal.Signals(signum).name

    old_handlers = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}

    def stop_requested() -> bool:
        flag = stop["signal"] is not None
        if nproc > 1:  # every process must stop at the same step (saving is collective)
            flag = bool(np.any(multihost_utils.process_allgather(np.int32(flag))))
        return flag

    # ====================================================================== the loop
    last_saved = start_step if resume_step is not None else None
    bar = Progress("train", config.num_steps, initial=start_step, unit="steps", enabled=lead)
    last = {}

    def finish(step: int, device_metrics) -> dict:
        """Host-side handling of one step's metrics: NaN check, logging, progress bar."""
        m = jax.device_get(device_metrics)
        bad = step_lib.nonfinite_quantity(m)
        if bad is not None:  # the step was not applied and nothing after it is saved
            checkpointer.wait()  # let in-flight (good) saves land before naming the latest
            good = checkpointer.latest_step()
            raise TrainError(f"non-finite {bad} at step {step} (loss={float(m['loss'])}, grad_norm="
                             f"{float(m['grad_norm'])}); step not applied, stopped without saving; last good "
                             f"checkpoint: {'none' if good is None else checkpointer.directory / str(good)}")
        perf.tick()
        bar.update(step - bar.items, loss=f"{float(m['loss']):.4f}", lr=f"{float(m['lr']):.2e}")
        if step % config.log_every == 0 or step == config.num_steps:
            scalars = {k: float(v) for k, v in m.items() if np.ndim(v) == 0 and not k.startswith("finite/")}
            for key, value in m.items():
                if key.startswith("source_loss/"):
                    head = key.split("/", 1)[1]
                    counts = m[f"source_count/{head}"]
                    for i, name in enumerate(source_names):
                        if counts[i] > 0:
                            scalars[f"loss/{head}/{name}"] = float(value[i])
            scalars.update(perf.summary())
            writer.write(step, scalars)
        return m

    pending = None
    step = start_step
    perf.start()
    try:
        while step < config.num_steps:
            if stop_requested():
                break
            checkpointer.poll()  # a failed async save stops the run here: one line, exit 1
            local = next(data_it)
            if step == start_step:
                check_batch(local, config.model)
            batch = sh.global_batch(local, batch_sh)
            state, device_metrics = compiled(state, batch)
            step += 1
            if pending is not None:  # one step behind: the host never waits on the step just launched
                last = finish(*pending)
            pending = (step, device_metrics)
            if step % ck.every == 0 or step == config.num_steps:
                last, pending = finish(*pending), None
                checkpointer.save(step, state, data_state=data_it.get_state(), config=config.to_dict(),
                                  norm_stats=norm_stats)
                last_saved = step
            if evaluator is not None and step % evaluator.every == 0:
                if pending is not None:
                    last, pending = finish(*pending), None
                writer.write(step, evaluator(state, step))
                perf.start()  # evaluation time is not step time
        if pending is not None:
            last, pending = finish(*pending), None
        if last_saved != step:
            checkpointer.save(step, state, data_state=data_it.get_state(), config=config.to_dict(),
                              norm_stats=norm_stats)
        checkpointer.wait()
        if stop["signal"]:
            log(f"\n{stop['signal']}: saved a checkpoint at step {step}; exiting")
    finally:
        bar.close()
        writer.close()
        for s, h in old_handlers.items():
            signal.signal(s, h)
        checkpointer.close()
        if hasattr(data_it, "close"):
            data_it.close()
    log(f"done at step {step}: loss {float(last.get('loss', float('nan'))):.4f}; "
        f"checkpoints in {checkpointer.directory}")
    return {k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in last.items()}

