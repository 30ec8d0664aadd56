"""JAX process defaults chosen by entry points (``python -m vla_jax.train``, tools/, benchmarks/), never on
``import vla_jax``: the platform, and the persistent compilation cache."""

from __future__ import annotations

import glob
import os

# The compilation cache's directory; "off" (or empty) disables it. Default: ~/.cache/vla_jax/jax.
CACHE_ENV = "VLA_JAX_COMPILATION_CACHE"
DEFAULT_CACHE_DIR = os.path.join("~", ".cache", "vla_jax", "jax")


def jax_defaults() -> None:
    """Sets the JAX defaults a user did not choose. Call before ``import jax``.

    - Platform: the CPU where there is neither a TPU nor an NVIDIA GPU. libtpu is installed so TPU slices can be
      compiled ahead of time on any host (tools/aot_compile.py); on a host with no TPU it would probe for one
      at JAX start-up and print a screen of errors. An explicit ``JAX_PLATFORMS`` always wins.
    - Persistent compilation cache (as openpi enables it): compiled executables are written to
      ``$VLA_JAX_COMPILATION_CACHE`` (default ``~/.cache/vla_jax/jax``; ``off`` disables it) and a second start
      of the same program on the same devices loads them instead of compiling. An explicit
      ``JAX_COMPILATION_CACHE_DIR`` always wins.
    """
    if ("JAX_PLATFORMS" not in os.environ and not glob.glob("/dev/accel*") and not glob.glob("/dev/vfio/[0-9]*")
            and not os.path.exists("/dev/nvidiactl")):
        os.environ["JAX_PLATFORMS"] = "cpu"
    cache = compilation_cache_dir()
    if cache and "JAX_COMPILATION_CACHE_DIR" not in os.environ:
        os.environ["JAX_COMPILATION_CACHE_DIR"] = cache
        # every compile over a second is cached (the step), none of the many tiny ones
        os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "1")


def compilation_cache_dir() -> str | None:
    """The persistent compilation cache's directory from ``$VLA_JAX_COMPILATION_CACHE``; None when off."""
    value = os.environ.get(CACHE_ENV, DEFAULT_CACHE_DIR).strip()
    if value.lower() in ("", "off", "0", "none", "false"):
        return None
    return os.path.abspath(os.path.expanduser(value))


class CacheCounter:
    """Counts JAX's persistent-cache hits and misses from now on (``jax.monitoring`` events), to say in a log
    line whether a compile was loaded from the cache."""

    def __init__(self):
        import jax

        self.hits = self.misses = 0
        self._on = True
        jax.monitoring.register_event_listener(self._event)

    def _event(self, name: str, **_) -> None:
        if not self._on:
            return
        if name == "/jax/compilation_cache/cache_hits":
            self.hits += 1
        elif name == "/jax/compilation_cache/cache_misses":
            self.misses += 1

    def describe(self) -> str:
        """``"loaded from the compilation cache <dir>"`` | ``"compiled; cached in <dir>"`` | ``"cache off"``."""
        import jax

        self._on = False
        directory = jax.config.jax_compilation_cache_dir
        if not directory:
            return f"compilation cache off (set {CACHE_ENV} to a directory to enable it)"
        if self.hits and not self.misses:
            return f"loaded from the compilation cache {directory}"
        return f"compiled; written to the compilation cache {directory}"
