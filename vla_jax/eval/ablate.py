"""Ablation sweeps: train every variant of a sweep config, evaluate each the same way, compare.

    python tools/ablate.py --config=configs/ablations/mixture.py --out=runs/ablate_mixture
    python tools/ablate.py --config=configs/ablations/mixture.py:steps=2000 --out=runs/abl --launch_only

A sweep config (``get_config(arg)``, e.g. configs/ablations/mixture.py) has ``base`` (a training config
spec), ``overrides`` (dotted overrides for all variants), ``variants`` (name -> dotted overrides),
``varied`` (the override key on the plots' x-axis) and ``eval`` (evaluation settings, identical for every
variant). For each variant, in order:

1. train ``python -m vla_jax.train --config=<base> --workdir=<out>/<variant> --config.<key>=<value> ...``
   in a subprocess (log: ``<out>/<variant>/train.log``) unless its final checkpoint exists; a half-trained
   variant resumes through the trainer's automatic resume;
2. evaluate the final checkpoint closed loop + offline (vla_jax/eval/run.py) into
   ``<out>/<variant>/eval/<step>/`` and write the variant's summary ``<out>/<variant>/ablation.json``.

A rerun skips variants whose summary exists for the same overrides and evaluation settings. Finally
``<out>/comparison.md``, ``comparison.csv``, ``success.png`` and ``val_loss.png`` compare the variants
(success rates with 95% Wilson intervals, overall, per split and, for suites with difficulty groups such
as Meta-World's, per group; per-dataset validation loss / action MSE / exact match with
standard errors). ``launch_only`` prints one training command per variant (for a cluster: run them,
then rerun the sweep without ``--launch_only`` to evaluate and compare).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import shlex
import subprocess
import sys
import time

import numpy as np

from vla_jax.config import ConfigError, load_config
from vla_jax.eval import offline as offline_lib
from vla_jax.eval.groups import GROUP_TITLES, by_group
from vla_jax.eval.report import load_results_json
from vla_jax.eval.run import EvalError, EvalSettings, evaluate_checkpoint
from vla_jax.eval.suites import get_suite
from vla_jax.train.checkpoint import available_steps

RESULT_FILE = "ablation.json"
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EVAL_DEFAULTS = dict(suite="tabletop", episodes=20, seed=0, families="all", embodiments="all",
                     splits="train,heldout_combo,heldout_paraphrase", execute_steps=0, max_steps=0,
                     num_samples=1, offline_batches=8, ema=False, num_envs=16, image_size=96, record=1, baselines=False)


class AblateError(ValueError):
    """A bad sweep config or a failed variant; the message is one line."""


# ---------------------------------------------------------------------------------------------- sweep config
def _plain(node) -> dict:
    return node.to_dict() if hasattr(node, "to_dict") else dict(node or {})


def resolve_spec(spec: str) -> str:
    """``path[:arg]`` with the path found relative to the cwd, else to the repository (then made absolute)."""
    path, sep, arg = spec.partition(":")
    if not os.path.isabs(path) and not os.path.isfile(path):  # kept relative when found from the cwd
        path = os.path.join(REPO, path)
    if not os.path.isfile(path):
        raise AblateError(f"config file {spec.partition(':')[0]!r} does not exist")
    return path + sep + arg


class Sweep:
    """A loaded sweep config: ``names``, ``overrides(name)``, ``train_config(name)``, ``command(...)``."""

    def __init__(self, spec: str):
        self.spec = resolve_spec(spec)
        try:
            cfg = load_config(self.spec)
        except ConfigError as e:
            raise AblateError(str(e)) from None
        for key in ("base", "variants"):
            if key not in cfg:
                raise AblateError(f"sweep config {spec} has no '{key}' field (see configs/ablations/mixture.py)")
        self.base = resolve_spec(str(cfg.base))
        self.common = _plain(cfg.get("overrides"))
        self.variants = {str(k): _plain(v) for k, v in _plain(cfg.variants).items()}
        if not self.variants:
            raise AblateError(f"sweep config {spec} defines no variants")
        for name in self.variants:
            if not name or "/" in name or name.startswith("."):
                raise AblateError(f"variant name {name!r} must be a plain directory name")
        self.varied = str(cfg.get("varied") or "")
        self.eval = {**EVAL_DEFAULTS, **_plain(cfg.get("eval"))}
        unknown = sorted(set(self.eval) - set(EVAL_DEFAULTS))
        if unknown:
            raise AblateError(f"sweep config eval.{unknown[0]}: unknown field; known: {', '.join(EVAL_DEFAULTS)}")
        try:  # a bad suite, split or count stops the sweep before any training, not after it
            EvalSettings.from_config(self.eval).validate()
        except EvalError as e:
            raise AblateError(f"sweep config {spec} eval: {e}") from None
        self._configs: dict = {}

    @property
    def names(self) -> list[str]:
        return list(self.variants)

    def overrides(self, name: str) -> dict:
        return {**self.common, **self.variants[name]}

    def train_config(self, name: str):
        """The variant's resolved training config (unknown keys / bad values: AblateError naming the variant)."""
        if name not in self._configs:
            try:
                self._configs[name] = load_config(self.base, self.overrides(name))
            except ConfigError as e:
                raise AblateError(f"variant {name}: {e}") from None
        return self._configs[name]

    def x_value(self, name: str):
        """The variant's value of the varied key (from its resolved config)."""
        if not self.varied:
            return None
        node = self.train_config(name)
        for part in self.varied.split("."):
            if part not in node:
                raise AblateError(f"varied key {self.varied!r} is not a config field (variant {name})")
            node = node[part]
        return node

    def on_axis(self, name: str) -> bool:
        """True if the variant differs from the common settings only in the varied key."""
        return bool(self.varied) and set(self.variants[name]) <= {self.varied}

    def command(self, name: str, out: str, python: str = sys.executable) -> list[str]:
        args = [python, "-m", "vla_jax.train", f"--config={self.base}", f"--workdir={os.path.join(out, name)}"]
        return args + [f"--config.{k}={_flag(v)}" for k, v in self.overrides(name).items()]


def _flag(v) -> str:
    if isinstance(v, (list, tuple)):
        return "(" + ", ".join(repr(x) for x in v) + ("," if len(v) == 1 else "") + ")"
    return str(v)


# ---------------------------------------------------------------------------------------------- running
def _train(sweep: Sweep, name: str, out: str, log) -> int:
    """Trains (or resumes) a variant; returns its final step."""
    workdir = os.path.join(out, name)
    steps = int(sweep.train_config(name).num_steps)
    if steps in available_steps(workdir):
        log(f"[ablate] {name}: trained ({steps} steps)")
        return steps
    os.makedirs(workdir, exist_ok=True)
    done = available_steps(workdir)
    log_path = os.path.join(workdir, "train.log")
    log(f"[ablate] {name}: training {'from step ' + str(done[-1]) if done else 'from scratch'} -> {steps} "
        f"(log: {log_path})")
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    t0 = time.perf_counter()
    with open(log_path, "a") as f:
        f.write(f"\n$ {shlex.join(sweep.command(name, out))}\n")
        f.flush()
        proc = subprocess.run(sweep.command(name, out), stdout=f, stderr=subprocess.STDOUT, env=env)
    if proc.returncode != 0 or steps not in available_steps(workdir):
        with open(log_path) as f:
            lines = [ln.strip() for ln in f.read().replace("\r", "\n").splitlines() if ln.strip()]
        errors = [ln for ln in lines if ln.startswith("error:")] or lines[-1:] or ["(no output)"]
        what = f"failed (exit {proc.returncode})" if proc.returncode else f"stopped before step {steps}"
        raise AblateError(f"variant {name}: training {what}: {errors[-1][:300]} (log: {log_path})")
    log(f"[ablate] {name}: trained in {time.perf_counter() - t0:.0f}s")
    return steps


def _cell(c) -> dict:
    return {"rate": c.rate, "ci95": [c.ci_low, c.ci_high], "n": c.n, "successes": c.successes}


def success_cells(results, suite: str) -> dict[str, dict]:
    """A policy's closed-loop results (closed_loop.Results) as {"all" | split | "embodiment/split" | difficulty
    group (suites that have them, e.g. "Easy"): {"rate", "ci95", "n", "successes"}}."""
    success = {"all": _cell(results.overall())}
    success.update({s: _cell(c) for s, c in results.by_split().items()})
    success.update({f"{e}/{s}": _cell(c) for (e, s), c in results.by_embodiment().items()})
    groups = get_suite(suite).groups
    if groups:
        success.update({GROUP_TITLES[g]: _cell(c) for g, c in by_group(results, groups).items()})
    return success


def _summary(sweep: Sweep, name: str, out: str, step: int, payload: dict) -> dict:
    results = load_results_json(payload["paths"]["json"])
    success = success_cells(results["model"], sweep.eval["suite"])
    baselines = {label: _cell(r.overall()) for label, r in results.items() if label != "model"}
    offline = {ds: {k: v for k, v in m.items() if k != "samples"} for ds, m in payload.get("offline", {}).items()}
    train_loss = None
    metrics = os.path.join(out, name, "metrics.jsonl")
    if os.path.isfile(metrics):
        with open(metrics) as f:
            for line in f:
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(row.get("loss"), (int, float)):
                    train_loss = row["loss"]
    return {"variant": name, "overrides": sweep.overrides(name), "varied": sweep.varied, "x": sweep.x_value(name),
            "on_axis": sweep.on_axis(name), "step": step, "eval_settings": sweep.eval,
            "action_head": payload["checkpoint"]["action_head"], "success": success, "baselines": baselines,
            "offline": offline, "train_loss": train_loss, "eval_dir": os.path.dirname(payload["paths"]["json"])}


def _evaluate(sweep: Sweep, name: str, out: str, step: int, log) -> dict:
    workdir = os.path.join(out, name)
    t0 = time.perf_counter()
    settings = dataclasses.replace(EvalSettings.from_config(sweep.eval), step=step)
    payload = evaluate_checkpoint(workdir, settings, log=lambda *a: None)
    summary = _summary(sweep, name, out, step, payload)
    path = os.path.join(workdir, RESULT_FILE)
    with open(path + ".tmp", "w") as f:
        json.dump(summary, f, indent=1)
    os.replace(path + ".tmp", path)
    s = summary["success"]["all"]
    log(f"[ablate] {name}: success {100 * s['rate']:.0f}% [{100 * s['ci95'][0]:.0f}, {100 * s['ci95'][1]:.0f}] "
        f"(n={s['n']}), evaluated in {time.perf_counter() - t0:.0f}s")
    return summary


def _finished(sweep: Sweep, name: str, out: str) -> dict | None:
    path = os.path.join(out, name, RESULT_FILE)
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            summary = json.load(f)
    except (OSError, json.JSONDecodeError):
        return None
    same = (json.loads(json.dumps(summary.get("overrides"))) == json.loads(json.dumps(sweep.overrides(name)))
            and json.loads(json.dumps(summary.get("eval_settings"))) == json.loads(json.dumps(sweep.eval)))
    return summary if same else None


def run_sweep(spec: str, out: str, *, launch_only: bool = False, variants=None, log=print) -> list[dict]:
    """Runs (or resumes) a sweep; returns the variants' summaries (``launch_only``: prints the commands)."""
    sweep = Sweep(spec)
    names = sweep.names
    if variants:
        wanted = [v.strip() for v in (variants.split(",") if isinstance(variants, str) else variants) if v.strip()]
        for v in wanted:
            if v not in sweep.variants:
                raise AblateError(f"--variants: unknown variant {v!r}; the sweep has {', '.join(names)}")
        names = wanted
    for name in names:
        sweep.train_config(name)  # every override is checked before anything runs
    if launch_only:
        for name in names:
            print(shlex.join(sweep.command(name, out, python="python")), flush=True)
        return []
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "sweep.json"), "w") as f:
        json.dump({"spec": sweep.spec, "base": sweep.base, "overrides": sweep.common, "variants": sweep.variants,
                   "varied": sweep.varied, "eval": sweep.eval}, f, indent=1)
    summaries = {}
    for i, name in enumerate(names):
        log(f"[ablate] variant {i + 1}/{len(names)}: {name} {json.dumps(sweep.variants[name])}")
        done = _finished(sweep, name, out)
        if done is not None:
            log(f"[ablate] {name}: done (skipped; {os.path.join(out, name, RESULT_FILE)})")
            summaries[name] = done
            continue
        step = _train(sweep, name, out, log)
        summaries[name] = _evaluate(sweep, name, out, step, log)
    for name in sweep.names:  # the comparison covers every finished variant (also those not run now)
        if name not in summaries and (done := _finished(sweep, name, out)) is not None:
            summaries[name] = done
    summaries = list(summaries.values())
    paths = write_comparison(summaries, out, sweep.varied)
    log(f"[ablate] wrote {', '.join(paths.values())}")
    print(open(paths["markdown"]).read(), flush=True)
    return summaries


# ---------------------------------------------------------------------------------------------- comparison
def _order(summaries: list[dict]) -> list[dict]:
    def key(s):
        x = s.get("x")
        num = float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else math.inf
        return (not s.get("on_axis"), num if s.get("on_axis") else 0.0, s["variant"])

    return sorted(summaries, key=key)


def _main_loss(m: dict) -> tuple[str | None, float | None, float | None]:
    k = offline_lib.head_loss_key(m)
    return (k[5:], m[k], m.get(k + "_se")) if k else (None, None, None)


def _pct(c: dict) -> str:
    return f"{100 * c['rate']:.0f}% [{100 * c['ci95'][0]:.0f}, {100 * c['ci95'][1]:.0f}]"


def write_comparison(summaries: list[dict], out: str, varied: str | None = None) -> dict[str, str]:
    """comparison.md, comparison.csv, success.png and val_loss.png in ``out``; returns {what: path}."""
    rows = _order(summaries)
    splits = []
    datasets = []
    for s in rows:
        for k in s["success"]:
            if k != "all" and "/" not in k and k not in splits:
                splits.append(k)
        for d in s["offline"]:
            if d not in datasets:
                datasets.append(d)
    varied = varied or (rows[0].get("varied") if rows else "") or ""
    xname = varied.rsplit(".", 1)[-1] if varied else "x"

    # ---- markdown
    lines = [f"# Ablation: {len(rows)} variants", ""]
    if varied:
        lines += [f"x-axis: `{varied}` (variants marked * change something else as well).", ""]
    n = rows[0]["success"]["all"]["n"] if rows else 0
    x_head, x_rule = (f" {xname} |", "---:|") if varied else ("", "")  # no varied key: no x column
    lines += [f"## Closed-loop success (95% Wilson interval; {n} episodes per variant)", "",
              "| variant |" + x_head + " head | steps | all | " + " | ".join(splits) + " | train loss |",
              "|---|" + x_rule + "---|---:|---|" + "---|" * len(splits) + "---:|"]
    for s in rows:
        star = "" if s.get("on_axis") or not varied else "*"
        x_cell = f" {s.get('x')} |" if varied else ""
        lines.append(f"| {s['variant']}{star} |{x_cell} {s.get('action_head')} | {s['step']} | "
                     f"{_pct(s['success']['all'])} | "
                     + " | ".join(_pct(s["success"][k]) if k in s["success"] else "-" for k in splits)
                     + (f" | {s['train_loss']:.4g} |" if s.get("train_loss") is not None else " | - |"))
    if any(s.get("baselines") for s in rows):
        base = next(s["baselines"] for s in rows if s.get("baselines"))
        lines += ["", "Baselines (first evaluated variant): " + ", ".join(f"{k} {_pct(v)}" for k, v in base.items())]
    lines += ["", "## Validation (offline, same examples for every variant; ± standard error)", "",
              "| variant | " + " | ".join(datasets) + " |", "|---|" + "---|" * len(datasets)]
    for s in rows:
        cells = []
        for d in datasets:
            m = s["offline"].get(d)
            if not m:
                cells.append("-")
                continue
            head, loss, se = _main_loss(m)
            text = f"{head} loss {loss:.4g} ± {se or 0:.2g}" if head else ""
            if "action_mse" in m:
                text += f"; MSE {m['action_mse']:.4g} ± {m.get('action_mse_se', 0):.2g}"
            if "token_accuracy" in m:
                text += f"; token acc {100 * m['token_accuracy']:.1f}%"
            if "exact_match" in m and isinstance(m["exact_match"], float) and math.isfinite(m["exact_match"]):
                text += f"; exact match {100 * m['exact_match']:.0f}%"
            cells.append(text or "-")
        lines.append(f"| {s['variant']} | " + " | ".join(cells) + " |")
    lines += ["", "MSE: action mean squared error in robot units over real chunk steps and dims "
              "(docs/evaluation.md). Plots: success.png, val_loss.png.", ""]
    md = os.path.join(out, "comparison.md")
    with open(md, "w") as f:
        f.write("\n".join(lines))

    # ---- csv
    metric_keys = []
    for s in rows:
        for d, m in s["offline"].items():
            for k, v in m.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool) and f"{d}/{k}" not in metric_keys:
                    metric_keys.append(f"{d}/{k}")
    header = ["variant", "varied", "x", "on_axis", "action_head", "step", "train_loss"]
    for k in ["all"] + splits:
        header += [f"success/{k}", f"success/{k}/ci_low", f"success/{k}/ci_high", f"success/{k}/n"]
    header += metric_keys
    path_csv = os.path.join(out, "comparison.csv")
    with open(path_csv, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        for s in rows:
            row = [s["variant"], varied, s.get("x"), int(bool(s.get("on_axis"))), s.get("action_head"), s["step"],
                   s.get("train_loss")]
            for k in ["all"] + splits:
                c = s["success"].get(k)
                row += [c["rate"], c["ci95"][0], c["ci95"][1], c["n"]] if c else ["", "", "", ""]
            for key in metric_keys:
                d, k = key.split("/", 1)
                row.append(s["offline"].get(d, {}).get(k, ""))
            w.writerow(row)
    paths = {"markdown": md, "csv": path_csv}
    if rows:
        paths.update(plot_comparison(rows, out, varied, splits, datasets))
    return paths


def _xs(rows: list[dict]):
    """x positions: numeric varied values; off-axis variants get a small offset so markers do not overlap."""
    numeric = [float(s["x"]) for s in rows if isinstance(s.get("x"), (int, float)) and not isinstance(s["x"], bool)]
    span = (max(numeric) - min(numeric)) if len(numeric) > 1 else 1.0
    xs, k = [], 0
    for i, s in enumerate(rows):
        x = s.get("x")
        if isinstance(x, (int, float)) and not isinstance(x, bool):
            if s.get("on_axis"):
                xs.append(float(x))
            else:
                k += 1
                xs.append(float(x) + 0.025 * span * k)
        else:
            xs.append(float(i))
    return np.asarray(xs)


def plot_comparison(rows: list[dict], out: str, varied: str, splits: list[str], datasets: list[str]) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = _xs(rows)
    axis = np.array([bool(s.get("on_axis")) for s in rows])
    named = not any(isinstance(s.get("x"), (int, float)) for s in rows)  # variants side by side by name
    xlabel = varied or "variant"
    colors = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b")
    markers = ("s", "D", "^", "v", "P", "X", "*")

    def decorate(ax):
        ax.set_xlabel(xlabel)
        if named:
            ax.set_xticks(xs, [s["variant"] for s in rows], rotation=30 if len(rows) > 3 else 0,
                          ha="right" if len(rows) > 3 else "center")
            ax.set_xlim(xs.min() - 0.5, xs.max() + 0.5)
        ax.grid(alpha=0.3)

    def annotate_off_axis(ax, ys):
        for j, (s, y) in enumerate(zip(rows, ys)):
            if not axis[j] and not named and np.isfinite(y):
                ax.annotate(s["variant"], (xs[j], y), textcoords="offset points", xytext=(4, 4), fontsize=7)

    # ---- success
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for c, key in enumerate(["all"] + splits):
        rate = np.array([s["success"][key]["rate"] if key in s["success"] else np.nan for s in rows])
        low = np.array([s["success"][key]["ci95"][0] if key in s["success"] else np.nan for s in rows])
        high = np.array([s["success"][key]["ci95"][1] if key in s["success"] else np.nan for s in rows])
        shift = (c - len(splits) / 2) * (0.06 if named else 0.004 * (np.ptp(xs) or 1.0))
        yerr = [rate - low, high - rate]
        color = colors[c % len(colors)]
        ax.errorbar(xs[axis] + shift, rate[axis], yerr=[e[axis] for e in yerr], color=color, marker="o",
                    lw=2.0 if key == "all" else 1.0, capsize=3, label=f"{key}")
        for j in np.flatnonzero(~axis):
            ax.errorbar([xs[j] + shift], [rate[j]], yerr=[[yerr[0][j]], [yerr[1][j]]], color=color,
                        marker=markers[j % len(markers)], ls="none", capsize=3, mfc="white")
        if key == "all":
            annotate_off_axis(ax, rate)
    ax.set_ylim(-0.02, 1.05)
    ax.set_ylabel("closed-loop success rate")
    ax.set_title("Success per variant (95% Wilson intervals)" if named else
                 "Success vs " + xlabel + " (95% Wilson intervals; hollow markers: other variants)", fontsize=9)
    ax.legend(fontsize=8, title="split / group", title_fontsize=8)
    decorate(ax)
    fig.tight_layout()
    success_png = os.path.join(out, "success.png")
    fig.savefig(success_png, dpi=110)
    plt.close(fig)

    # ---- validation loss and action MSE / exact match per dataset
    cols = max(len(datasets), 1)
    fig, axes = plt.subplots(2, cols, figsize=(4.2 * cols + 0.5, 7.0), squeeze=False)
    for c, d in enumerate(datasets):
        for r, what in enumerate(("loss", "second")):
            ax = axes[r, c]
            ys, es, label = [], [], ""
            for s in rows:
                m = s["offline"].get(d, {})
                if what == "loss":
                    head, y, e = _main_loss(m)
                    label = f"validation {head or ''} loss" if head and not label else label
                elif "action_mse" in m:
                    y, e, label = m["action_mse"], m.get("action_mse_se"), "action MSE (robot units)"
                elif "exact_match" in m:
                    y, e, label = m["exact_match"], m.get("exact_match_se"), "answer exact match"
                else:
                    y, e = None, None
                ys.append(np.nan if y is None else float(y))
                es.append(0.0 if e is None else float(e))
            ys, es = np.array(ys), np.array(es)
            ax.errorbar(xs[axis], ys[axis], yerr=es[axis], marker="o", capsize=3, color=colors[0])
            for j in np.flatnonzero(~axis):
                ax.errorbar([xs[j]], [ys[j]], yerr=[es[j]], marker=markers[j % len(markers)], ls="none", capsize=3,
                            color=colors[1], mfc="white")
            annotate_off_axis(ax, ys)
            ax.set_title(d if r == 0 else "", fontsize=9)
            ax.set_ylabel(label, fontsize=8)
            decorate(ax)
    fig.suptitle("Validation metrics vs " + xlabel + " (± standard error over examples)", fontsize=10)
    fig.tight_layout()
    loss_png = os.path.join(out, "val_loss.png")
    fig.savefig(loss_png, dpi=110)
    plt.close(fig)
    return {"success_png": success_png, "val_loss_png": loss_png}
