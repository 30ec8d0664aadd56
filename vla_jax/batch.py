"""The one batch format that flows from the data pipeline into the model.

A batch is a flat ``dict[str, np.ndarray | jax.Array]``. Robot and web
vision-language examples share it, so one batch can mix both. Shapes use
B = batch, C = cameras (``model.num_cameras``), R = image resolution
(``model.image_size``), L = text tokens (``model.max_text_len``),
H = action horizon (``model.action_horizon``), A = max action dim
(``model.max_action_dim``), S = max state dim (``model.max_state_dim``).

==================  =========  ===========  ====================================================
key                 dtype      shape        meaning
==================  =========  ===========  ====================================================
images              float32    [B,C,R,R,3]  camera images scaled to [-1, 1]
image_mask          bool       [B,C]        camera present (missing cameras are masked out)
tokens              int32      [B,L]        prompt tokens, then answer tokens (web only), padded
token_mask          bool       [B,L]        token is real (not padding)
token_ar            bool       [B,L]        token is causal (answer tokens); prompt is bidirectional
token_loss          bool       [B,L]        next-token loss is taken on predicting this token
state               float32    [B,S]        normalized robot state, zero padded
state_mask          bool       [B,S]        state dimension is real
actions             float32    [B,H,A]      normalized action chunk, zero padded
action_dim_mask     bool       [B,A]        action dimension is real
action_step_mask    bool       [B,H]        chunk step is real (not past the episode end)
has_actions         bool       [B]          robot example (flow / discrete action loss applies)
source              int32      [B]          index of the data source, for per-source metrics
==================  =========  ===========  ====================================================

Observation-only inputs for sampling are the same dict without ``actions``,
``action_step_mask``, ``token_ar`` and ``token_loss``.
"""

from __future__ import annotations

import numpy as np

BATCH_KEYS: dict[str, tuple[str, tuple[str, ...]]] = {
    "images": ("float32", ("B", "C", "R", "R", "3")),
    "image_mask": ("bool", ("B", "C")),
    "tokens": ("int32", ("B", "L")),
    "token_mask": ("bool", ("B", "L")),
    "token_ar": ("bool", ("B", "L")),
    "token_loss": ("bool", ("B", "L")),
    "state": ("float32", ("B", "S")),
    "state_mask": ("bool", ("B", "S")),
    "actions": ("float32", ("B", "H", "A")),
    "action_dim_mask": ("bool", ("B", "A")),
    "action_step_mask": ("bool", ("B", "H")),
    "has_actions": ("bool", ("B",)),
    "source": ("int32", ("B",)),
}

OBSERVATION_KEYS = ("images", "image_mask", "tokens", "token_mask", "state", "state_mask", "action_dim_mask")


def dims_from_config(model_cfg, batch_size: int | None = None) -> dict[str, int | None]:
    """Symbolic dimension sizes for a model config (``None`` for B if not given)."""
    return {
        "B": batch_size,
        "C": model_cfg.num_cameras,
        "R": model_cfg.image_size,
        "L": model_cfg.max_text_len,
        "H": model_cfg.action_horizon,
        "A": model_cfg.max_action_dim,
        "S": model_cfg.max_state_dim,
        "3": 3,
    }


def check_batch(batch: dict, model_cfg, keys=tuple(BATCH_KEYS)) -> None:
    """Raises ValueError with one line naming the offending key if ``batch`` breaks the format."""
    dims = dims_from_config(model_cfg)
    for key in keys:
        if key not in batch:
            raise ValueError(f"batch is missing '{key}'; the batch format is documented in vla_jax/batch.py")
        dtype, names = BATCH_KEYS[key]
        shape = tuple(batch[key].shape)
        if len(shape) != len(names):
            raise ValueError(f"batch['{key}'] has shape {shape}, expected rank {len(names)} {list(names)}")
        if dims["B"] is None:
            dims["B"] = shape[0]
        for axis, (size, name) in enumerate(zip(shape, names)):
            if dims[name] is not None and size != dims[name]:
                field = _FIELD_OF_DIM.get(name, "batch size")
                raise ValueError(
                    f"batch['{key}'] has shape {shape} but axis {axis} ({name}) must be {dims[name]} "
                    f"(set by {field}); fix the data pipeline or the config field"
                )
        if np.dtype(batch[key].dtype) != np.dtype(dtype):
            raise ValueError(f"batch['{key}'] has dtype {batch[key].dtype}, expected {dtype}")


_FIELD_OF_DIM = {
    "C": "config.model.num_cameras",
    "R": "config.model.image_size",
    "L": "config.model.max_text_len",
    "H": "config.model.action_horizon",
    "A": "config.model.max_action_dim",
    "S": "config.model.max_state_dim",
}


def random_batch(model_cfg, batch_size: int, seed: int = 0, web_fraction: float = 0.25) -> dict[str, np.ndarray]:
    """A valid random batch (robot examples with varied action dims, plus web examples with answers).

    Used by tests and benchmarks where real data is not the point.
    """
    rng = np.random.default_rng(seed)
    d = dims_from_config(model_cfg, batch_size)
    b, c, r, l, h, a, s = (d[k] for k in "BCRLHAS")
    has_actions = rng.random(b) >= web_fraction
    has_actions[0] = True
    prompt_len = rng.integers(3, max(4, l // 2), b)
    answer_len = np.where(has_actions, 0, rng.integers(1, max(2, l // 4), b))
    pos = np.arange(l)[None]
    token_mask = pos < (prompt_len + answer_len)[:, None]
    answer = token_mask & (pos >= prompt_len[:, None])
    act_dims = rng.integers(max(1, a // 2), a + 1, b)
    steps = rng.integers(max(1, h // 2), h + 1, b)
    action_dim_mask = (np.arange(a)[None] < act_dims[:, None]) & has_actions[:, None]
    action_step_mask = (np.arange(h)[None] < steps[:, None]) & has_actions[:, None]
    image_mask = rng.random((b, c)) < 0.7
    image_mask[:, 0] = True
    return {
        "images": rng.uniform(-1, 1, (b, c, r, r, 3)).astype(np.float32),
        "image_mask": image_mask,
        "tokens": np.where(token_mask, rng.integers(1, 200, (b, l)), 0).astype(np.int32),
        "token_mask": token_mask,
        "token_ar": answer,
        "token_loss": answer,
        "state": rng.normal(size=(b, s)).astype(np.float32),
        "state_mask": np.arange(s)[None] < act_dims[:, None],
        "actions": np.where(action_dim_mask[:, None] & action_step_mask[:, :, None],
                            rng.uniform(-1, 1, (b, h, a)), 0).astype(np.float32),
        "action_dim_mask": action_dim_mask,
        "action_step_mask": action_step_mask,
        "has_actions": has_actions,
        "source": np.where(has_actions, 0, 1).astype(np.int32),
    }
