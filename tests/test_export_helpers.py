"""Shared pieces of the export tests (imported by tests/test_export*.py; no tests here).

A tiny model (the debug preset shrunk: 2 layers, GQA with 2 KV heads, 32px, 2 cameras, 5 flow steps; the flow
model with a two-conv stem and keypoints, the discrete one with the plain patch embedding) gets
random params with the tree of ``model.init`` (every leaf perturbed, so biases and norm scales matter), saved in the trainer's checkpoint layout
(``checkpoints/<step>/{state,config,norm_stats}``) with a plain orbax CheckpointManager, together with a
tiny SentencePiece tokenizer and normalization stats for the ``tabletop_single_arm`` spec.
Everything is built once per session (module-level cache) in one temp dir.
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import shutil
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATASET = "tabletop_single_arm"
TINY_MODEL = {
    "model.image_size": 32, "model.num_cameras": 2, "model.max_text_len": 16, "model.action_horizon": 4,
    "model.max_action_dim": 8, "model.max_state_dim": 9, "model.vocab_size": 512,
    "model.vit.width": 64, "model.vit.depth": 2, "model.vit.mlp_dim": 128, "model.vit.num_heads": 2,
    "model.vit.patch_size": 8,
    "model.llm.width": 64, "model.llm.depth": 2, "model.llm.mlp_dim": 128, "model.llm.num_heads": 4,
    "model.llm.num_kv_heads": 2, "model.llm.head_dim": 16,
    "model.expert.width": 32, "model.expert.mlp_dim": 64, "model.num_flow_steps": 5,
}
STEPS = (5, 10)


@functools.lru_cache(maxsize=None)
def tmp_root() -> str:
    root = tempfile.mkdtemp(prefix="vla_export_test_")
    atexit.register(shutil.rmtree, root, True)
    return root


def train_config(head: str = "flow", **extra):
    """The training config of the tiny model (config.data points at the tokenizer dir)."""
    from vla_jax.config import load_config

    overrides = dict(TINY_MODEL)
    if head == "discrete":
        overrides["model.action_horizon"] = 2  # 2 x 5 tokens keep the unrolled ONNX decoding graph small
        overrides["model.max_action_dim"] = 5
        overrides["model.addons"] = ("location_tokens(grid=8, first_id=4)",)  # the plain patch embedding
    else:
        # two stride-2 convs with spatial-softmax keypoints, then 2x2 patches: parity covers both ViT inputs
        overrides["model.addons"] = ("conv_stem(channels=(8, 8))", "location_tokens(grid=8, first_id=4)",
                                     "keypoints(num=4)", "prefix_readout")
    overrides.update(extra)
    config = load_config(f"{ROOT}/configs/pretrain.py:debug,head={head}", overrides)
    config.data.data_dir = data_dir()
    config.data.tokenizer = "tokenizer.model"
    config.checkpoint.async_save = False
    return config


@functools.lru_cache(maxsize=None)
def data_dir() -> str:
    """A tiny tokenizer (<= 256 pieces, so it fits the discrete head's vocab) and nothing else."""
    from vla_jax.data.tokenizer import train_tokenizer

    out = os.path.join(tmp_root(), "data")
    colors, objects = ["red", "green", "blue", "yellow"], ["block", "bowl", "cup", "plate"]
    texts = [f"{verb} the {c} {o} {where}" for verb in ("pick up", "place", "push", "move") for c in colors
             for o in objects for where in ("", "in the bowl", "to the left", "onto the plate")]
    train_tokenizer(texts, os.path.join(out, "tokenizer.model"), vocab_size=120, log=lambda *a: None)
    return out


def norm_stats() -> dict:
    rng = np.random.default_rng(7)

    def block(dim):
        mean = rng.normal(size=dim)
        std = rng.uniform(0.1, 2.0, dim)
        q01 = mean - 2 * std
        q99 = mean + 2 * std
        q99[-1] = q01[-1]  # one degenerate dim
        return {"mean": mean.tolist(), "std": std.tolist(), "min": (q01 - 1).tolist(), "max": (q99 + 1).tolist(),
                "q01": q01.tolist(), "q99": q99.tolist()}

    return {DATASET: {"dataset": DATASET, "num_transitions": 100, "num_trajectories": 4,
                      "action": block(7), "state": block(8)}}


def init_params(config, seed: int = 0, scale: float = 0.05):
    """Params with the exact tree of ``model.init`` (``jax.eval_shape``: nothing compiled), drawn like the
    initializers (LayerNorm scales 1, RMSNorm scales 0, weights N(0, 1/fan_in)) and every leaf then perturbed
    by N(0, scale) so biases and norm scales matter."""
    import flax.linen as nn
    import jax

    from vla_jax.models import summary, vla

    shapes = nn.unbox(summary.param_shapes(vla.make_config(config.model)))
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        names = [getattr(k, "key", str(k)) for k in path]
        shape = leaf.shape
        scanned = "layers" in names or "blocks" in names
        core = shape[1:] if scanned else shape  # without the stacked layer axis
        name, parent = names[-1], names[-2]
        conv = parent in ("conv_stem", "keypoints") and name.endswith(("_w", "_b"))  # conv_{i}_w, conv_w
        if name == "scale":  # LayerNorm (ViT, conv stem): 1; Gemma RMSNorm (1 + scale): 0
            base = np.ones(shape) if names[1] in ("img", "conv_stem") else np.zeros(shape)
        elif name in ("b", "bias") or (conv and name.endswith("_b")):
            base = np.zeros(shape)
        elif conv:  # conv kernel [3, 3, C_in, C_out]
            base = rng.standard_normal(shape) / np.sqrt(np.prod(shape[:-1]))
        elif name == "pos_embedding":
            base = 0.02 * rng.standard_normal(shape)
        else:
            fan_in = {"embedding": core[-1] if parent == "llm" else int(np.prod(core[:-1])),
                      "kv_0": core[1], "kv_1": core[1], "gating_0": core[1], "gating_1": core[1],
                      "attn_out_0": core[0] * core[1], "attn_out_1": core[0] * core[1],
                      "out": core[0] * core[1]}.get(parent, core[0])
            base = rng.standard_normal(shape) / np.sqrt(fan_in)
        return (base + scale * rng.standard_normal(shape)).astype(np.float32)

    return jax.tree_util.tree_map_with_path(draw, shapes)


def shaped_params(config, seed: int = 0):
    """Random params with the exact tree of ``model.init`` (from ``jax.eval_shape``, nothing compiled)."""
    import flax.linen as nn
    import jax

    from vla_jax.models import summary, vla

    shapes = nn.unbox(summary.param_shapes(vla.make_config(config.model)))
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: (rng.standard_normal(s.shape) / np.sqrt(s.shape[-1])).astype(np.float32), shapes)


def save_checkpoint(workdir: str, step: int, params, ema_params, config, stats) -> None:
    """The trainer's layout with a plain CheckpointManager (TrainState-like dict, config + norm_stats JSON)."""
    import orbax.checkpoint as ocp

    manager = ocp.CheckpointManager(os.path.join(os.path.abspath(workdir), "checkpoints"),
                                    item_names=("state", "config", "norm_stats"))
    state = {"step": np.int32(step), "params": params, "opt_state": {"mu": params}, "ema_params": ema_params,
             "rng": np.zeros(2, np.uint32)}
    manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        config=ocp.args.JsonSave(json.loads(config.to_json_best_effort())),
        norm_stats=ocp.args.JsonSave(stats)))
    manager.wait_until_finished()
    manager.close()


@functools.lru_cache(maxsize=None)
def make_run(head: str = "flow") -> tuple[str, dict]:
    """A workdir with checkpoints at STEPS. Returns (workdir, {"params": ..., "ema_params": ...}) of the last step."""
    config = train_config(head)
    workdir = os.path.join(tmp_root(), f"run_{head}")
    # the discrete head needs larger weights than init for its greedy tokens to vary (tied embeddings)
    scale = 0.5 if head == "discrete" else 0.05
    params = init_params(config, seed=0, scale=scale)
    ema = init_params(config, seed=1, scale=scale)
    for step in STEPS:
        save_checkpoint(workdir, step, params, ema, config, norm_stats())
    return workdir, {"params": params, "ema_params": ema}


@functools.lru_cache(maxsize=None)
def exported(head: str = "flow") -> tuple[str, dict]:
    """``export(make_run(head), fmt=all)`` once per session. Returns (folder, report)."""
    from vla_jax.export.package import export

    workdir, _ = make_run(head)
    out = os.path.join(tmp_root(), f"export_{head}")
    report = export(workdir, out, fmt="all", log=lambda *a: None)
    return out, report


def model_cfg(head: str = "flow"):
    from vla_jax.models import vla

    return vla.make_config(train_config(head).model)
