"""JAX parameters <-> PyTorch ``state_dict`` (``model.safetensors``) and ``config.json``, exactly invertible.

Naming (``L`` = layer index, ``e`` = expert: 0 backbone, 1 action expert). Linear weights are in PyTorch's
``[out, in]`` layout; everything is a transpose / reshape / split of the JAX array, so the round trip
``import_torch(export_torch(p)) == p`` is bit-exact in float32.

=====================================================  ============================================  =====================
JAX (``params/...``, scanned: leading ``layers`` axis)  PyTorch                                       layout change
=====================================================  ============================================  =====================
img/embedding/w [q, q, C, D], b                         img.embedding.weight [D, C, q, q], .bias      (Conv2d) transpose
img/pos_embedding [1, N, D]                             img.pos_embedding                             -
img/blocks/ln_{attn,mlp}/{scale,bias}                   img.blocks.L.ln_{attn,mlp}.{weight,bias}      -
img/blocks/qkv/w [D, 3, H, h], b [3, H, h]              img.blocks.L.qkv.weight [3Hh, D], .bias       reshape + T
img/blocks/out/w [H, h, D], b                           img.blocks.L.out.weight [D, Hh], .bias        reshape + T
img/blocks/mlp_{in,out}/{w,b}                           img.blocks.L.mlp_{in,out}.{weight,bias}       T
img/ln_final/{scale,bias}                               img.ln_final.{weight,bias}                    -
img_proj/{w,b}                                          img_proj.{weight,bias}                        T
llm/embedding [V, D]                                    llm.embedding.weight                          -
llm/layers/pre_{attn,mlp}_norm_e/scale                  llm.layers.L.pre_{attn,mlp}_norm_e.weight     - (Gemma: 1 + w)
llm/layers/pre_{attn,mlp}_norm_e/modulation/{w,b}       llm.layers.L.pre_{attn,mlp}_norm_e            T
 (adaptive norm, pi0.5: w [W, 3W], b [3W])               .modulation.{weight [3W, W], bias}
llm/layers/q_e/w [D, N, h]                              llm.layers.L.q_e.weight [Nh, D]               reshape + T
llm/layers/kv_e/w [2, D, K, h]                          llm.layers.L.{k_e,v_e}.weight [Kh, D]         split + reshape + T
llm/layers/attn_out_e/w [N, h, D]                       llm.layers.L.attn_out_e.weight [D, Nh]        reshape + T
llm/layers/gating_e/w [2, D, F]                         llm.layers.L.{gate_e,up_e}.weight [F, D]      split + T
llm/layers/mlp_out_e/w [F, D]                           llm.layers.L.mlp_out_e.weight [D, F]          T
llm/final_norm_e/scale                                  llm.final_norm_e.weight                       -
llm/final_norm_e/modulation/{w,b} (adaptive norm)       llm.final_norm_e.modulation.{weight,bias}     T
{state_proj,action_in_proj,time_mlp_in,time_mlp_out,    same name .{weight,bias}                      T
 action_out_proj}/{w,b} (pi0.5: no state_proj)
=====================================================  ============================================  =====================

Add-ons (``ADDON_RULES``): ``<addon>/conv_i_{w,b}``, ``keypoints/conv_{w,b}`` -> ``<addon>.conv_i.{weight,bias}``
(Conv2d transpose); ``<addon>/norm_i/{scale,bias}`` -> ``.norm_i.{weight,bias}``; ``<addon>/<name>/{w,b}``
(Einsum) -> ``<addon>.<name>.{weight,bias}`` (T); any other leaf ``<addon>/<name>`` -> ``<addon>.<name>``.

Unscanned JAX models (``scan_layers=False``: ``img/block_L``, ``llm/layer_L``) map to the same names.
Only numpy is needed here (torch only to write bfloat16 safetensors).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
from typing import Any

import numpy as np

from vla_jax.export import torch_port as tp

Flat = dict[str, np.ndarray]  # "img/blocks/qkv/w" -> array (no leading "params/")


# ----------------------------------------------------------------------------------------- trees
def flatten_params(variables: dict) -> Flat:
    """``{"params": nested}`` (or the nested dict itself) -> {"a/b/c": np.ndarray}."""
    tree = variables["params"] if set(variables) == {"params"} else variables
    out: Flat = {}

    def walk(node, prefix):
        for k, v in node.items():
            if isinstance(v, dict) or hasattr(v, "items"):
                walk(v, f"{prefix}{k}/")
            else:
                out[f"{prefix}{k}"] = np.asarray(getattr(v, "value", v))

    walk(tree, "")
    return out


def unflatten_params(flat: Flat) -> dict:
    """Inverse of :func:`flatten_params`; returns ``{"params": nested}``."""
    root: dict = {}
    for path, value in flat.items():
        node = root
        *parents, leaf = path.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return {"params": root}


# ----------------------------------------------------------------------------------------- config
def config_to_dict(cfg) -> dict:
    """VLAConfig -> the ``config.json`` architecture fields (plus format tags); add-ons as
    ``[{"name": ..., "kwargs": [[key, value], ...]}, ...]``."""
    d = dataclasses.asdict(cfg)
    d["decoder"]["experts"] = [dict(e) for e in d["decoder"]["experts"]]
    d["addons"] = [{"name": a.name, "kwargs": [[k, _jsonable(v)] for k, v in a.kwargs]} for a in cfg.addons]
    return {"format": tp.FORMAT, "format_version": tp.FORMAT_VERSION, **d}


def _jsonable(value):
    return [_jsonable(v) for v in value] if isinstance(value, (list, tuple)) else value


def config_from_dict(d: dict):
    """``config.json`` -> VLAConfig (imports the JAX model package)."""
    from vla_jax.models.addons import AddonSpec, hashable
    from vla_jax.models.gemma import DecoderConfig, ExpertConfig
    from vla_jax.models.vit import ViTConfig
    from vla_jax.models.vla import VLAConfig

    dec = dict(d["decoder"])
    dec["experts"] = tuple(ExpertConfig(**e) for e in dec["experts"])
    fields = {f.name for f in dataclasses.fields(VLAConfig)}
    rest = {k: v for k, v in d.items() if k in fields and k not in ("vit", "decoder", "addons")}
    addons = tuple(AddonSpec(a["name"], tuple((k, hashable(v)) for k, v in a["kwargs"])) for a in d.get("addons", ()))
    return VLAConfig(vit=ViTConfig(**d["vit"]), decoder=DecoderConfig(**dec), addons=addons, **rest)


# ----------------------------------------------------------------------------------------- layers
def _layer_slices(flat: Flat, stacked: str, single: str, depth: int) -> list[Flat]:
    """Per-layer dicts of the leaves under ``stacked/`` (scanned, sliced on axis 0) or ``single_L/``."""
    layers: list[Flat] = [{} for _ in range(depth)]
    for path, value in flat.items():
        if path.startswith(stacked + "/"):
            rest = path[len(stacked) + 1:]
            if value.shape[0] != depth:
                raise ValueError(f"{path} has {value.shape[0]} layers, config says {depth}")
            for i in range(depth):
                layers[i][rest] = value[i]
        else:
            for i in range(depth):
                if path.startswith(f"{single}_{i}/"):
                    layers[i][path[len(single) + len(str(i)) + 2:]] = value
    return layers


def _vit_block(p: Flat) -> Flat:
    d = p["qkv/w"].shape[0]
    width = p["out/w"].shape[-1]
    return {
        "ln_attn.weight": p["ln_attn/scale"], "ln_attn.bias": p["ln_attn/bias"],
        "qkv.weight": p["qkv/w"].reshape(d, -1).T, "qkv.bias": p["qkv/b"].reshape(-1),
        "out.weight": p["out/w"].reshape(-1, width).T, "out.bias": p["out/b"],
        "ln_mlp.weight": p["ln_mlp/scale"], "ln_mlp.bias": p["ln_mlp/bias"],
        "mlp_in.weight": p["mlp_in/w"].T, "mlp_in.bias": p["mlp_in/b"],
        "mlp_out.weight": p["mlp_out/w"].T, "mlp_out.bias": p["mlp_out/b"],
    }


def _vit_block_inv(t: Flat, width: int, heads: int) -> Flat:
    h = width // heads
    return {
        "ln_attn/scale": t["ln_attn.weight"], "ln_attn/bias": t["ln_attn.bias"],
        "qkv/w": t["qkv.weight"].T.reshape(width, 3, heads, h), "qkv/b": t["qkv.bias"].reshape(3, heads, h),
        "out/w": t["out.weight"].T.reshape(heads, h, width), "out/b": t["out.bias"],
        "ln_mlp/scale": t["ln_mlp.weight"], "ln_mlp/bias": t["ln_mlp.bias"],
        "mlp_in/w": t["mlp_in.weight"].T, "mlp_in/b": t["mlp_in.bias"],
        "mlp_out/w": t["mlp_out.weight"].T, "mlp_out/b": t["mlp_out.bias"],
    }


def _norm(p: Flat, src: str, dst: str) -> Flat:
    """An RMSNorm's JAX leaves ``src/...`` -> PyTorch names ``dst....``: plain ``scale`` -> ``weight``; adaptive
    (pi0.5, an expert with ``adaptive_norm``) ``modulation/{w,b}`` -> ``modulation.{weight,bias}`` (Linear T)."""
    if f"{src}/scale" in p:
        return {f"{dst}.weight": p[f"{src}/scale"]}
    return {f"{dst}.modulation.weight": p[f"{src}/modulation/w"].T, f"{dst}.modulation.bias": p[f"{src}/modulation/b"]}


def _norm_inv(t: Flat, src: str, dst: str) -> Flat:
    """Inverse of :func:`_norm`: PyTorch names ``src....`` -> JAX leaves ``dst/...``."""
    if f"{src}.weight" in t:
        return {f"{dst}/scale": t[f"{src}.weight"]}
    return {f"{dst}/modulation/w": t[f"{src}.modulation.weight"].T, f"{dst}/modulation/b": t[f"{src}.modulation.bias"]}


def _llm_layer(p: Flat, num_experts: int) -> Flat:
    out: Flat = {}
    for e in range(num_experts):
        d = p[f"q_{e}/w"].shape[0]
        kv = p[f"kv_{e}/w"]
        out.update({
            **_norm(p, f"pre_attn_norm_{e}", f"pre_attn_norm_{e}"),
            **_norm(p, f"pre_mlp_norm_{e}", f"pre_mlp_norm_{e}"),
            f"q_{e}.weight": p[f"q_{e}/w"].reshape(d, -1).T,
            f"k_{e}.weight": kv[0].reshape(d, -1).T,
            f"v_{e}.weight": kv[1].reshape(d, -1).T,
            f"attn_out_{e}.weight": p[f"attn_out_{e}/w"].reshape(-1, d).T,
            f"gate_{e}.weight": p[f"gating_{e}/w"][0].T,
            f"up_{e}.weight": p[f"gating_{e}/w"][1].T,
            f"mlp_out_{e}.weight": p[f"mlp_out_{e}/w"].T,
        })
    return out


def _llm_layer_inv(t: Flat, widths: list[int], n: int, k: int, h: int) -> Flat:
    out: Flat = {}
    for e, d in enumerate(widths):
        out.update({
            **_norm_inv(t, f"pre_attn_norm_{e}", f"pre_attn_norm_{e}"),
            **_norm_inv(t, f"pre_mlp_norm_{e}", f"pre_mlp_norm_{e}"),
            f"q_{e}/w": t[f"q_{e}.weight"].T.reshape(d, n, h),
            f"kv_{e}/w": np.stack([t[f"k_{e}.weight"].T.reshape(d, k, h), t[f"v_{e}.weight"].T.reshape(d, k, h)]),
            f"attn_out_{e}/w": t[f"attn_out_{e}.weight"].T.reshape(n, h, d),
            f"gating_{e}/w": np.stack([t[f"gate_{e}.weight"].T, t[f"up_{e}.weight"].T]),
            f"mlp_out_{e}/w": t[f"mlp_out_{e}.weight"].T,
        })
    return out


LINEARS = ("img_proj", "state_proj", "action_in_proj", "time_mlp_in", "time_mlp_out", "action_out_proj")

_CONV = (3, 2, 0, 1)  # [3, 3, C_in, C] -> Conv2d [C, C_in, 3, 3]; the inverse is (2, 3, 1, 0)
ADDON_RULES = (  # (JAX leaf regex below the add-on, PyTorch name template, layout: conv | T | -)
    (r"^(conv_\d+|conv)_w$", "{0}.weight", "conv"),
    (r"^(conv_\d+|conv)_b$", "{0}.bias", "-"),
    (r"^(norm_\d+)/scale$", "{0}.weight", "-"),
    (r"^(norm_\d+)/bias$", "{0}.bias", "-"),
    (r"^(\w+)/w$", "{0}.weight", "T"),
    (r"^(\w+)/b$", "{0}.bias", "-"),
    (r"^(\w+)$", "{0}", "-"),
)
_TORCH_RULES = ((r"^(conv_\d+|conv)\.weight$", "{0}_w", "conv"), (r"^(conv_\d+|conv)\.bias$", "{0}_b", "-"),
                (r"^(norm_\d+)\.weight$", "{0}/scale", "-"), (r"^(norm_\d+)\.bias$", "{0}/bias", "-"),
                (r"^(\w+)\.weight$", "{0}/w", "T"), (r"^(\w+)\.bias$", "{0}/b", "-"), (r"^(\w+)$", "{0}", "-"))


def addon_names(cfg) -> set[str]:
    return {a.name for a in cfg.addons}


def _convert(rules, key: str, value: np.ndarray, sep: str, inverse: bool) -> tuple[str, np.ndarray]:
    addon, rest = key.split(sep, 1)
    for pattern, template, layout in rules:
        m = re.match(pattern, rest)
        if m:
            if layout == "conv":
                value = np.transpose(value, (2, 3, 1, 0) if inverse else _CONV)
            elif layout == "T":
                value = value.T
            joiner = "/" if inverse else "."
            return addon + joiner + template.format(*m.groups()), value
    raise ValueError(f"add-on parameter {key} has no {'JAX' if inverse else 'PyTorch'} name")


def addon_to_torch(path: str, value: np.ndarray) -> tuple[str, np.ndarray]:
    """An add-on's JAX leaf (``keypoints/proj/w``) -> its PyTorch name and array (``keypoints.proj.weight``)."""
    return _convert(ADDON_RULES, path, value, "/", inverse=False)


def addon_to_jax(name: str, value: np.ndarray) -> tuple[str, np.ndarray]:
    """Inverse of :func:`addon_to_torch`."""
    return _convert(_TORCH_RULES, name, value, ".", inverse=True)


def jax_to_torch(variables: dict, cfg) -> dict[str, np.ndarray]:
    """JAX variables ({"params": ...}, scanned or not) -> PyTorch state_dict of numpy arrays (contiguous)."""
    flat = flatten_params(variables)
    used: set[str] = set()

    def take(path):
        used.add(path)
        return flat[path]

    out: dict[str, np.ndarray] = {
        "img.embedding.weight": np.transpose(take("img/embedding/w"), (3, 2, 0, 1)),
        "img.embedding.bias": take("img/embedding/b"),
        "img.pos_embedding": take("img/pos_embedding"),
        "img.ln_final.weight": take("img/ln_final/scale"),
        "img.ln_final.bias": take("img/ln_final/bias"),
        "llm.embedding.weight": take("llm/embedding"),
    }
    for path in [p for p in flat if p.split("/")[0] in addon_names(cfg)]:
        name, array = addon_to_torch(path, take(path))
        out[name] = array
    for name in LINEARS:
        if f"{name}/w" in flat:
            out[f"{name}.weight"] = take(f"{name}/w").T
            out[f"{name}.bias"] = take(f"{name}/b")
    num_experts = len(cfg.decoder.experts)
    for e in range(num_experts):
        leaves = {path: take(path) for path in list(flat) if path.startswith(f"llm/final_norm_{e}/")}
        out.update(_norm(leaves, f"llm/final_norm_{e}", f"llm.final_norm_{e}"))
    for i, p in enumerate(_layer_slices(flat, "img/blocks", "img/block", cfg.vit.depth)):
        out.update({f"img.blocks.{i}.{k}": v for k, v in _vit_block(p).items()})
    for i, p in enumerate(_layer_slices(flat, "llm/layers", "llm/layer", cfg.decoder.depth)):
        out.update({f"llm.layers.{i}.{k}": v for k, v in _llm_layer(p, num_experts).items()})
    layer_paths = {p for p in flat if p.startswith(("img/blocks/", "img/block_", "llm/layers/", "llm/layer_"))}
    left = sorted(set(flat) - used - layer_paths)
    if left:
        raise ValueError(f"parameters with no PyTorch name: {left[:5]}")
    return {k: np.ascontiguousarray(v) for k, v in out.items()}


def torch_to_jax(tensors: dict[str, np.ndarray], cfg) -> dict:
    """Exact inverse of :func:`jax_to_torch`: returns ``{"params": ...}`` in the layout of ``cfg`` (scan or not)."""
    t = {k: np.asarray(v) for k, v in tensors.items()}
    used: set[str] = set()

    def take(name):
        used.add(name)
        return t[name]

    flat: Flat = {
        "img/embedding/w": np.transpose(take("img.embedding.weight"), (2, 3, 1, 0)),
        "img/embedding/b": take("img.embedding.bias"),
        "img/pos_embedding": take("img.pos_embedding"),
        "img/ln_final/scale": take("img.ln_final.weight"),
        "img/ln_final/bias": take("img.ln_final.bias"),
        "llm/embedding": take("llm.embedding.weight"),
    }
    for name in [n for n in t if n.split(".")[0] in addon_names(cfg)]:
        path, array = addon_to_jax(name, take(name))
        flat[path] = array
    for name in LINEARS:
        if f"{name}.weight" in t:
            flat[f"{name}/w"] = take(f"{name}.weight").T
            flat[f"{name}/b"] = take(f"{name}.bias")
    widths = [e.width for e in cfg.decoder.experts]
    for e in range(len(widths)):
        leaves = {name: take(name) for name in list(t) if name.startswith(f"llm.final_norm_{e}.")}
        flat.update(_norm_inv(leaves, f"llm.final_norm_{e}", f"llm/final_norm_{e}"))

    def per_layer(prefix, depth):
        layers = []
        for i in range(depth):
            head = f"{prefix}.{i}."
            layers.append({k[len(head):]: take(k) for k in list(t) if k.startswith(head)})
        return layers

    vit_layers = [_vit_block_inv(p, cfg.vit.width, cfg.vit.num_heads) for p in per_layer("img.blocks", cfg.vit.depth)]
    d = cfg.decoder
    llm_layers = [_llm_layer_inv(p, widths, d.num_heads, d.num_kv_heads, d.head_dim)
                  for p in per_layer("llm.layers", d.depth)]
    for layers, stacked, single, scan in ((vit_layers, "img/blocks", "img/block", cfg.vit.scan),
                                          (llm_layers, "llm/layers", "llm/layer", cfg.decoder.scan)):
        if scan:
            for key in layers[0]:
                flat[f"{stacked}/{key}"] = np.stack([layer[key] for layer in layers])
        else:
            for i, layer in enumerate(layers):
                flat.update({f"{single}_{i}/{k}": v for k, v in layer.items()})
    left = sorted(set(t) - used)
    if left:
        raise ValueError(f"model.safetensors has tensors with no JAX name: {left[:5]}")
    return unflatten_params({k: np.ascontiguousarray(v) for k, v in flat.items()})


# ----------------------------------------------------------------------------------------- files
def save_torch(out_dir: str, variables: dict, cfg, dtype: str = "float32", extra_config: dict | None = None) -> dict:
    """Writes ``model.safetensors`` + ``config.json`` (architecture, ``torch_dtype``, ``extra_config``)
    and a copy of the ``torch_port`` package into ``out_dir``. Returns the config.json dict."""
    import torch
    from safetensors.torch import save_file

    if dtype not in tp.DTYPES:
        raise ValueError(f"--dtype={dtype} must be one of {sorted(tp.DTYPES)}")
    os.makedirs(out_dir, exist_ok=True)
    arrays = jax_to_torch(variables, cfg)
    tensors = {k: torch.from_numpy(np.asarray(v, np.float32)).to(tp.DTYPES[dtype]).contiguous()
               for k, v in arrays.items()}
    save_file(tensors, os.path.join(out_dir, tp.WEIGHTS_FILE), metadata={"format": "pt", "source": "vla_jax"})
    config = {**config_to_dict(cfg), "torch_dtype": dtype, **(extra_config or {})}
    tp.check_config(config)
    with open(os.path.join(out_dir, tp.CONFIG_FILE), "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)
    shutil.copytree(tp.PACKAGE_DIR, os.path.join(out_dir, "torch_port"), dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return config


def load_torch(folder: str) -> tuple[dict, Any, dict]:
    """Reads an exported folder -> (JAX variables {"params": ...} as float32 numpy, VLAConfig, config.json)."""
    from safetensors.numpy import load_file

    with open(os.path.join(folder, tp.CONFIG_FILE)) as f:
        config = json.load(f)
    path = os.path.join(folder, tp.WEIGHTS_FILE)
    if config.get("torch_dtype", "float32") == "float32":
        arrays = load_file(path)
    else:  # numpy has no bfloat16: go through torch
        from safetensors.torch import load_file as load_torch_file
        arrays = {k: v.float().numpy() for k, v in load_torch_file(path).items()}
    cfg = config_from_dict(config)
    return torch_to_jax(arrays, cfg), cfg, config


def torch_state_dict(variables: dict, cfg, dtype=None) -> dict:
    """JAX variables -> {name: torch.Tensor} ready for ``VLAPolicy.load_state_dict``."""
    import torch

    return {k: torch.from_numpy(np.asarray(v, np.float32)).to(dtype or torch.float32)
            for k, v in jax_to_torch(variables, cfg).items()}


def torch_policy(variables: dict, cfg) -> "tp.VLAPolicy":
    """JAX variables + VLAConfig -> the float32 :class:`VLAPolicy` (eval mode) that an export of them loads."""
    policy = tp.VLAPolicy({**config_to_dict(cfg), "torch_dtype": "float32"})
    policy.load_state_dict(torch_state_dict(variables, cfg))
    return policy.eval()
