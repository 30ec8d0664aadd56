"""The PyTorch port of the vla_jax policy (see core.py): ``from torch_port import VLAPolicy``."""

import os

from .core import (CONFIG_FILE, DTYPES, FORMAT, FORMAT_VERSION, NORM_STATS_FILE, NUM_BINS, WEIGHTS_FILE,
                   UnsupportedModelError, VLAPolicy, check_config)

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))  # copied whole into every exported folder

__all__ = ["CONFIG_FILE", "DTYPES", "FORMAT", "FORMAT_VERSION", "NORM_STATS_FILE", "NUM_BINS", "PACKAGE_DIR",
           "WEIGHTS_FILE", "UnsupportedModelError", "VLAPolicy", "check_config"]
