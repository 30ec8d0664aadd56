"""Checkpoints of the flat layout, where the add-ons were fields of the model config and their parameters
lived inside the core's (``img/stem/...``, ``readout_proj``, ``keypoint_readout``): the rename table that
loads them into the add-on layout, and the matching config upgrade.

=======================================  ======================================
flat layout                              add-on layout
=======================================  ======================================
img/stem/conv_{i}_{w,b}, norm_{i}/...    conv_stem/conv_{i}_{w,b}, norm_{i}/...
img/stem/keypoint_conv_{w,b}             keypoints/conv_{w,b}
img/stem/keypoint_query                  keypoints/query
img/keypoint_proj/{w,b}                  keypoints/proj/{w,b}
keypoint_readout/w                       keypoints/readout/w
readout_proj/{w,b}                       prefix_readout/proj/{w,b}
=======================================  ======================================
"""

from __future__ import annotations

import re

from flax import traverse_util

PARAM_RENAMES = (
    (r"^img/stem/keypoint_conv_([wb])$", r"keypoints/conv_\1"),
    (r"^img/stem/keypoint_query$", r"keypoints/query"),
    (r"^img/stem/(.*)$", r"conv_stem/\1"),
    (r"^img/keypoint_proj/(.*)$", r"keypoints/proj/\1"),
    (r"^keypoint_readout/(.*)$", r"keypoints/readout/\1"),
    (r"^readout_proj/(.*)$", r"prefix_readout/proj/\1"),
)
FLAT_FIELDS = ("readout", "location_grid", "location_first_id")  # model fields of the flat layout
FLAT_VIT_FIELDS = ("stem", "keypoints")


def rename(path: str) -> str:
    """A parameter path below ``params`` ('/'-joined) in the add-on layout."""
    for pattern, repl in PARAM_RENAMES:
        new, n = re.subn(pattern, repl, path)
        if n:
            return new
    return path


def upgrade_params(tree: dict) -> dict:
    """A nested parameter dict (below ``params``) of either layout -> the add-on layout."""
    flat = traverse_util.flatten_dict(tree, sep="/")
    return traverse_util.unflatten_dict({rename(path): value for path, value in flat.items()}, sep="/")


def is_flat(model: dict) -> bool:
    """Whether a saved ``config.model`` (dict) is of the flat layout."""
    return any(k in model for k in FLAT_FIELDS) or any(k in model.get("vit", {}) for k in FLAT_VIT_FIELDS)


def upgrade_model_config(model: dict) -> dict:
    """A saved ``config.model`` dict of the flat layout -> the add-on layout (others are returned as they are)."""
    if not is_flat(model):
        return model
    model = {**model, "vit": dict(model.get("vit", {}))}
    stem = tuple(model["vit"].pop("stem", ()) or ())
    keypoints = int(model["vit"].pop("keypoints", 0) or 0)
    readout = bool(model.pop("readout", False))
    grid, first = int(model.pop("location_grid", 0) or 0), int(model.pop("location_first_id", 0) or 0)
    addons = []
    if stem:
        addons.append(f"conv_stem(channels={stem})")
    if grid:
        addons.append(f"location_tokens(grid={grid}, first_id={first})")
    if keypoints:
        addons.append(f"keypoints(num={keypoints})")
    if readout:
        addons.append("prefix_readout")
    model["addons"] = tuple(addons)
    return model
