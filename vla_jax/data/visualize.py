"""Human checks of the pipeline: the effective mixture as a table and a PNG grid of decoded samples."""

from __future__ import annotations

import numpy as np

from vla_jax.data import mixture
from vla_jax.data.settings import dropped_line, read_settings


def mixture_table(config, sizes: bool = True) -> str:
    """The effective mixture as a table: weight, weight share (weights normalized), records, size
    (transitions / examples) and the sampling share, which is the weight share scaled by the sizes and
    renormalized when ``balance_by_size`` is on (Octo's and OpenVLA's ``balance_weights``). ``sizes=False``
    reads no data (no stats): records, size and share stay empty."""
    settings = read_settings(config)
    if sizes:
        rows = mixture.describe_mixture(config)
    else:
        total = sum(w for w in settings.mixture.values() if w > 0)
        rows = [{"name": n, "kind": settings.datasets[n].kind, "weight": w, "weight_share": max(w, 0.0) / total,
                 "dir": settings.datasets[n].dir} for n, w in settings.mixture.items()]
    width = max([len("dataset")] + [len(r["name"]) for r in rows])
    lines = [f"{'dataset':<{width}} {'kind':<6} {'weight':>8} {'weight%':>8} {'records':>8} {'size':>9} "
             f"{'share':>7}  dir"]
    for r in rows:
        sized = (f"{r['records']:>8} {r['size']:>9} {100 * r['share']:>6.2f}%" if sizes
                 else f"{'-':>8} {'-':>9} {'-':>7}")
        lines.append(f"{r['name']:<{width}} {r['kind']:<6} {r['weight']:>8.4g} {100 * r['weight_share']:>7.2f}% "
                     f"{sized}  {r['dir']}")
    lines.append("weight% = weight / sum of weights; size = transitions (robot) or examples (web); share = "
                 + ("weight x size, renormalized (balance_by_size, as Octo's and OpenVLA's balance_weights)"
                    if settings.balance_by_size else "weight% (balance_by_size off)")
                 + ("" if sizes else "; sizes not read"))
    if settings.dropped:
        lines.append(dropped_line(settings))
    return "\n".join(lines)


def take_examples(config, count: int) -> list[dict]:
    """The first ``count`` training examples (with augmentation), in-process."""
    config = config.copy_and_resolve_references()
    config.data.num_workers = 0
    it = mixture.make_train_iterator(config, process_index=0, process_count=1)
    examples = []
    try:
        while len(examples) < count:
            batch = next(it)
            for i in range(len(batch["source"])):
                examples.append({k: v[i] for k, v in batch.items()})
    finally:
        it.close()
    return examples[:count]


def plot_samples(config, out_png: str, count: int = 6) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = read_settings(config)
    tokenizer = mixture.load_tokenizer(settings)
    names = list(settings.mixture)
    examples = take_examples(config, count)
    cams = settings.dims.num_cameras
    fig, axes = plt.subplots(count, cams + 1, figsize=(2.3 * (cams + 1) + 1.5, 2.4 * count), squeeze=False)
    for row, ex in zip(axes, examples):
        for c in range(cams):
            ax = row[c]
            ax.axis("off")
            if ex["image_mask"][c]:
                ax.imshow(np.clip((ex["images"][c] + 1) / 2, 0, 1))
            else:
                ax.text(0.5, 0.5, "(no camera)", ha="center", va="center", fontsize=8, color="gray")
            ax.set_title(f"slot {c}", fontsize=7)
        tokens, mask, ar = ex["tokens"], ex["token_mask"], ex["token_ar"]
        prompt = tokenizer.decode(tokens[mask & ~ar].tolist())
        answer = tokenizer.decode(tokens[mask & ar].tolist())
        name = names[int(ex["source"])] if 0 <= int(ex["source"]) < len(names) else "?"
        ax = row[cams]
        if ex["has_actions"]:
            steps = int(ex["action_step_mask"].sum())
            dims = int(ex["action_dim_mask"].sum())
            if steps == 1:  # a one-step chunk: one bar per action dimension (a line needs two points)
                ax.bar(np.arange(dims), ex["actions"][0, :dims], color=[f"C{d % 10}" for d in range(dims)])
                ax.set_xlabel("action dim", fontsize=6)
            else:
                ax.plot(ex["actions"][:steps, :dims])
                ax.set_xlabel("step", fontsize=6)
            ax.set_ylim(-3.2, 3.2)
            ax.set_title(f"actions {steps}x{dims} (normalized)", fontsize=7)
            ax.tick_params(labelsize=6)
            text = f"[{name}] {prompt}"
        else:
            ax.axis("off")
            text = f"[{name}] Q: {prompt}\nA: {answer}"
        row[0].text(0, -0.18, text, transform=row[0].transAxes, fontsize=7, va="top", wrap=True)
    fig.tight_layout(h_pad=2.0)
    fig.savefig(out_png, dpi=90)
    plt.close(fig)
    return out_png
