"""Device mesh and logical-axis sharding rules (MaxText style).

The mesh always has the three named axes ``data``, ``fsdp``, ``tensor`` (size 1 when unused);
``config.mesh.shape = dict(data=-1, fsdp=1, tensor=1)`` where one ``-1`` takes the remaining
devices. Model code only names *logical* axes (``embed``, ``mlp``, ``heads``, ...; see
``vla_jax/models/layers.py``); a rules table picked by ``config.sharding`` maps them to mesh axes:

* ``dp``:      parameters replicated; the batch is split over (data, fsdp).
* ``fsdp``:    parameters split over ``fsdp`` along their ``embed`` dimension (ZeRO-3 style);
               the batch is split over (data, fsdp).
* ``fsdp_tp``: as ``fsdp``, plus Megatron-style tensor parallelism: ``mlp``, ``heads`` and
               ``vocab`` split over ``tensor``.

A dimension that a mesh axis does not divide evenly is replicated instead (and reported by
:func:`describe`), so small models and odd head counts never fail to shard.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from flax.core import meta
from jax.experimental import mesh_utils
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")  # the batch dimension is split over both

_ACTIVATIONS_DP = (
    ("activation_batch", BATCH_AXES),
    ("activation_length", None),
    ("activation_embed", None),
    ("activation_heads", None),
)

RULES: dict[str, tuple[tuple[str, Any], ...]] = {
    "dp": _ACTIVATIONS_DP + (
        ("layers", None), ("embed", None), ("mlp", None), ("heads", None), ("kv_heads", None),
        ("head_dim", None), ("vocab", None), ("norm", None),
    ),
    "fsdp": _ACTIVATIONS_DP + (
        ("layers", None), ("embed", "fsdp"), ("mlp", None), ("heads", None), ("kv_heads", None),
        ("head_dim", None), ("vocab", None), ("norm", None),
    ),
    "fsdp_tp": (
        ("activation_batch", BATCH_AXES),
        ("activation_length", None),
        ("activation_embed", None),
        ("activation_heads", "tensor"),
        ("layers", None), ("embed", "fsdp"), ("mlp", "tensor"), ("heads", "tensor"), ("kv_heads", None),
        ("head_dim", None), ("vocab", "tensor"), ("norm", None),
    ),
}


class ShardingError(ValueError):
    """Bad mesh / sharding config. The message is one line naming the config field."""


def get_rules(name: str) -> tuple[tuple[str, Any], ...]:
    if name not in RULES:
        raise ShardingError(f"config.sharding={name!r} is not one of {', '.join(RULES)}")
    return RULES[name]


def mesh_shape(shape_cfg, num_devices: int) -> dict[str, int]:
    """Resolves ``{data: -1, fsdp: 1, tensor: 1}`` (one -1 fills the rest) against ``num_devices``."""
    shape = {k: int(v) for k, v in dict(shape_cfg).items()}
    unknown = set(shape) - set(MESH_AXES)
    if unknown:
        raise ShardingError(f"config.mesh.shape has unknown axes {sorted(unknown)}; the axes are {MESH_AXES}")
    shape = {a: shape.get(a, 1) for a in MESH_AXES}
    fill = [a for a, v in shape.items() if v == -1]
    if len(fill) > 1:
        raise ShardingError(f"config.mesh.shape={shape}: only one axis may be -1")
    if any(v == 0 or v < -1 for v in shape.values()):
        raise ShardingError(f"config.mesh.shape={shape}: sizes must be positive or -1")
    fixed = math.prod(v for v in shape.values() if v != -1)
    if fill:
        if num_devices % fixed:
            raise ShardingError(f"config.mesh.shape={shape}: {num_devices} devices are not divisible by {fixed}")
        shape[fill[0]] = num_devices // fixed
    if math.prod(shape.values()) != num_devices:
        raise ShardingError(f"config.mesh.shape={shape} needs {math.prod(shape.values())} devices "
                            f"but {num_devices} are available; use -1 for one axis")
    return shape


def make_mesh(shape_cfg, devices=None) -> Mesh:
    """A (data, fsdp, tensor) mesh over all devices (or ``devices``).

    Devices are ordered by (process, id) so each process owns a contiguous block of the batch
    axis (what ``make_array_from_process_local_data`` wants); on TPU the physical topology
    is respected through ``mesh_utils.create_device_mesh``.
    """
    devices = list(jax.devices() if devices is None else devices)
    shape = mesh_shape(shape_cfg, len(devices))
    dims = tuple(shape[a] for a in MESH_AXES)
    grid = None
    if devices[0].platform == "tpu":
        try:
            grid = mesh_utils.create_device_mesh(dims, devices, allow_split_physical_axes=True)
        except (ValueError, NotImplementedError, AssertionError):
            grid = None
    if grid is None:
        devices = sorted(devices, key=lambda d: (d.process_index, d.id))
        grid = np.asarray(devices, dtype=object).reshape(dims)
    return Mesh(grid, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES))


def _fit_spec(spec: P, shape: tuple[int, ...], mesh: Mesh) -> P:
    """Drops mesh axes from dimensions they do not divide evenly (those dims get replicated)."""
    out = []
    for i, axes in enumerate(tuple(spec) + (None,) * (len(shape) - len(spec))):
        if axes is None:
            out.append(None)
            continue
        names = (axes,) if isinstance(axes, str) else tuple(axes)
        names = tuple(a for a in names if mesh.shape[a] > 1)
        if not names or shape[i] % math.prod(mesh.shape[a] for a in names):
            out.append(None)
        else:
            out.append(names[0] if len(names) == 1 else names)
    return P(*out)


def _is_box(x) -> bool:
    return isinstance(x, meta.AxisMetadata)


def logical_to_shardings(boxed_tree, mesh: Mesh, rules) -> Any:
    """Boxed (``nn.with_logical_partitioning``) tree, abstract or concrete -> NamedSharding tree (unboxed).

    Unboxed leaves are replicated.
    """
    def one(leaf):
        if _is_box(leaf):
            spec = nn.logical_to_mesh_axes(leaf.names, rules)
            return NamedSharding(mesh, _fit_spec(spec, tuple(leaf.value.shape), mesh))
        return NamedSharding(mesh, P())
    return jax.tree_util.tree_map(one, boxed_tree, is_leaf=_is_box)


def shardings_like(tree, reference_paths: dict[tuple, NamedSharding], mesh: Mesh) -> Any:
    """Shardings for a tree whose leaves mirror parameters (optimizer moments, accumulators, EMA).

    A leaf whose path ends with a parameter's path and has its shape gets that parameter's
    sharding; everything else (step counters, scalars) is replicated.
    """
    replicated = NamedSharding(mesh, P())

    def one(path, leaf):
        shape = tuple(getattr(leaf, "shape", ()))
        for k in range(len(path)):
            hit = reference_paths.get(tuple(path[k:]))
            if hit is not None and hit[1] == shape:
                return hit[0]
        return replicated
    return jax.tree_util.tree_map_with_path(one, tree)


def param_path_index(params, shardings) -> dict[tuple, tuple[NamedSharding, tuple[int, ...]]]:
    """{param path: (sharding, shape)} for :func:`shardings_like`."""
    flat_p = jax.tree_util.tree_flatten_with_path(params)[0]
    flat_s = jax.tree_util.tree_leaves(shardings)
    return {tuple(path): (s, tuple(leaf.shape)) for (path, leaf), s in zip(flat_p, flat_s)}


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) dimension over (data, fsdp); other dims replicated."""
    return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_shard_count(mesh: Mesh) -> int:
    return math.prod(mesh.shape[a] for a in BATCH_AXES)


def path_str(path) -> str:
    """``('params', 'img', 'embedding', 'w')`` key path -> ``'params/img/embedding/w'``."""
    parts = []
    for k in path:
        parts.append(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))))
    return "/".join(parts)


def describe(shardings, shapes) -> list[str]:
    """Lines ``path  shape  spec`` for logging how parameters are laid out."""
    flat_s = jax.tree_util.tree_leaves(shardings)
    flat_p = jax.tree_util.tree_flatten_with_path(shapes)[0]
    return [f"{path_str(p):<60} {str(tuple(x.shape)):<24} {s.spec}" for (p, x), s in zip(flat_p, flat_s)]


def global_batch(local_batch: dict, sharding: NamedSharding) -> dict:
    """Per-process numpy batch (this process's rows) -> global jax.Arrays sharded over the batch axes."""
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in local_batch.items()}
