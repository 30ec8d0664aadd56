"""Paths of the openpi / LeRobot reference fixtures (../shared/fixtures/openpi/, beside the repository) and a reader
for their ``name<TAB>shape<TAB>dtype`` lists."""

from __future__ import annotations

import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "..", "shared", "fixtures", "openpi")


def read_shape_list(path: str) -> dict[str, tuple[tuple[int, ...], str]]:
    """``{name: (shape, dtype)}`` of a fixture list; a ``torch.`` dtype prefix is dropped; ``#`` lines skipped."""
    out = {}
    with open(path) as f:
        for line in f:
            if line.strip() and not line.startswith("#"):
                name, shape, dtype = line.rstrip("\n").split("\t")
                out[name] = (tuple(int(d) for d in shape.strip("()").split(",") if d.strip()),
                             dtype.removeprefix("torch."))
    return out
