"""JAX process defaults set by entry points: the platform and the persistent compilation cache."""

import os

import pytest

from vla_jax import platform

_KEYS = ("JAX_COMPILATION_CACHE_DIR", "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", platform.CACHE_ENV)


@pytest.fixture
def clean_env(monkeypatch):
    for key in _KEYS:
        monkeypatch.delenv(key, raising=False)
    return monkeypatch


def test_cache_is_on_by_default_in_the_user_cache_dir(clean_env):
    platform.jax_defaults()
    assert os.environ["JAX_COMPILATION_CACHE_DIR"] == os.path.expanduser("~/.cache/vla_jax/jax")
    assert os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] == "1"


def test_cache_directory_is_configurable_and_can_be_switched_off(clean_env, tmp_path):
    clean_env.setenv(platform.CACHE_ENV, str(tmp_path / "cache"))
    platform.jax_defaults()
    assert os.environ["JAX_COMPILATION_CACHE_DIR"] == str(tmp_path / "cache")
    clean_env.delenv("JAX_COMPILATION_CACHE_DIR")
    clean_env.setenv(platform.CACHE_ENV, "off")
    platform.jax_defaults()
    assert "JAX_COMPILATION_CACHE_DIR" not in os.environ


def test_an_explicit_jax_setting_wins(clean_env, tmp_path):
    clean_env.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path))
    clean_env.setenv(platform.CACHE_ENV, str(tmp_path / "other"))
    platform.jax_defaults()
    assert os.environ["JAX_COMPILATION_CACHE_DIR"] == str(tmp_path)
