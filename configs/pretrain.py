"""Pretraining experiment: one file is the whole experiment (big_vision style).

    python -m vla_jax.train --config=configs/pretrain.py:debug --workdir=runs/debug
    python -m vla_jax.train --config=configs/pretrain.py:size=small,head=discrete --workdir=...

Arguments (``--config=configs/pretrain.py:ARG``): ``size`` (debug | small | pi0), ``head``
(flow | discrete), ``mixture`` (see configs/mixtures.py). Any field can be overridden on the
command line, e.g. ``--config.model.llm.depth=2``.
"""

import pathlib

import ml_collections

from vla_jax.config import ConfigError, load_sibling, parse_arg

# Architecture presets. `llm` is the Gemma-style backbone, `expert` the action expert (same depth,
# heads and head dim as the backbone: they share attention in every layer).
MODEL_PRESETS = {
    "debug": dict(
        image_size=64, num_cameras=3, max_text_len=32, action_horizon=8, max_action_dim=14, max_state_dim=14,
        vocab_size=1024,
        vit=dict(width=128, depth=3, mlp_dim=256, num_heads=4, patch_size=8),
        llm=dict(width=256, depth=3, mlp_dim=512, num_heads=4, num_kv_heads=1, head_dim=64),
        expert=dict(width=128, mlp_dim=256)),
    "small": dict(
        image_size=224, num_cameras=3, max_text_len=48, action_horizon=16, max_action_dim=32, max_state_dim=32,
        vocab_size=32_000,
        vit=dict(width=384, depth=12, mlp_dim=1536, num_heads=6, patch_size=16),
        llm=dict(width=1024, depth=8, mlp_dim=4096, num_heads=8, num_kv_heads=1, head_dim=128),
        expert=dict(width=512, mlp_dim=2048)),
    # Published pi0: SigLIP So400m/14 @ 224, Gemma 2B backbone, Gemma-300M action expert.
    "pi0": dict(
        image_size=224, num_cameras=3, max_text_len=48, action_horizon=50, max_action_dim=32, max_state_dim=32,
        vocab_size=257_152,
        vit=dict(width=1152, depth=27, mlp_dim=4304, num_heads=16, patch_size=14),
        llm=dict(width=2048, depth=18, mlp_dim=16_384, num_heads=8, num_kv_heads=1, head_dim=256),
        expert=dict(width=1024, mlp_dim=4096)),
}


def get_config(arg=None):
    arg = parse_arg(arg, size="debug", head="flow", mixture="default")
    if arg.size not in MODEL_PRESETS:
        raise ConfigError(f"unknown preset size={arg.size!r} in configs/pretrain.py; choose one of "
                          f"{', '.join(MODEL_PRESETS)}")
    config = ml_collections.ConfigDict()
    config.preset = arg.size
    config.seed = 0

    # ---------------------------------------------------------------- model
    config.model = ml_collections.ConfigDict(MODEL_PRESETS[arg.size])
    config.model.action_head = arg.head
    config.model.num_flow_steps = 10
    config.model.dtype = "float32" if arg.size == "debug" else "bfloat16"
    config.model.remat = "none" if arg.size == "debug" else "full"
    config.model.scan_layers = True
    return config
