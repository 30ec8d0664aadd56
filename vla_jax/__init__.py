"""vla_jax: pretraining vision-language-action robot policies in JAX."""

import glob as _glob
import os as _os

# libtpu is installed so TPU slices can be compiled ahead of time on any host (tools/aot_compile.py).
# On a host with no TPU it would probe for one at JAX start-up and print a screen of errors, so where
# there is neither a TPU nor an NVIDIA GPU and the user chose nothing, JAX runs on the CPU directly.
if ("JAX_PLATFORMS" not in _os.environ and not _glob.glob("/dev/accel*") and not _glob.glob("/dev/vfio/[0-9]*")
        and not _os.path.exists("/dev/nvidiactl")):
    _os.environ["JAX_PLATFORMS"] = "cpu"
