"""The load snippets of docs/export.md run as written against a freshly exported folder."""

from __future__ import annotations

import os
import re

import numpy as np
import pytest
from test_export_helpers import ROOT, exported

DOC = os.path.join(ROOT, "docs", "export.md")


def snippets() -> dict[str, str]:
    text = open(DOC).read()
    out = {}
    for section in ("Load the folder in PyTorch", "Load the folder in onnxruntime"):
        body = text.split(f"## {section}", 1)[1].split("\n## ", 1)[0]
        blocks = re.findall(r"```python\n(.*?)```", body, re.S)
        assert len(blocks) == 1, section
        out[section] = blocks[0]
    return out


@pytest.mark.parametrize("section", ["Load the folder in PyTorch", "Load the folder in onnxruntime"])
@pytest.mark.parametrize("head", ["flow", "discrete"])
def test_doc_snippet_runs(section, head):
    folder, _ = exported(head)
    code = snippets()[section]
    assert len(code.strip().splitlines()) <= 12  # "ten lines each"
    assert 'folder = "exports/debug"' in code
    scope: dict = {}
    exec(compile(code.replace('"exports/debug"', repr(folder)), DOC, "exec"), scope)  # noqa: S102
    actions = np.asarray(scope["actions"])
    import json

    c = json.load(open(os.path.join(folder, "config.json")))
    assert actions.shape == (1, c["action_horizon"], c["max_action_dim"])
    assert np.isfinite(actions).all() and np.abs(actions).max() > 0
