"""pyproject.toml against the lock (requirements.txt), the extras against the imports, the base against heavy imports.

The ranges of ``[project] dependencies`` and ``[project.optional-dependencies]`` must contain the exact pins of
requirements.txt (so the two cannot drift), every extra's packages must import here (the test venv is the lock),
and the base-only modules (trainer, data, models) must not pull an extra's package in at import time.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import subprocess
import sys

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from vla_jax.extras import MODULE_EXTRAS

tomllib = pytest.importorskip("tomllib")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Distribution -> the top-level module it installs, where the two names differ.
IMPORT_NAMES = {"dm-tree": "tree", "pillow": "PIL", "absl-py": "absl", "ml-collections": "ml_collections",
                "tensorflow-cpu": "tensorflow", "tensorflow-datasets": "tensorflow_datasets",
                "orbax-checkpoint": "orbax.checkpoint", "array-record": "array_record", "pytest-xdist": "xdist",
                "tensorboardx": "tensorboardX", "typing-extensions": "typing_extensions"}

# Modules the base install must import without any extra's package (checked in a fresh interpreter).
BASE_MODULES = ["vla_jax.train", "vla_jax.train.loop", "vla_jax.train.checkpoint", "vla_jax.data",
                "vla_jax.data.generate", "vla_jax.data.mixture", "vla_jax.data.lerobot", "vla_jax.models",
                "vla_jax.models.vla", "vla_jax.eval", "vla_jax.eval.run", "vla_jax.sim",
                "vla_jax.sim.metaworld.env", "vla_jax.export", "vla_jax.serve", "vla_jax.config"]
# Heavy packages of the extras (msgpack and dm-tree come with flax and tensorflow-datasets as well).
EXTRA_ONLY = ["torch", "onnx", "onnxruntime", "onnxscript", "safetensors", "mujoco", "metaworld", "gymnasium",
              "websockets", "av", "pyarrow", "openpi_client", "wandb"]


def _pyproject() -> dict:
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)["project"]


def _lock() -> dict[str, str]:
    """requirements.txt as {canonical name: exact version}."""
    pins = {}
    with open(os.path.join(ROOT, "requirements.txt")) as f:
        for line in f:
            line = line.split("#")[0].strip()
            if not line or line.startswith("-"):
                continue
            req = Requirement(line)
            (spec,) = req.specifier
            assert spec.operator == "==", f"requirements.txt: {line!r} is not an exact pin"
            pins[canonicalize_name(req.name)] = spec.version
    return pins


def _groups() -> dict[str, list[Requirement]]:
    """The base (key "base") and each extra, as requirements; self-references (vla_jax[...]) left out."""
    project = _pyproject()
    groups = {"base": project["dependencies"], **project["optional-dependencies"]}
    return {name: [Requirement(r) for r in reqs if not r.startswith("vla_jax")] for name, reqs in groups.items()}


def test_ranges_contain_the_lock():
    lock = _lock()
    for group, reqs in _groups().items():
        for req in reqs:
            name = canonicalize_name(req.name)
            assert name in lock, f"{group}: {req.name} is not pinned in requirements.txt"
            assert req.specifier.contains(lock[name], prereleases=True), (
                f"{group}: requirements.txt pins {req.name}=={lock[name]}, outside {req.specifier}")
            assert req.specifier, f"{group}: {req.name} has no version range"


def test_all_is_every_other_extra():
    extras = _pyproject()["optional-dependencies"]
    (all_req,) = [Requirement(r) for r in extras["all"]]
    assert all_req.extras == set(extras) - {"all", "tpu", "cuda"}


def test_extras_name_the_packages_of_module_extras():
    """vla_jax.extras.MODULE_EXTRAS (the one-line errors) points at the extra that really installs each module."""
    groups = _groups()
    for module, extra in MODULE_EXTRAS.items():
        installs = {IMPORT_NAMES.get(canonicalize_name(r.name), r.name.replace("-", "_")).split(".")[0]
                    for r in groups[extra]}
        assert module in installs, f"{module}: extra {extra} does not install it ({sorted(installs)})"


@pytest.mark.parametrize("group", ["base", "export", "sim", "serve", "lerobot", "track", "dev"])
def test_group_modules_import(group):
    for req in _groups()[group]:
        importlib.import_module(IMPORT_NAMES.get(canonicalize_name(req.name), req.name.replace("-", "_")))


def test_base_modules_do_not_import_extras():
    code = ("import importlib, json, sys\n"
            f"for m in {BASE_MODULES!r}: importlib.import_module(m)\n"
            "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": ROOT})
    assert out.returncode == 0, out.stderr[-2000:]
    loaded = set(json.loads(out.stdout.strip().splitlines()[-1]))
    assert not loaded & set(EXTRA_ONLY), f"imported at import time: {sorted(loaded & set(EXTRA_ONLY))}"


def test_missing_extra_is_one_line(tmp_path):
    """A command line whose extra is missing says which one to install, in one line, exit status 2."""
    blocker = tmp_path / "sitecustomize.py"
    blocker.write_text("import sys\nsys.modules['torch'] = None\nsys.modules['safetensors'] = None\n")
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"}
    out = subprocess.run([sys.executable, "tools/export.py", f"--workdir={tmp_path}/run", f"--out={tmp_path}/out"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 2, out.stderr[-2000:]
    lines = out.stderr.strip().splitlines()
    assert lines[-1] == "error: torch is not installed: pip install 'vla_jax[export]'", out.stderr[-2000:]
    assert not any(re.match(r"Traceback", line) for line in lines), out.stderr[-2000:]
