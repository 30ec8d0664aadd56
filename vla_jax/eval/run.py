"""Evaluate a training checkpoint (closed loop + offline), and evaluate periodically during training.

    python tools/evaluate.py --workdir=runs/debug --episodes=50 --baselines
    python tools/evaluate.py --workdir=runs/debug --step=200 --ema --tasks=pick,place --embodiments=single_arm

:func:`evaluate_checkpoint` reads the parameters with ``vla_jax.train.checkpoint.load_params`` (any
sharding), rebuilds the model from the saved config, wraps it as a closed-loop policy with the
training preprocessing / normalization (``make_model_policy``), evaluates every embodiment x task
family x split cell in the simulator, runs the offline validation metrics (vla_jax/eval/offline.py)
and, with ``baselines``, the scripted expert (ceiling), uniform random actions and the dataset's
mean action. Everything goes into ``<workdir>/eval/<step>[-ema]/`` (or ``out``): ``results.json``,
``summary.md``, ``summary.png``, ``filmstrip_model.png``, ``rollouts_model.gif``. What it evaluates and
how is an :class:`EvalSettings` (the flags of tools/evaluate.py)::

    evaluate_checkpoint("runs/debug", EvalSettings(step=200, ema=True, families="pick", episodes=20))

:class:`PeriodicEvaluator` is the trainer's hook (``config.eval``, see configs/pretrain.py): every
``config.eval.every`` steps, process 0 evaluates the current (EMA) parameters closed-loop and offline
and returns ``eval/...`` scalars for the MetricsWriter. It reads nothing the training state or data
iterator depend on, so resumed runs stay bitwise identical.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from typing import Callable, Mapping, Sequence

import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from vla_jax.config import ConfigError
from vla_jax.data.errors import DataError
from vla_jax.data.policy_io import make_policy_io
from vla_jax.eval import offline as offline_lib
from vla_jax.eval.agents import (
    ActionSampler,
    ExpertPolicy,
    MeanActionPolicy,
    ModelPolicy,
    RandomPolicy,
    make_model_policy,
)
from vla_jax.eval.closed_loop import evaluate
from vla_jax.eval.grounding_probe import first_frame_grounding, format_grounding
from vla_jax.eval.groups import group_table
from vla_jax.eval.report import results_payload, write_report
from vla_jax.eval.suites import SUITES, get_suite
from vla_jax.models.vla import VLA, make_config
from vla_jax.train.checkpoint import load_params



class EvalError(ValueError):
    """A bad flag, checkpoint or config for evaluation; the message is one line."""


# ---------------------------------------------------------------------------------------------- helpers
def parse_names(value, allowed: Sequence[str], flag: str) -> tuple[str, ...]:
    """``"all"`` / ``"a,b"`` / a sequence -> a tuple of names from ``allowed`` (EvalError otherwise)."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "all")):
        return tuple(allowed)
    names = [v.strip() for v in value.split(",")] if isinstance(value, str) else [str(v) for v in value]
    names = [n for n in names if n]
    for n in names:
        if n not in allowed:
            raise EvalError(f"{flag}={value}: unknown {n!r}; choose from {', '.join(allowed)} or all")
    if not names:
        raise EvalError(f"{flag}={value} names nothing")
    return tuple(dict.fromkeys(names))


def embodiment_datasets(config, suite: str = "tabletop") -> dict[str, str]:
    """{embodiment of ``suite``: robot dataset of config.data.datasets recorded with it} (those in the mixture
    first)."""
    datasets = config.data.get("datasets") or {}
    mixture = list(config.data.get("mixture") or {})
    order = mixture + [n for n in datasets if n not in mixture]
    out = {}
    for emb, spec in get_suite(suite).dataset_specs.items():
        for name in order:
            d = datasets.get(name)
            if d is not None and str(d.get("kind")) == "robot" and str(d.get("spec")) == spec:
                out[emb] = name
                break
    return out


def closed_loop_scalars(results, prefix: str = "eval") -> dict[str, float]:
    """``<prefix>/success``, ``<prefix>/success/<split>``, ``<prefix>/success/<embodiment>/<split>``."""
    out = {f"{prefix}/success": results.overall().rate}
    for split, c in results.by_split().items():
        out[f"{prefix}/success/{split}"] = c.rate
    for (emb, split), c in results.by_embodiment().items():
        out[f"{prefix}/success/{emb}/{split}"] = c.rate
    return out


def _rate_cell(c) -> str:
    return f"{100 * c.rate:.0f}% [{100 * c.ci_low:.0f}, {100 * c.ci_high:.0f}]"


def compact_table(results: dict) -> str:
    """Plain-text table: success rate [95% Wilson CI] per policy and split, and overall."""
    splits = []
    for r in results.values():
        for s in r.by_split():
            if s not in splits:
                splits.append(s)
    head = ["policy"] + splits + ["all", "n"]
    rows = [[label] + [_rate_cell(r.by_split()[s]) if s in r.by_split() else "-" for s in splits]
            + [_rate_cell(r.overall()), str(r.overall().n)] for label, r in results.items()]
    widths = [max(len(x[i]) for x in [head] + rows) for i in range(len(head))]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([line(head), line(["-" * w for w in widths])] + [line(r) for r in rows]) + "\n"


def compact_offline_table(metrics: dict) -> str:
    head = ["dataset", "n", "val loss", "action MSE", "action L1", "chunk translation err", "token acc",
            "exact match", "image reliance (per camera)", "instruction reliance"]
    rows = []
    for name, m in metrics.items():
        key = offline_lib.head_loss_key(m)
        loss = f"{m[key]:.4g} ({key[5:]})" if key else "-"
        rows.append([name, str(m["examples"]), loss,
                     f"{m['action_mse']:.4g}" if "action_mse" in m else "-",
                     f"{m['action_l1']:.4g}" if "action_l1" in m else "-",
                     f"{m['chunk_translation_error']:.4g}" if "chunk_translation_error" in m else "-",
                     f"{100 * m['token_accuracy']:.1f}%" if "token_accuracy" in m else "-",
                     f"{100 * m['exact_match']:.0f}%" if "exact_match" in m and math.isfinite(m["exact_match"])
                     else "-", offline_lib.format_reliance(m), offline_lib.format_instruction_reliance(m)])
    widths = [max(len(x[i]) for x in [head] + rows) for i in range(len(head))]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([line(head), line(["-" * w for w in widths])] + [line(r) for r in rows]) + "\n"


def _config_dict(saved: dict, data_dir: str | None):
    config = ml_collections.ConfigDict(saved)
    if data_dir:
        config.data.data_dir = data_dir
    return config


def _check_stats(ck_stats: dict | None, io, dataset: str, log) -> None:
    """Warns when the data directory's statistics differ from the ones saved in the checkpoint."""
    saved = (ck_stats or {}).get(dataset)
    if not isinstance(saved, dict) or "action" not in saved:
        return
    for key in ("mean", "q01", "q99"):
        a, b = saved["action"].get(key), io.stats["action"].get(key)
        if a is not None and b is not None and (len(a) != len(b) or np.max(np.abs(np.subtract(a, b))) > 1e-5):
            log(f"warning: {dataset}: action statistics in the data directory differ from the checkpoint's "
                f"({key}); un-normalizing with the data directory's")
            return


# ---------------------------------------------------------------------------------------------- settings
_NAMED_FIELDS = {"families": "--tasks", "splits": "--splits", "embodiments": "--embodiments"}  # field: flag


@dataclasses.dataclass(frozen=True)
class EvalSettings:
    """What :func:`evaluate_checkpoint` evaluates and how (the flags of tools/evaluate.py).

    ``families`` / ``embodiments`` / ``splits``: "all", "a,b" or sequences. ``execute_steps``: actions
    executed per chunk (None: the whole chunk). ``max_steps``: episode step limit (None: the embodiment's).
    ``num_samples``: flow samples averaged per chunk (vla_jax.eval.agents.ActionSampler). ``record``:
    episodes per cell kept for the filmstrip / GIF. ``offline_batches``: 0 skips the offline metrics, None
    uses the whole validation splits. ``grounding_scenes``: fresh scenes per (embodiment, split, family)
    for the first-frame grounding probe (vla_jax/eval/grounding_probe.py; 0 skips it). ``data_dir`` replaces
    the saved ``config.data.data_dir`` (runs trained from another working directory). ``out``: default
    ``<workdir>/eval/<step>[-ema]``. ``suite``: vla_jax/eval/suites.py (names are the suite's; "all" and the
    default splits: all of its). ``image_size``: rendered resolution, None: the suite's (tabletop 96, the
    data's; Meta-World the model's).
    """

    suite: str = "tabletop"
    step: int | None = None
    ema: bool = False
    episodes: int = 50
    families: str | Sequence[str] = "all"
    embodiments: str | Sequence[str] = "all"
    splits: str | Sequence[str] = "all"
    execute_steps: int | None = None
    max_steps: int | None = None
    num_samples: int = 1
    baselines: bool = False
    out: str | None = None
    seed: int = 0
    num_envs: int = 16
    image_size: int | None = None
    record: int = 1
    offline_batches: int | None = offline_lib.DEFAULT_MAX_BATCHES
    grounding_scenes: int = 20
    data_dir: str | None = None
    progress: bool = False

    @classmethod
    def from_config(cls, values: Mapping) -> EvalSettings:
        """Settings from config-style values (``config.eval``, an ablation sweep's ``eval``): 0 stands for an
        unset ``execute_steps`` / ``max_steps``; keys that name no field (``every``) are ignored, missing
        fields keep their defaults."""
        fields = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in values.items() if k in fields}
        for k in kwargs.keys() & {"episodes", "num_samples", "seed", "num_envs", "image_size", "record",
                                  "offline_batches", "grounding_scenes"}:
            kwargs[k] = int(kwargs[k])
        for k in kwargs.keys() & {"execute_steps", "max_steps"}:
            kwargs[k] = int(kwargs[k]) or None
        for k in kwargs.keys() & {"ema", "baselines"}:
            kwargs[k] = bool(kwargs[k])
        return cls(**kwargs)

    def names(self, field: str) -> tuple[str, ...]:
        """The names the ``families`` / ``splits`` / ``embodiments`` value stands for (EvalError naming
        the flag if one is unknown)."""
        flag = _NAMED_FIELDS[field]
        return parse_names(getattr(self, field), getattr(get_suite(self.suite), field), flag)

    @property
    def explicit_embodiments(self) -> bool:
        """Whether ``embodiments`` names embodiments (each must then have a dataset) rather than "all"."""
        return not (isinstance(self.embodiments, str) and self.embodiments.strip().lower() in ("", "all"))

    def validate(self) -> None:
        """Raises a one-line :class:`EvalError` naming the flag of the first bad value."""
        if self.suite not in SUITES:
            raise EvalError(f"--suite={self.suite}: unknown; choose from {', '.join(SUITES)}")
        for field in _NAMED_FIELDS:
            self.names(field)
        if self.episodes < 1:
            raise EvalError(f"--episodes={self.episodes} must be >= 1")
        if self.execute_steps is not None and self.execute_steps < 1:
            raise EvalError(f"--execute_steps={self.execute_steps} must be >= 1")
        if self.num_samples < 1:
            raise EvalError(f"--num_samples={self.num_samples} must be >= 1")
        if self.num_envs < 1:
            raise EvalError(f"--num_envs={self.num_envs} must be >= 1")

    def rendered_size(self, model_image_size: int) -> int:
        """The camera resolution to render: ``image_size``, else the suite's, else the model's."""
        return int(self.image_size or get_suite(self.suite).image_size or model_image_size)

    def rollout_kwargs(self, embodiments: Sequence[str], model_image_size: int = 96) -> dict:
        """Keyword arguments of vla_jax.eval.closed_loop.evaluate for ``embodiments`` (all but ``record``)."""
        return dict(suite=self.suite, embodiments=tuple(embodiments), families=self.names("families"),
                    episodes_per_cell=self.episodes, split=self.names("splits"), seed=self.seed,
                    execute_steps=self.execute_steps, max_steps=self.max_steps, num_envs=self.num_envs,
                    image_size=self.rendered_size(model_image_size), progress=self.progress)

    def report_dict(self, embodiments: Sequence[str]) -> dict:
        """The ``eval_settings`` entry of results.json (``embodiments``: those evaluated)."""
        return {"suite": self.suite, "episodes": self.episodes, "families": list(self.names("families")),
                "embodiments": list(embodiments), "splits": list(self.names("splits")), "seed": self.seed,
                "execute_steps": self.execute_steps, "max_steps": self.max_steps, "num_samples": self.num_samples,
                "offline_batches": self.offline_batches, "baselines": self.baselines,
                "grounding_scenes": self.grounding_scenes}


def _embodiment_datasets(settings: EvalSettings, config) -> dict[str, str]:
    """{embodiment: its dataset} of the wanted embodiments the run's config has a simulator dataset for."""
    wanted = settings.names("embodiments")
    available = embodiment_datasets(config, settings.suite)
    specs = get_suite(settings.suite).dataset_specs
    missing = [e for e in wanted if e not in available]
    if missing and settings.explicit_embodiments:
        raise EvalError(f"--embodiments={','.join(wanted)}: the run's config.data.datasets has no dataset for "
                        f"{', '.join(missing)} (needs the spec {specs[missing[0]]})")
    chosen = {e: available[e] for e in wanted if e in available}
    if not chosen:
        raise EvalError(f"the run's config.data.datasets has no dataset of suite {settings.suite} "
                        f"(spec {', '.join(specs.values())}); nothing to evaluate closed-loop")
    return chosen


def _baselines(config, ck_stats: dict | None, ios: Mapping, datasets: Mapping[str, str], seed: int) -> tuple:
    """The scripted expert (ceiling), uniform random actions and the mean action of each embodiment's
    dataset (the checkpoint's statistics, the data directory's where it has none)."""
    horizon = int(config.model.action_horizon)
    means = {}
    for e, name in datasets.items():
        stats = (ck_stats or {}).get(name)
        means[e] = stats if isinstance(stats, dict) and "action" in stats else ios[e].stats
    return (ExpertPolicy(), RandomPolicy(seed=seed, horizon=horizon),
            MeanActionPolicy.from_stats(means, horizon=horizon, name="mean"))


def _markdown_head(ck, settings: EvalSettings, table: str) -> str:
    return (f"# Evaluation of `{ck.path}` ({'EMA' if settings.ema else 'raw'} parameters)\n\n"
            f"Closed loop: {settings.episodes} episodes per cell, seed {settings.seed}; success rate "
            f"[95% Wilson interval].\n\n```\n{table}```\n\n")


def _markdown_tail(grounding: dict, offline: dict) -> str:
    tail = ""
    if grounding:
        tail += ("\n## First-frame grounding (the decoded answer to the instruction, before the arm moves)\n\n"
                 + format_grounding(grounding))
    if offline:
        tail += "\n## Offline metrics (validation splits)\n\n" + offline_lib.format_table(offline)
        for name, m in offline.items():
            for s in m.get("samples", []):
                tail += f"\n- {name}: `{s['prompt']}` -> `{s['prediction']}` (reference `{s['reference']}`)"
        tail += "\n"
    return tail


# ---------------------------------------------------------------------------------------------- checkpoint
def evaluate_checkpoint(workdir: str, settings: EvalSettings = EvalSettings(), *,
                        log: Callable[[str], None] = print) -> dict:
    """Evaluates a checkpoint of ``workdir`` as ``settings`` say and writes the report; returns the
    results.json payload (``policies``, ``checkpoint``, ``eval_settings``, ``offline``, ``grounding``)
    with ``paths`` ({what: file}) added."""
    s = settings
    s.validate()
    t0 = time.perf_counter()
    ck = load_params(workdir, s.step, s.ema)  # CheckpointError (one line) for missing checkpoints / steps / EMA
    config = _config_dict(ck.config, s.data_dir)
    if config.data.get("kind", "mixture") == "synthetic":
        raise EvalError(f"{workdir} was trained on synthetic data (config.data.kind='synthetic'): no simulator "
                        "embodiment, statistics or tokenizer to evaluate it with")
    try:
        model = VLA(make_config(config.model))
    except ValueError as e:
        raise EvalError(f"checkpoint {ck.path}: {e}") from None
    datasets = _embodiment_datasets(s, config)
    families, splits = s.names("families"), s.names("splits")
    out = s.out or os.path.join(workdir, "eval", f"{ck.step}-ema" if s.ema else str(ck.step))
    log(f"[eval] {ck.path} ({'EMA' if s.ema else 'raw'} params, preset {config.get('preset', '?')}, "
        f"head {config.model.action_head}): {s.episodes} episodes x {len(datasets)} embodiments x "
        f"{len(families)} tasks x {len(splits)} splits -> {out}")
    kwargs = s.rollout_kwargs(datasets, int(config.model.image_size))
    suite = get_suite(s.suite)
    try:
        ios = {e: make_policy_io(config, name) for e, name in datasets.items()}  # as make_model_policy
        for e, name in datasets.items():
            _check_stats(ck.norm_stats, ios[e], name, log)
        policy = ModelPolicy.from_policy_io(ActionSampler(model, ck.params, s.seed, s.num_samples), ios, name="model")
        results = {"model": evaluate(policy, record=s.record, **kwargs)}
        log(f"[eval] model: {results['model'].timing['wall_s']:.1f}s")
        if s.baselines:
            for p in _baselines(config, ck.norm_stats, ios, datasets, s.seed):
                results[p.name] = evaluate(p, record=0, **kwargs)
                log(f"[eval] {p.name}: {results[p.name].timing['wall_s']:.1f}s")
        grounding = {}
        if s.grounding_scenes > 0 and suite.grounding:
            t1 = time.perf_counter()
            grounding = {e: {split: first_frame_grounding(model, ck.params, ios[e], e, scenes=s.grounding_scenes,
                                                          families=families, split=split, seed=s.seed,
                                                          image_size=kwargs["image_size"])
                             for split in splits} for e in datasets}
            log(f"[eval] first-frame grounding: {time.perf_counter() - t1:.1f}s")
        offline = {}
        if s.offline_batches is None or s.offline_batches > 0:
            t1 = time.perf_counter()
            offline = offline_lib.offline_metrics(config, model, ck.params, max_batches=s.offline_batches,
                                                  seed=s.seed)
            log(f"[eval] offline metrics: {time.perf_counter() - t1:.1f}s")
    except DataError as e:
        raise EvalError(str(e)) from None

    extra = {
        "checkpoint": {"workdir": os.path.abspath(workdir), "path": ck.path, "step": ck.step, "ema": s.ema,
                       "preset": config.get("preset"), "action_head": str(config.model.action_head),
                       "mixture": {k: float(v) for k, v in config.data.mixture.items()}},
        "eval_settings": s.report_dict(datasets),
        "offline": offline,
        "grounding": grounding,
    }
    table = compact_table(results)
    if suite.groups:
        table += "\nby difficulty group, success % [95% Wilson interval]:\n" + group_table(results, suite.groups)
    paths = write_report(results, out, title=f"{os.path.basename(os.path.abspath(workdir))} step {ck.step}"
                         f"{' (EMA)' if s.ema else ''}: closed-loop success", extra=extra,
                         markdown_head=_markdown_head(ck, s, table), markdown_tail=_markdown_tail(grounding, offline))
    log("\n" + table + ("\n" + compact_offline_table(offline) if offline else "")
        + ("\nfirst-frame grounding:\n" + format_grounding(grounding) if grounding else ""))
    log(f"[eval] wrote {out} in {time.perf_counter() - t0:.1f}s")
    return {**results_payload(results, extra), "paths": paths}


# ---------------------------------------------------------------------------------------------- built-in policies
BUILTIN_POLICIES = {"expert": lambda seed: ExpertPolicy(), "random": lambda seed: RandomPolicy(seed=seed)}
_BUILTIN_IMAGE_SIZE = 64  # frames recorded for built-in policies where the suite renders at the model's size


def evaluate_builtin(names: Sequence[str], settings: EvalSettings, *, log: Callable[[str], None] = print) -> dict:
    """Evaluates built-in policies (``expert``: the scripted expert, the ceiling; ``random``: uniform random
    actions) on the suite without a checkpoint and writes the report into ``settings.out``; returns the
    results.json payload with ``paths``."""
    s = settings
    s.validate()
    unknown = [n for n in names if n not in BUILTIN_POLICIES]
    if unknown or not names:
        raise EvalError(f"--policy={','.join(names)}: choose from {', '.join(BUILTIN_POLICIES)}")
    if not s.out:
        raise EvalError("--policy needs --out (the report directory)")
    suite = get_suite(s.suite)
    embodiments = s.names("embodiments")
    kwargs = s.rollout_kwargs(embodiments, _BUILTIN_IMAGE_SIZE)
    results = {}
    for name in names:
        results[name] = evaluate(BUILTIN_POLICIES[name](s.seed), record=s.record, **kwargs)
        log(f"[eval] {name}: {results[name].timing['wall_s']:.1f}s")
    table = compact_table(results)
    if suite.groups:
        table += "\nby difficulty group, success % [95% Wilson interval]:\n" + group_table(results, suite.groups)
    head = (f"# Built-in policies on suite {s.suite}\n\nClosed loop: {s.episodes} episodes per cell, seed {s.seed}; "
            f"success rate [95% Wilson interval].\n\n```\n{table}```\n\n")
    extra = {"eval_settings": s.report_dict(embodiments)}
    paths = write_report(results, s.out, title=f"{s.suite}: closed-loop success", extra=extra, markdown_head=head)
    log("\n" + table)
    log(f"[eval] wrote {s.out}")
    return {**results_payload(results, extra), "paths": paths}


# ---------------------------------------------------------------------------------------------- training hook
class PeriodicEvaluator:
    """The trainer's ``config.eval`` hook: ``scalars = hook(state, step)`` every ``hook.every`` steps.

    Every process must call it (multi-process runs gather the parameters to process 0 first); only
    the process built with ``enabled=True`` (process 0) evaluates, the others get ``{}``.
    """

    def __init__(self, config, model, *, enabled: bool = True, log=print):
        e = config.eval
        self.every = int(e.every)
        self.enabled, self.log = enabled, log
        suite_name = e.get("suite", "tabletop")
        if suite_name not in SUITES:
            raise ConfigError(f"config.eval.suite={suite_name!r}: unknown; choose from {', '.join(SUITES)}")
        suite = get_suite(suite_name)
        try:
            parse_names(e.families, suite.families, "config.eval.families")
            parse_names(e.splits, suite.splits, "config.eval.splits")
            wanted = parse_names(e.embodiments, suite.embodiments, "config.eval.embodiments")
        except EvalError as err:
            raise ConfigError(str(err)) from None
        if self.every < 0 or int(e.episodes) < 0 or int(e.offline_batches) < 0:
            raise ConfigError("config.eval.every, config.eval.episodes and config.eval.offline_batches must be >= 0")
        self.settings = EvalSettings.from_config(e)
        if self.settings.num_samples < 1:
            raise ConfigError(f"config.eval.num_samples={self.settings.num_samples} must be >= 1 "
                              "(flow samples averaged per chunk)")
        self.policy, self.offline = None, None
        if not enabled:
            return
        s = self.settings
        synthetic = config.data.get("kind", "mixture") == "synthetic"
        available = {} if synthetic else embodiment_datasets(config, s.suite)
        self.embodiments = tuple(x for x in wanted if x in available)
        if s.episodes and self.embodiments:
            self.policy = make_model_policy(config, model, None, datasets={x: available[x] for x in self.embodiments},
                                            seed=s.seed, num_samples=s.num_samples, name="model")
        elif s.episodes:
            log("eval: no simulator dataset in config.data.datasets; closed-loop evaluation is off")
        if s.offline_batches and not synthetic:
            self.offline = offline_lib.OfflineEvaluator(config, model, max_batches=s.offline_batches, seed=s.seed)

    def __call__(self, state, step: int) -> dict[str, float]:
        params = state.ema_params if self.settings.ema and state.ema_params is not None else state.params
        if jax.process_count() > 1:  # collective: every process takes part, process 0 evaluates
            params = multihost_utils.process_allgather(params, tiled=True)
        if not self.enabled:
            return {}
        t0 = time.perf_counter()
        scalars = {}
        if self.policy is not None:
            self.policy.predict.params = params
            results = evaluate(self.policy, **self.settings.rollout_kwargs(self.embodiments))
            self.policy.predict.params = None  # never hold on to (donated) training buffers
            scalars.update(closed_loop_scalars(results))
        if self.offline is not None:
            scalars.update(offline_lib.flatten(self.offline(params), prefix="eval"))
        scalars["eval/time_s"] = time.perf_counter() - t0
        shown = {k: v for k, v in scalars.items() if k.count("/") == 1 or k.endswith(("action_mse", "exact_match"))}
        self.log(f"\neval at step {step}: " + ", ".join(f"{k[5:]}={v:.4g}" for k, v in shown.items()))
        return scalars
