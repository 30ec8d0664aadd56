"""A parsed request -> one model example, and normalized action chunks -> robot units, for one served robot.

The same per-example transform as training and closed-loop evaluation (vla_jax/data/transforms.py with the
run's ``config.data.eval_ops``, tokenizer and prompt format), with the statistics that travel with the model
(checkpoint or export folder) for the robot config's dataset. Imports neither JAX nor grain.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from vla_jax.batch import OBSERVATION_KEYS
from vla_jax.data.errors import DataError
from vla_jax.data.norm_stats import Normalizer
from vla_jax.data.tokenizer import Tokenizer
from vla_jax.data.transforms import Dims, OpContext, RobotSourceInfo, SampleTransform, build_ops, finalize_batch
from vla_jax.serve.observation import Observation
from vla_jax.serve.robots import RobotConfig, RobotConfigError


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """What serving needs to know about a loaded model besides its weights."""

    source: str  # export folder or checkpoint path
    dims: Dims
    action_head: str  # "flow" | "discrete"
    preset: str | None
    step: int | None
    norm_stats: dict  # {dataset: stats entry with "action", "state" and optionally methods / masks}
    tokenizer: str | None  # SentencePiece model path
    eval_ops: tuple[str, ...] = ()
    prompt_format: str = "plain"


def _normalizer(entry: dict, which: str, default: str, size: int, robot: RobotConfig) -> Normalizer:
    block = entry[which]
    if len(block["mean"]) != size:
        raise RobotConfigError(f"robot {robot.name!r}: dataset {robot.dataset!r} has {len(block['mean'])}-D {which} "
                               f"statistics, the robot's {which} has {size} dims")
    mask = entry.get(f"{which}_norm_mask")
    return Normalizer(block, entry.get(f"{which}_normalization", default), mask)


class ModelIO:
    """Request -> example (vla_jax/batch.py observation keys, no batch axis) and actions back to robot units."""

    def __init__(self, info: ModelInfo, robot: RobotConfig):
        entry = info.norm_stats.get(robot.dataset)
        if not isinstance(entry, dict) or "action" not in entry or "state" not in entry:
            known = sorted(k for k, v in info.norm_stats.items() if isinstance(v, dict) and "action" in v)
            raise RobotConfigError(f"robot {robot.name!r}: {info.source} has no normalization statistics for dataset "
                                   f"{robot.dataset!r} (has: {', '.join(known) or 'none'})")
        if robot.state_dim > info.dims.max_state_dim:
            raise RobotConfigError(f"robot {robot.name!r}: state has {robot.state_dim} dims, the model at most "
                                   f"{info.dims.max_state_dim}")
        if info.tokenizer is None:
            raise RobotConfigError(f"{info.source} has no tokenizer.model")
        self.action_dim = len(entry["action"]["mean"])
        if self.action_dim > info.dims.max_action_dim:
            raise RobotConfigError(f"dataset {robot.dataset!r} has {self.action_dim}-D actions, the model at most "
                                   f"{info.dims.max_action_dim}")
        self.action_norm = _normalizer(entry, "action", "bounds_q99", self.action_dim, robot)
        state_norm = _normalizer(entry, "state", "normal", robot.state_dim, robot)
        source = RobotSourceInfo(self.action_norm, state_norm, self.action_dim, robot.state_dim)
        try:
            ops = build_ops(info.eval_ops, OpContext(info.dims.image_size, info.dims.num_cameras))
            self.transform = SampleTransform(info.dims, Tokenizer(info.tokenizer), [source], ops, info.prompt_format)
        except DataError as e:
            raise RobotConfigError(str(e)) from None

    def example(self, obs: Observation) -> dict[str, np.ndarray]:
        """images float32 [C, R, R, 3] in [-1, 1], image_mask [C], tokens / token_mask [L], state / state_mask
        [S], action_dim_mask [A]: exactly the evaluation preprocessing of one observation."""
        raw = {"source": 0, "images": obs.images, "state": obs.state, "instruction": obs.prompt}
        example = self.transform(raw, np.random.default_rng(0))
        batch = finalize_batch({k: example[k][None] for k in OBSERVATION_KEYS})
        return {k: v[0] for k, v in batch.items()}

    def actions(self, normalized: np.ndarray) -> np.ndarray:
        """Normalized chunks [..., H, A] -> robot units [..., H, action_dim] float32."""
        return self.action_norm.inverse(np.asarray(normalized, np.float32)[..., : self.action_dim])
