"""Closed-loop evaluation in the tabletop simulator: batched rollouts, Wilson intervals, reports.

    from vla_jax.eval import ExpertPolicy, RandomPolicy, evaluate, write_report
    results = evaluate(ExpertPolicy(), episodes_per_cell=20, split=("train", "heldout_combo"))
    print(results.summary_table())
    write_report([results, evaluate(RandomPolicy())], "runs/eval")
"""

from vla_jax.eval.agents import (
    ExpertPolicy,
    MeanActionPolicy,
    ModelPolicy,
    Policy,
    RandomPolicy,
    make_model_policy,
    ActionSampler,
)
from vla_jax.eval.report import (
    load_results_json,
    plot_summary,
    write_filmstrip,
    write_gif,
    write_report,
    write_results_json,
)
from vla_jax.eval.closed_loop import EpisodeResult, Results, Rollout, episode_seed, evaluate
from vla_jax.eval.success_stats import CellStats, aggregate, summarize, wilson_interval

__all__ = [
    "CellStats",
    "EpisodeResult",
    "ExpertPolicy",
    "MeanActionPolicy",
    "ModelPolicy",
    "Policy",
    "RandomPolicy",
    "Results",
    "Rollout",
    "aggregate",
    "episode_seed",
    "evaluate",
    "load_results_json",
    "make_model_policy",
    "ActionSampler",
    "plot_summary",
    "summarize",
    "wilson_interval",
    "write_filmstrip",
    "write_gif",
    "write_report",
    "write_results_json",
]
