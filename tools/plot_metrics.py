"""Training curves from ``<workdir>/metrics.jsonl`` as one PNG.

    python tools/plot_metrics.py --workdir=runs/debug              # -> runs/debug/metrics.png
    python tools/plot_metrics.py --workdir=runs/debug --out=curves.png --smooth=20

Panels: total loss and per-head losses, per-data-source losses, learning rate, gradient /
update norms, and throughput (step time, MFU). Runs with periodic evaluation (``config.eval.every``)
get a third row: closed-loop success per embodiment, offline validation action MSE (normalized) per
dataset, and web exact match.
"""

from __future__ import annotations

import json
import os
import sys

from absl import app, flags

from vla_jax.train.metrics import PERF_FILE

flags.DEFINE_string("workdir", None, "Training workdir holding metrics.jsonl.", required=True)
flags.DEFINE_string("out", None, "PNG path (default: <workdir>/metrics.png).")
flags.DEFINE_integer("smooth", 1, "Moving-average window (in logged points) for loss curves.")
FLAGS = flags.FLAGS


def read_rows(path: str) -> list[dict]:
    rows = []
    with open(path) as f:
        for line in f:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                pass  # a line cut by a crash
    return rows


def series(rows: list[dict], key: str):
    xs, ys = [], []
    for r in rows:
        v = r.get(key)
        if isinstance(v, (int, float)):
            xs.append(r["step"])
            ys.append(float(v))
    return xs, ys


def smooth(ys: list[float], k: int) -> list[float]:
    if k <= 1 or len(ys) < k:
        return ys
    out, acc = [], 0.0
    for i, y in enumerate(ys):
        acc += y
        if i >= k:
            acc -= ys[i - k]
        out.append(acc / min(i + 1, k))
    return out


def mfu_title(workdir: str) -> str:
    """The MFU panel's title, naming the peak it is relative to (the run's perf.json)."""
    path = os.path.join(workdir, PERF_FILE)
    if not os.path.exists(path):
        return "MFU (%)"
    with open(path) as f:
        perf = json.load(f)
    return (f"MFU (%) of {perf['peak_flops_per_device'] / 1e9:,.0f} GFLOP/s per device x {perf['num_devices']}\n"
            f"peak: {perf['peak_source']}")


def plot(workdir: str, out: str | None = None, k: int = 1) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} does not exist; is --workdir a training workdir?")
    rows = read_rows(path)
    if not rows:
        raise ValueError(f"{path} has no rows yet")
    keys = sorted({k_ for r in rows for k_ in r})
    heads = [k_ for k_ in keys if k_.startswith("loss/") and k_.count("/") == 1]
    sources = [k_ for k_ in keys if k_.startswith("loss/") and k_.count("/") == 2]

    evals = [k_ for k_ in keys if k_.startswith("eval/")]
    fig, axes = plt.subplots(3 if evals else 2, 3, figsize=(16, 12.5 if evals else 8.5))
    ax = axes[0, 0]
    for key in ["loss"] + heads:
        xs, ys = series(rows, key)
        ax.plot(xs, smooth(ys, k), label=key, lw=1.5 if key == "loss" else 1)
    ax.set_title("loss")
    ax.set_yscale("log")
    ax.legend(fontsize=8)

    ax = axes[0, 1]
    for key in sources:
        xs, ys = series(rows, key)
        ax.plot(xs, smooth(ys, k), label=key[len("loss/"):], lw=1)
    ax.set_title("loss per data source")
    ax.set_yscale("log")
    if sources:  # below the axes, so no curve hides under it
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2, frameon=False)

    ax = axes[0, 2]
    ax.plot(*series(rows, "lr"))
    ax.set_title("learning rate")

    ax = axes[1, 0]
    for key in ("grad_norm", "update_norm"):
        ax.plot(*series(rows, key), label=key, lw=1)
    ax.set_yscale("log")
    ax.set_title("norms")
    ax.legend(fontsize=8)

    ax = axes[1, 1]
    ax.plot(*series(rows, "perf/step_time_s"), label="step time (s)")
    ax.set_title("step time (s)")

    ax = axes[1, 2]
    xs, ys = series(rows, "perf/mfu")
    ax.plot(xs, [100 * y for y in ys])
    ax.set_title(mfu_title(workdir), fontsize=9)

    if evals:
        panels = [
            ("closed-loop success (%)", [k_ for k_ in evals if k_.startswith("eval/success/") and k_.count("/") == 3], 100),
            ("val action MSE (normalized)", [k_ for k_ in evals if k_.endswith("/action_mse_normalized")], 1),
            ("val web exact match (%)", [k_ for k_ in evals if k_.endswith("/exact_match")], 100),
        ]
        for ax, (title, panel_keys, scale) in zip(axes[2], panels):
            for key in panel_keys:
                xs, ys = series(rows, key)
                ax.plot(xs, [scale * y for y in ys], marker="o", lw=1, label=key[len("eval/"):])
            ax.set_title(title)
            if panel_keys:
                ax.legend(fontsize=7)

    for a in axes.flat:
        a.set_xlabel("step")
        a.grid(alpha=0.3)
    fig.suptitle(workdir)
    fig.tight_layout()
    out = out or os.path.join(workdir, "metrics.png")
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def main(argv):
    del argv
    try:
        out = plot(FLAGS.workdir, FLAGS.out, FLAGS.smooth)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    print(out)


if __name__ == "__main__":
    app.run(main)
