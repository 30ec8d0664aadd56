"""Success by difficulty group (Meta-World's Easy / Medium / Hard / Very Hard), beside published rows.

The average is the mean of the four group rates, as the SmolVLA and DP3 papers average them. Published
rows are other projects' models with their own data and compute budgets (quoted from the papers), not
runs of this code.
"""

from __future__ import annotations

from typing import Mapping

from vla_jax.eval.success_stats import CellStats, summarize
from vla_jax.sim.metaworld.tasks import GROUPS

GROUP_TITLES = {"easy": "Easy", "medium": "Medium", "hard": "Hard", "very_hard": "Very Hard"}

# (label, success % per group in GROUPS order, average %); "—" where a paper gives no average.
PUBLISHED: tuple[tuple[str, tuple[float, ...], float | None], ...] = (
    ("Diffusion Policy (SmolVLA paper Tab. 2: MT50, language, multi-task, 10 trials)", (23.1, 10.7, 1.9, 6.1), 10.5),
    ("TinyVLA (SmolVLA paper Tab. 2)", (77.6, 21.5, 11.4, 15.8), 31.6),
    ("SmolVLA-0.45B (SmolVLA paper Tab. 2)", (82.5, 41.8, 45.0, 60.0), 57.3),
    ("SmolVLA-2.25B (SmolVLA paper Tab. 2)", (87.1, 51.8, 70.0, 64.0), 68.2),
    ("DP3 (DP3 paper Tab. I: 10 demos, single-task, 84x84)", (90.9, 61.6, 31.7, 49.0), None),
    ("Diffusion Policy (DP3 paper Tab. I: 10 demos, single-task)", (83.6, 31.1, 9.0, 26.6), None),
)


def by_group(results, groups: Mapping[str, str]) -> dict[str, CellStats]:
    """{group: CellStats} over the episodes of ``results`` (a closed_loop.Results) whose family has a group."""
    out = {}
    for g in GROUPS:
        chosen = [e for e in results.episodes if groups.get(e.family) == g]
        if chosen:
            out[g] = summarize(chosen)
    return out


def group_average(stats: Mapping[str, CellStats]) -> float:
    """Mean of the group success rates."""
    return sum(c.rate for c in stats.values()) / max(len(stats), 1)


def group_table(results: Mapping[str, object], groups: Mapping[str, str], label: str = "this code, CPU run") -> str:
    """Plain-text table: per policy of ``results`` ({name: Results}) the success % [95% Wilson interval] per
    group and the group average, then the published rows (their models and budgets)."""
    head = ["policy"] + [GROUP_TITLES[g] for g in GROUPS] + ["average", "episodes"]
    rows = []
    for name, r in results.items():
        stats = by_group(r, groups)
        cells = [f"{100 * stats[g].rate:.1f} [{100 * stats[g].ci_low:.0f}, {100 * stats[g].ci_high:.0f}]"
                 if g in stats else "-" for g in GROUPS]
        rows.append([f"{name} ({label})"] + cells + [f"{100 * group_average(stats):.1f}",
                                                      str(sum(c.n for c in stats.values()))])
    rows.append(["published (their models, data and compute):"] + [""] * (len(head) - 1))
    for name, rates, average in PUBLISHED:
        rows.append([name] + [f"{v:.1f}" for v in rates] + [f"{average:.1f}" if average is not None else "-", ""])
    widths = [max(len(x[i]) for x in [head] + rows) for i in range(len(head))]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([line(head), line(["-" * w for w in widths])] + [line(r) for r in rows]) + "\n"
