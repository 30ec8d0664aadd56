"""Shared fixtures of the data tests (plugin-free: test modules import what they use).

Datasets are generated once per test session into a temp dir: small (a few episodes each) so the
whole data test suite stays well under a few minutes on 2 cores.
"""

from __future__ import annotations

import importlib.util
import os

import ml_collections
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
