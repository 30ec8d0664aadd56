"""Success-rate statistics: Wilson score intervals and aggregation of episode outcomes.

Episodes are anything with the attributes ``embodiment``, ``family``, ``split``, ``success``
(bool), ``steps`` (int) and ``failure`` (str or None), e.g. :class:`vla_jax.eval.closed_loop.EpisodeResult`.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable, Sequence

Z_95 = 1.959963984540054  # two-sided 95% standard normal quantile


def wilson_interval(successes: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval (low, high) for ``successes`` out of ``n`` Bernoulli trials.

    Unlike the normal approximation it stays inside [0, 1] and is not degenerate at 0/n or n/n
    (0/10 -> (0, 0.278), 10/10 -> (0.722, 1)). n = 0 gives the uninformative (0, 1).
    """
    if n < 0 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n, got {successes}/{n}")
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    z2 = z * z
    denom = 1.0 + z2 / n
    center = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1.0 - p) / n + z2 / (4 * n * n)) / denom
    # exact endpoints at the boundaries (avoid 1e-17 round-off in the JSON)
    low = 0.0 if successes == 0 else max(0.0, center - half)
    high = 1.0 if successes == n else min(1.0, center + half)
    return low, high


@dataclass
class CellStats:
    """Aggregate over a group of episodes. ``failures`` counts failed episodes by kind."""

    n: int
    successes: int
    rate: float
    ci_low: float
    ci_high: float
    mean_length: float  # mean episode length in env steps (all episodes)
    mean_success_length: float | None  # mean length of the successful ones (None if none)
    failures: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "n": self.n,
            "successes": self.successes,
            "success_rate": self.rate,
            "ci95": [self.ci_low, self.ci_high],
            "mean_length": self.mean_length,
            "mean_success_length": self.mean_success_length,
            "failures": dict(self.failures),
        }

    def format_rate(self) -> str:
        return f"{100 * self.rate:.0f}% [{100 * self.ci_low:.0f}, {100 * self.ci_high:.0f}]"


def summarize(episodes: Iterable) -> CellStats:
    """CellStats of a group of episodes."""
    episodes = list(episodes)
    n = len(episodes)
    wins = [e for e in episodes if e.success]
    low, high = wilson_interval(len(wins), n)
    failures = Counter(e.failure or "timeout" for e in episodes if not e.success)
    return CellStats(
        n=n,
        successes=len(wins),
        rate=len(wins) / n if n else 0.0,
        ci_low=low,
        ci_high=high,
        mean_length=sum(e.steps for e in episodes) / n if n else 0.0,
        mean_success_length=sum(e.steps for e in wins) / len(wins) if wins else None,
        failures=dict(sorted(failures.items())),
    )


def aggregate(episodes: Iterable, by: Sequence[str] = ("embodiment", "family", "split")) -> dict[tuple, CellStats]:
    """{key tuple (values of the ``by`` attributes, in first-seen order): CellStats}."""
    groups: dict[tuple, list] = {}
    for e in episodes:
        groups.setdefault(tuple(getattr(e, k) for k in by), []).append(e)
    return {key: summarize(group) for key, group in groups.items()}
