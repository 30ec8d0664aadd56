"""Glue for the trainer / evaluator: statistics for a config and the online policy input/output.

:func:`make_policy_io` gives closed-loop evaluation exactly the training preprocessing (eval ops,
the same normalization stats and tokenizer) and the inverse action normalization, so a policy is
always un-normalized with the statistics of the dataset (or norm group) it was trained with.
"""

from __future__ import annotations

import numpy as np

from vla_jax.batch import OBSERVATION_KEYS
from vla_jax.data import mixture, norm_stats as stats_lib, prepared
from vla_jax.data.errors import DataError
from vla_jax.data.settings import check_on_disk, dropped_line, read_settings
from vla_jax.data.specs import get_spec
from vla_jax.data.transforms import finalize_batch


def compute_all_stats(config, *, if_missing: bool = True, log=print) -> dict[str, str]:
    """Computes (or, with ``if_missing``, reuses) stats of every robot dataset in ``config.data.mixture``
    and of their norm-group members from their prepared copies (one line naming tools/prepare_data.py
    if one is missing or stale); returns {dataset: stats file}."""
    settings = read_settings(config)
    check_on_disk(settings)
    if settings.dropped:
        log(dropped_line(settings))
    names = []
    for name in settings.mixture:
        if settings.datasets[name].is_robot:
            names += [n for n in settings.norm_group_members(name) if n not in names]
    out = {}
    for name in names:
        ds = settings.datasets[name]
        spec = get_spec(ds.spec, name)
        if ds.prepared is not None:
            mixture.open_prepared_robot(settings, name)  # one line naming prepare_data.py if missing or stale
        out[name] = stats_lib.ensure_stats(ds.read_dir, name, spec, settings.stats_dir, if_missing=if_missing,
                                           log=log, kind=ds.kind)
    return out


def lookup(obs: dict, path: str):
    """Finds a step key such as ``observation/image_0`` in a raw observation: obs["observation"]["image_0"],
    obs["image_0"] or obs["images"]["image_0"] (the vla_jax.sim env layout)."""
    parts = path.split("/")
    if parts[0] == "observation" and "observation" not in obs:
        parts = parts[1:]
    candidates = [parts]
    if "images" in obs and len(parts) == 1:
        candidates.append(["images"] + parts)
    for candidate in candidates:
        node = obs
        for part in candidate:
            if not isinstance(node, dict) or part not in node:
                break
            node = node[part]
        else:
            return node
    raise DataError(f"observation has no '{path}' (keys: {sorted(obs)})")


class PolicyIO:
    """Online preprocessing for one robot dataset's embodiment, and action un-normalization."""

    def __init__(self, config, dataset_name: str):
        settings = read_settings(config)
        if dataset_name not in settings.datasets or not settings.datasets[dataset_name].is_robot:
            raise DataError(f"dataset '{dataset_name}' is not a robot dataset of config.data.datasets")
        ds = settings.datasets[dataset_name]
        self.spec = get_spec(ds.spec, dataset_name)
        _, self.stats = mixture.dataset_stats(settings, dataset_name)
        info = mixture.robot_source_info(self.spec, self.stats)
        self.action_norm, self.state_norm = info.action_norm, info.state_norm
        self.source = mixture.source_index(settings, dataset_name)
        self.transform = mixture.sample_transform(settings, {self.source: info}, mixture.load_tokenizer(settings),
                                                  settings.eval_ops)
        self.dims = settings.dims
        self.action_dim = self.spec.action_dim
        self.control_hz = self.spec.control_hz

    def observation(self, obs: dict, instruction: str) -> dict:
        """Raw observation ({camera: uint8 [H, W, 3], "state": [S]}, optionally nested under "observation")
        -> observation-only batch (leading batch axis of 1) with the keys of batch.OBSERVATION_KEYS. The
        state is built by the spec's state expressions from the observation's keys (one step)."""
        keys = self.spec.image_keys[: self.dims.num_cameras]
        raw = {
            "source": self.source,
            "images": [lookup(obs, k) if k is not None else None for k in keys],
            "state": self.spec.state_rows(lambda key: np.ravel(lookup(obs, key)), 1)[0],
            "instruction": instruction,
        }
        example = self.transform(raw, np.random.default_rng(0))
        return finalize_batch({k: example[k][None] for k in OBSERVATION_KEYS})

    def actions(self, actions: np.ndarray) -> np.ndarray:
        """Model actions [..., H, max_action_dim] (normalized, padded) -> raw actions [..., H, action_dim]."""
        return self.action_norm.inverse(np.asarray(actions, np.float32)[..., : self.action_dim])


def make_policy_io(config, dataset_name: str) -> PolicyIO:
    return PolicyIO(config, dataset_name)
