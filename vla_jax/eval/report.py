"""Evaluation reports: results JSON, a success-rate summary plot, filmstrips / GIFs of rollouts.

``write_report(results, out_dir)`` writes everything for one policy or several side by side
(a Results, a list of them, or {label: Results}):

- ``results.json``: Results.to_dict() (one policy) or {"policies": {label: Results.to_dict()}}, and the
  caller's ``extra`` entries;
- ``summary.md``: the Markdown tables;
- ``summary.png``: success rate per (embodiment, family) and overall, one bar per policy, 95% Wilson
  error bars, one panel per split;
- ``filmstrip_<label>.png`` / ``rollouts_<label>.gif`` for policies evaluated with ``record > 0``.
"""

from __future__ import annotations

import json
import os
import re
import textwrap
from typing import Mapping, Sequence

import numpy as np

from vla_jax.eval.closed_loop import Results, Rollout
from vla_jax.sim import EMBODIMENTS, FAMILIES, SPLITS

_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")


def _labelled(results) -> dict[str, Results]:
    if isinstance(results, Results):
        return {results.policy: results}
    if isinstance(results, Mapping):
        return dict(results)
    out: dict[str, Results] = {}
    for r in results:
        label, i = r.policy, 2
        while label in out:
            label, i = f"{r.policy} ({i})", i + 1
        out[label] = r
    return out


def _slug(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", label).strip("_") or "policy"


# ----------------------------------------------------------------------------- JSON


def results_payload(results, extra: Mapping | None = None) -> dict:
    """One Results -> its to_dict(); several -> {"policies": {label: to_dict()}}; followed by the
    top-level entries of ``extra``."""
    if isinstance(results, Results):
        payload = results.to_dict()
    else:
        payload = {"policies": {label: r.to_dict() for label, r in _labelled(results).items()}}
    payload.update(extra or {})
    return payload


def write_results_json(results, path: str, extra: Mapping | None = None) -> str:
    """Writes :func:`results_payload` to ``path`` (atomically); returns ``path``."""
    payload = results_payload(results, extra)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(payload, f, indent=1)
    os.replace(tmp, path)
    return path


def load_results_json(path: str) -> Results | dict[str, Results]:
    """Inverse of :func:`write_results_json`."""
    with open(path) as f:
        payload = json.load(f)
    if "policies" in payload:
        return {label: Results.from_dict(d) for label, d in payload["policies"].items()}
    return Results.from_dict(payload)


# ----------------------------------------------------------------------------- summary plot


def _rank(seq, x):
    seq = list(seq)
    return (seq.index(x) if x in seq else len(seq), x)


def plot_summary(results, path: str, *, splits: Sequence[str] | None = None, title: str | None = None) -> str:
    """Grouped bar chart of success rates with 95% Wilson error bars; returns ``path``.

    Groups: every (embodiment, family) in the results and an "all" group per embodiment; one bar
    per policy; one panel per split (all splits present unless ``splits`` is given).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labelled = _labelled(results)
    episodes = [e for r in labelled.values() for e in r.episodes]
    if not episodes:
        raise ValueError("plot_summary: the results hold no episodes")
    present = sorted({e.split for e in episodes}, key=lambda s: _rank(SPLITS, s))
    splits = list(splits) if splits is not None else present
    embodiments = sorted({e.embodiment for e in episodes}, key=lambda s: _rank(EMBODIMENTS, s))
    families = sorted({e.family for e in episodes}, key=lambda s: _rank(FAMILIES, s))
    groups = [(emb, fam) for emb in embodiments for fam in families + ["all"]]
    num_policies = len(labelled)
    width = 0.8 / num_policies
    many = len(groups) > 16  # e.g. Meta-World's 50 tasks: vertical labels, narrower slots
    fig_w = max(7.0, (0.32 if many else 0.55) * len(groups) * max(1.0, num_policies / 2.5) + 2.0)
    panel_h = 3.6 + (1.4 if many else 0.0)
    fig, axes = plt.subplots(len(splits), 1, figsize=(fig_w, panel_h * len(splits) + 0.6), squeeze=False)
    for ax, split in zip(axes[:, 0], splits):
        x = np.arange(len(groups), dtype=float)
        for p, (label, r) in enumerate(labelled.items()):
            cells = {(e, f): c for (e, f, s), c in r.cells().items() if s == split}
            cells.update({(e, "all"): c for (e, s), c in r.by_embodiment().items() if s == split})
            rate = np.array([cells[g].rate if g in cells else np.nan for g in groups])
            low = np.array([cells[g].ci_low if g in cells else np.nan for g in groups])
            high = np.array([cells[g].ci_high if g in cells else np.nan for g in groups])
            xs = x - 0.4 + width * (p + 0.5)
            color = _COLORS[p % len(_COLORS)]
            ax.bar(xs, np.nan_to_num(rate), width * 0.92, color=color, label=label, zorder=2)
            ok = ~np.isnan(rate)
            ax.errorbar(xs[ok], rate[ok], yerr=[rate[ok] - low[ok], high[ok] - rate[ok]], fmt="none",
                        ecolor="black", elinewidth=1.0, capsize=2.5, zorder=3)
            if num_policies <= 4:
                for xi, ri, hi in zip(xs[ok], rate[ok], high[ok]):
                    ax.text(xi, hi + 0.015, f"{100 * ri:.0f}", ha="center", va="bottom", fontsize=7)
        n_cell = sorted({c.n for r in labelled.values() for (e, f, s), c in r.cells().items() if s == split})
        ax.set_xticks(x, [fam for _, fam in groups], fontsize=8 if many else 9, rotation=90 if many else 0)
        for i, emb in enumerate(embodiments):
            span = len(families) + 1
            center = i * span + (span - 1) / 2
            ax.text(center, -0.62 if many else -0.16, emb, transform=ax.get_xaxis_transform(), ha="center", va="top",
                    fontsize=10, fontweight="bold")
            if i:
                ax.axvline(i * span - 0.5, color="gray", lw=0.8, ls="--", zorder=1)
            ax.axvspan(i * span + len(families) - 0.5, i * span + len(families) + 0.5, color="0.93", zorder=0)
        ax.set_ylim(0, 1.12)
        ax.set_yticks(np.linspace(0, 1, 6), [f"{v:.0%}" for v in np.linspace(0, 1, 6)])
        ax.set_xlim(-0.6, len(groups) - 0.4)
        ax.grid(axis="y", alpha=0.3, zorder=0)
        ax.set_ylabel("success rate")
        n_text = "/".join(str(n) for n in n_cell)
        ax.set_title(f"split: {split}   (n = {n_text} episodes per cell; bars: 95% Wilson interval)", fontsize=10)
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=9, frameon=False)
    fig.suptitle(title or "Closed-loop success rate by task family and embodiment", fontsize=12)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------- rollouts


def pick_rollouts(rollouts: Sequence[Rollout], count: int) -> list[Rollout]:
    """Up to ``count`` rollouts, about half failures when there are any, covering cells in turn."""
    wins = [r for r in rollouts if r.episode.success]
    fails = [r for r in rollouts if not r.episode.success]

    def spread(items, k):
        seen, first, rest = set(), [], []
        for r in items:  # one per (embodiment, family) first
            key = (r.episode.embodiment, r.episode.family)
            (rest if key in seen else first).append(r)
            seen.add(key)
        return (first + rest)[:k]

    n_fail = min(len(fails), max(count // 2, count - len(wins)))
    chosen = spread(fails, n_fail) + spread(wins, count - n_fail)
    return sorted(chosen, key=lambda r: (_rank(EMBODIMENTS, r.episode.embodiment), _rank(FAMILIES, r.episode.family),
                                         not r.episode.success, r.episode.index))


def _outcome(r: Rollout) -> str:
    e = r.episode
    if e.success:
        return f"SUCCESS at step {e.success_step}"
    return f"FAILURE ({e.failure}) after {e.steps} steps"


def _frame(frames: dict, cameras: Sequence[str] | None) -> np.ndarray:
    """The chosen cameras of one step stacked vertically (missing cameras: gray); None: the first camera of the
    suite (tabletop ``image_0``, Meta-World ``corner2``)."""
    ref = next(iter(frames.values()))
    return np.concatenate([frames.get(c, np.full_like(ref, 128)) for c in cameras], axis=0) if cameras else ref


def write_filmstrip(rollouts, path: str, *, max_episodes: int = 6, num_frames: int = 8,
                    cameras: Sequence[str] | None = None, title: str | None = None) -> str:
    """PNG grid: one row per episode (``num_frames`` evenly spaced steps, first and last included),
    titled with embodiment, instruction and outcome (green success, red failure). ``rollouts``: a
    Results (its recorded rollouts) or a list of Rollout."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if isinstance(rollouts, Results):
        title = title or f"{rollouts.policy}: recorded rollouts"
        rollouts = rollouts.rollouts
    chosen = pick_rollouts(list(rollouts), max_episodes)
    if not chosen:
        raise ValueError("write_filmstrip: no recorded rollouts (evaluate with record >= 1)")
    gap = 4
    per_row = len(cameras) if cameras else 1
    fig, axes = plt.subplots(len(chosen), 1, figsize=(1.35 * num_frames + 0.4, 1.65 * len(chosen) * per_row + 0.5),
                             squeeze=False)
    for ax, r in zip(axes[:, 0], chosen):
        steps = np.unique(np.linspace(0, len(r.frames) - 1, min(num_frames, len(r.frames))).round().astype(int))
        tiles = [_frame(r.frames[t], cameras) for t in steps]
        h, w = tiles[0].shape[:2]
        strip = np.full((h, len(tiles) * (w + gap) - gap, 3), 255, np.uint8)
        for i, tile in enumerate(tiles):
            strip[:, i * (w + gap): i * (w + gap) + w] = tile
        ax.imshow(strip, interpolation="nearest")
        ax.set_xticks([i * (w + gap) + w / 2 for i in range(len(tiles))], [f"t={t}" for t in steps], fontsize=7)
        ax.set_yticks([])
        ax.tick_params(length=0, pad=1)
        for side in ax.spines.values():
            side.set_visible(False)
        e = r.episode
        color = "#1a7f1a" if e.success else "#c0392b"
        ax.set_title(f"[{e.embodiment} | {e.split}] \"{e.instruction}\"  —  {_outcome(r)}", fontsize=8.5,
                     color=color, loc="left", fontweight="bold")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_gif(rollouts, path: str, *, max_episodes: int = 4, cameras: Sequence[str] | None = None, scale: int = 2,
              fps: float | None = None) -> str:
    """Animated GIF (Pillow): the chosen episodes side by side, each with its instruction and, once
    ended, its outcome; shorter episodes hold their last frame. fps: default the slowest control
    rate among them."""
    from PIL import Image, ImageDraw, ImageFont

    if isinstance(rollouts, Results):
        rollouts = rollouts.rollouts
    chosen = pick_rollouts(list(rollouts), max_episodes)
    if not chosen:
        raise ValueError("write_gif: no recorded rollouts (evaluate with record >= 1)")
    fps = fps or min((EMBODIMENTS[r.episode.embodiment].control_hz for r in chosen
                    if r.episode.embodiment in EMBODIMENTS), default=10.0)
    try:
        font = ImageFont.load_default(11)
    except TypeError:  # Pillow < 10.1
        font = ImageFont.load_default()
    h, w = _frame(chosen[0].frames[0], cameras).shape[:2]
    h, w = h * scale, w * scale
    text_h, gap = 58, 6
    length = max(len(r.frames) for r in chosen)
    images = []
    for t in range(length):
        canvas = Image.new("RGB", (len(chosen) * (w + gap) - gap, h + text_h), "white")
        draw = ImageDraw.Draw(canvas)
        for i, r in enumerate(chosen):
            frame = _frame(r.frames[min(t, len(r.frames) - 1)], cameras)
            canvas.paste(Image.fromarray(frame).resize((w, h), Image.NEAREST), (i * (w + gap), 0))
            lines = textwrap.wrap(r.episode.instruction, width=max(12, w // 7))[:2]
            draw.multiline_text((i * (w + gap) + 2, h + 2), "\n".join(lines), fill="black", font=font, spacing=1)
            if t >= len(r.frames) - 1:
                ok = r.episode.success
                text = "SUCCESS" if ok else f"FAIL: {r.episode.failure}"
                draw.text((i * (w + gap) + 2, h + 40), text, fill=(20, 130, 20) if ok else (190, 40, 30), font=font)
            else:
                draw.text((i * (w + gap) + 2, h + 40), f"t={t}", fill=(90, 90, 90), font=font)
        images.append(canvas)
    images[0].save(path, save_all=True, append_images=images[1:] + [images[-1]] * int(fps),
                   duration=int(1000 / fps), loop=0)
    return path


# ----------------------------------------------------------------------------- everything


def write_report(results, out_dir: str, *, filmstrip: bool = True, gif: bool = True, title: str | None = None,
                 extra: Mapping | None = None, markdown_head: str = "", markdown_tail: str = "") -> dict[str, str]:
    """Writes results.json (with the top-level entries of ``extra``), summary.md (the per-policy tables
    between ``markdown_head`` and ``markdown_tail``), summary.png and, for policies with recorded rollouts,
    their filmstrip PNG and GIF into ``out_dir``; returns {what: path}."""
    os.makedirs(out_dir, exist_ok=True)
    labelled = _labelled(results)
    paths = {"json": write_results_json(results, os.path.join(out_dir, "results.json"), extra)}
    md = os.path.join(out_dir, "summary.md")
    with open(md, "w") as f:
        f.write(markdown_head + "\n".join(r.summary_table() for r in labelled.values()) + markdown_tail)
    paths["markdown"] = md
    paths["summary_png"] = plot_summary(labelled, os.path.join(out_dir, "summary.png"), title=title)
    for label, r in labelled.items():
        if not r.rollouts:
            continue
        if filmstrip:
            paths[f"filmstrip_{label}"] = write_filmstrip(r, os.path.join(out_dir, f"filmstrip_{_slug(label)}.png"))
        if gif:
            paths[f"gif_{label}"] = write_gif(r, os.path.join(out_dir, f"rollouts_{_slug(label)}.gif"))
    return paths
