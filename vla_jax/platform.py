"""The JAX platform default, chosen by entry points (``python -m vla_jax.train``, tools/, benchmarks/), never on
``import vla_jax``."""

from __future__ import annotations

import glob
import os


def default_platform() -> None:
    """Runs JAX on the CPU where there is neither a TPU nor an NVIDIA GPU and the user chose nothing.

    libtpu is installed so TPU slices can be compiled ahead of time on any host (tools/aot_compile.py); on a
    host with no TPU it would probe for one at JAX start-up and print a screen of errors. Call before
    ``import jax``; an explicit ``JAX_PLATFORMS`` always wins.
    """
    if ("JAX_PLATFORMS" not in os.environ and not glob.glob("/dev/accel*") and not glob.glob("/dev/vfio/[0-9]*")
            and not os.path.exists("/dev/nvidiactl")):
        os.environ["JAX_PLATFORMS"] = "cpu"
