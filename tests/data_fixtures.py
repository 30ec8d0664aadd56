"""Shared fixtures of the data tests (plugin-free: test modules import what they use).

Datasets are generated once per test session into a temp dir: small (a few episodes each) so the
whole data test suite stays well under a few minutes on 2 cores.
"""

from __future__ import annotations

import importlib.util
import os

import ml_collections
import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = dict(episodes_per_embodiment=8, web_examples=40, val_fraction=0.25)


def load_mixtures_module():
    spec = importlib.util.spec_from_file_location("vla_jax_configs_mixtures", os.path.join(ROOT, "configs", "mixtures.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_config(data_dir: str, mixture: str = "default", *, batch_size: int = 16, **data_overrides):
    """A training config with the fields the data pipeline reads (the debug model sizes)."""
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.batch_size = batch_size
    config.model = ml_collections.ConfigDict(dict(
        image_size=64, num_cameras=3, max_text_len=32, action_horizon=8, max_action_dim=14, max_state_dim=14,
        vocab_size=1024, action_head="flow"))
    config.data = load_mixtures_module().get_data_config(mixture, data_dir)
    config.data.num_workers = 0
    for key, value in data_overrides.items():
        config.data[key] = value
    return config


# Fixtures imported into several test modules are instantiated once per module by pytest even with
# session scope; this cache makes the data itself once per session.
_CACHE: dict[str, str] = {}


@pytest.fixture(scope="session")
def tabletop_dir(tmp_path_factory):
    """Tiny generated tabletop datasets, prepared, + tokenizer + stats (shared, treat as read-only)."""
    if "tabletop" not in _CACHE:
        from vla_jax.data import generate_datasets

        out = str(tmp_path_factory.mktemp("tabletop"))
        generate_datasets(out, num_workers=0, progress=False, log=lambda *a: None, **TINY)
        _CACHE["tabletop"] = out
    return _CACHE["tabletop"]


@pytest.fixture(scope="session")
def bridge_dir(tmp_path_factory, tabletop_dir):
    """A tiny dataset in the real bridge_dataset layout, prepared, plus a tokenizer and stats next to it."""
    if "bridge" not in _CACHE:
        import shutil

        from vla_jax.data import prepare_all, write_tiny_bridge_dataset

        out = str(tmp_path_factory.mktemp("bridge"))
        write_tiny_bridge_dataset(out)
        shutil.copy(os.path.join(tabletop_dir, "tokenizer.model"), os.path.join(out, "tokenizer.model"))
        prepare_all(make_config(out, "bridge"), num_workers=1, progress=False, log=lambda *a: None)
        _CACHE["bridge"] = out
    return _CACHE["bridge"]


FRACTAL = "fractal20220817_data"


def write_fractal_dataset(out_dir: str, num_episodes: int = 4, num_val_episodes: int = 2, steps: int = 6,
                          num_shards: int | None = 2, file_format: str = "tfrecord") -> str:
    """A tiny dataset in the real ``fractal20220817_data`` (RT-1) layout, TFRecord like the OXE release:
    dict actions (world_vector, rotation_delta, gripper_closedness_action, terminate_episode, base
    displacement), the instruction and its 512-D embedding under ``observation/``, 256x320 JPEG images.
    Episode e, step t: world_vector = t, rotation_delta = -t, gripper -1 before step 4 and 1 from it,
    image gray level 40 * e. Returns the dataset root ``out_dir/fractal20220817_data``."""
    import tensorflow_datasets as tfds

    from vla_jax.data import builders

    t = tfds.features

    def episodes(count, seed):
        def gen():
            rng = np.random.default_rng(seed)
            for e in range(count):
                records = []
                for step in range(steps):
                    records.append({
                        "observation": {
                            "image": builders.jpeg_bytes(np.full((256, 320, 3), 40 * e, np.uint8)),
                            "natural_language_instruction": "pick coke can",
                            "natural_language_embedding": rng.normal(size=512).astype(np.float32),
                            "base_pose_tool_reached": rng.normal(size=7).astype(np.float32),
                            "gripper_closed": np.array([step > 3], np.float32),
                            "height_to_bottom": np.array([0.2], np.float32),
                        },
                        "action": {
                            "world_vector": np.full(3, step, np.float32),
                            "rotation_delta": np.full(3, -step, np.float32),
                            "gripper_closedness_action": np.array([1.0 if step > 3 else -1.0], np.float32),
                            "terminate_episode": np.array([0, 1, 0] if step < steps - 1 else [1, 0, 0], np.int32),
                            "base_displacement_vector": np.zeros(2, np.float32),
                            "base_displacement_vertical_rotation": np.zeros(1, np.float32),
                        },
                        "is_first": step == 0, "is_last": step == steps - 1, "is_terminal": step == steps - 1,
                        "reward": np.float32(step == steps - 1), "discount": np.float32(1),
                    })
                yield e, {"steps": records}

        return gen

    vector = {"base_pose_tool_reached": 7, "gripper_closed": 1, "height_to_bottom": 1, "natural_language_embedding": 512}
    step = t.FeaturesDict({
        "observation": t.FeaturesDict({
            "image": t.Image(shape=(256, 320, 3), encoding_format="jpeg"),
            "natural_language_instruction": t.Text(),
            **{k: t.Tensor(shape=(n,), dtype=np.float32) for k, n in vector.items()},
        }),
        "action": t.FeaturesDict({
            **{k: t.Tensor(shape=(n,), dtype=np.float32) for k, n in (
                ("world_vector", 3), ("rotation_delta", 3), ("gripper_closedness_action", 1),
                ("base_displacement_vector", 2), ("base_displacement_vertical_rotation", 1))},
            "terminate_episode": t.Tensor(shape=(3,), dtype=np.int32),
        }),
        **{k: t.Scalar(dtype=np.bool_) for k in ("is_first", "is_last", "is_terminal")},
        "reward": t.Scalar(dtype=np.float32), "discount": t.Scalar(dtype=np.float32),
    })
    builders.write_dataset(out_dir, FRACTAL, t.FeaturesDict({"steps": t.Dataset(step)}),
                           {"train": episodes(num_episodes, 0), "val": episodes(num_val_episodes, 1)},
                           file_format=file_format, num_shards=num_shards)
    return os.path.join(out_dir, FRACTAL)
