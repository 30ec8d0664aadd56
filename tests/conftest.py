"""Test-wide settings: CPU only, quiet TensorFlow, and helpers shared by the test files."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
