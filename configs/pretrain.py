"""Pretraining experiment: one file is the whole experiment (big_vision style).

    python -m vla_jax.train --config=configs/pretrain.py:debug --workdir=runs/debug
    python -m vla_jax.train --config=configs/pretrain.py:size=small,head=discrete --workdir=...

Arguments (``--config=configs/pretrain.py:ARG``): ``size`` (debug | small | pi0 | pi05), ``head``
(flow | discrete), ``mixture`` (see configs/mixtures.py). Any field can be overridden on the
command line, e.g. ``--config.model.llm.depth=2``.
"""

import pathlib

import ml_collections

from vla_jax.config import ConfigError, load_sibling, parse_arg

# Architecture presets. `llm` is the Gemma-style backbone, `expert` the action expert (same depth,
# heads and head dim as the backbone: they share attention in every layer). `vit.posemb_init`: "sincos2d"
# starts the learned position embedding from the 2-D sin-cos table (from scratch), "normal" from N(0, 0.02)
# (SigLIP-initialized models). `addons`: research add-ons on the pi0 core (vla_jax/models/addons/, one file
# each; docs/architecture.md). The debug preset trains a 3.4M-parameter model from scratch in the tabletop
# world and uses four: a conv stem, location tokens tied to camera 0 (<loc00> is id 4 in the tokenizers
# tools/generate_data.py trains), instruction-conditioned keypoints, the prefix readout (flow head only).
# `openpi_semantics`: compute the flow head exactly as openpi's pi0 code does (padded action dims, time
# embedding, Euler time; vla_jax/models/vla.py), so converted openpi weights reproduce openpi (docs/interop.md).
# `action_expert`: how state and flow time enter the action expert (vla_jax/models/action_expert.py): "pi0"
# (state token, time mixed into the action tokens) or "pi05" (time through adaptive RMSNorms, state as prompt text).
DEBUG_ADDONS = ("conv_stem(channels=(16, 32, 64, 128))", "location_tokens(grid=8, first_id=4)", "keypoints(num=32)",
                "prefix_readout")
MODEL_PRESETS = {
    "debug": dict(
        image_size=64, num_cameras=3, max_text_len=32, action_horizon=8, max_action_dim=14, max_state_dim=14,
        vocab_size=1024,
        vit=dict(width=128, depth=3, mlp_dim=256, num_heads=4, patch_size=16, posemb_init="sincos2d"),
        llm=dict(width=256, depth=3, mlp_dim=512, num_heads=4, num_kv_heads=1, head_dim=64),
        expert=dict(width=128, mlp_dim=256), addons=DEBUG_ADDONS, openpi_semantics=False,
        action_expert="pi0"),
    "small": dict(
        image_size=224, num_cameras=3, max_text_len=48, action_horizon=16, max_action_dim=32, max_state_dim=32,
        vocab_size=32_000,
        vit=dict(width=384, depth=12, mlp_dim=1536, num_heads=6, patch_size=16, posemb_init="normal"),
        llm=dict(width=1024, depth=8, mlp_dim=4096, num_heads=8, num_kv_heads=1, head_dim=128),
        expert=dict(width=512, mlp_dim=2048), addons=(), openpi_semantics=False, action_expert="pi0"),
    # Published pi0: SigLIP So400m/14 @ 224, Gemma 2B backbone, Gemma-300M action expert.
    "pi0": dict(
        image_size=224, num_cameras=3, max_text_len=48, action_horizon=50, max_action_dim=32, max_state_dim=32,
        vocab_size=257_152,
        vit=dict(width=1152, depth=27, mlp_dim=4304, num_heads=16, patch_size=14, posemb_init="normal"),
        llm=dict(width=2048, depth=18, mlp_dim=16_384, num_heads=8, num_kv_heads=1, head_dim=256),
        expert=dict(width=1024, mlp_dim=4096), addons=(), openpi_semantics=True, action_expert="pi0"),
}
# Published pi0.5: pi0's sizes; the state is written into the prompt (openpi: up to 200 tokens).
MODEL_PRESETS["pi05"] = dict(MODEL_PRESETS["pi0"], max_text_len=200, action_expert="pi05")


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
    if arg.head != "flow":  # the readout feeds the flow expert's state token
        config.model.addons = tuple(a for a in config.model.addons if a != "prefix_readout")
    config.model.num_flow_steps = 10
    config.model.dtype = "float32" if arg.size == "debug" else "bfloat16"
    config.model.remat = "none" if arg.size == "debug" else "full"
    config.model.scan_layers = True

    # ---------------------------------------------------------------- data
    # mixture=synthetic: deterministic in-memory batches (no files; tests, smoke runs).
    # Any other mixture comes from configs/mixtures.py (generate the data first, see docs/data.md).
    if arg.mixture == "synthetic":
        config.data = ml_collections.ConfigDict(dict(kind="synthetic", num_sources=3, num_examples=4096, seed=0))
    else:
        config.data = load_sibling(__file__, "mixtures").get_data_config(arg.mixture)
        if config.model.get("action_expert") == "pi05":  # no state token: the state is prompt text
            config.data.prompt_format = "pi05"

    # ---------------------------------------------------------------- training
    scale = "pi0" if arg.size == "pi05" else arg.size  # pi05 trains like pi0
    config.batch_size = {"debug": 32, "small": 256, "pi0": 1024}[scale]  # global, all processes
    config.num_steps = {"debug": 300, "small": 100_000, "pi0": 300_000}[scale]
    config.log_every = {"debug": 10, "small": 50, "pi0": 100}[scale]
    # Weights of the loss terms; keypoint: the keypoints add-on (vla_jax/models/addons/keypoints.py)
    config.loss_weights = ml_collections.ConfigDict(dict(flow=1.0, discrete=1.0, text=1.0, keypoint=1.0))

    config.optimizer = ml_collections.ConfigDict(dict(
        lr={"debug": 1e-3, "small": 2.5e-4, "pi0": 2.5e-5}[scale],
        warmup_steps={"debug": 30, "small": 1_000, "pi0": 1_000}[scale],
        schedule="cosine",         # cosine | constant (both after linear warmup from 0)
        end_lr_factor=0.1,         # cosine ends at lr * end_lr_factor
        b1=0.9, b2=0.95, eps=1e-8,
        weight_decay=1e-4,         # decoupled (multiplied by the lr), masked by decay_exclude
        # no decay for norms, biases, the token embedding and the ViT position embedding
        decay_exclude=(r"/scale$", r"/bias$", r"/b$", r"(^|/)embedding$", r"pos_embedding$"),
        clip_norm=1.0,             # global-norm clipping of trainable grads (0 = off)
        grad_accum_steps=1,        # > 1: optax.MultiSteps, one update every k train steps
        freeze=(),                 # regexes of params to freeze, e.g. (r"^img/",)
        ema_decay=0.99,            # None or 0 disables the EMA params
    ))

    # ---------------------------------------------------------------- parallelism
    config.mesh = ml_collections.ConfigDict()
    config.mesh.shape = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))  # -1: remaining devices
    config.sharding = "fsdp"  # logical-axis rules preset: dp | fsdp | fsdp_tp (vla_jax/train/sharding.py)

    # ---------------------------------------------------------------- checkpoints
    config.checkpoint = ml_collections.ConfigDict(dict(
        every={"debug": 100, "small": 1_000, "pi0": 1_000}[scale],
        keep_last=3,    # newest checkpoints kept
        keep_every=10,  # additionally keep every 10th checkpoint forever (0 = off)
        async_save=True,
    ))

    # ---------------------------------------------------------------- metrics
    config.metrics = ml_collections.ConfigDict(dict(
        # analytic: 6 * params * tokens + attention (MaxText's convention). compiled: XLA's cost analysis,
        # which counts a scanned layer's body once, so it undercounts scanned models by ~depth.
        flops="analytic",
        peak_flops_per_device=0.0,       # 0: data-sheet value for known chips, else measured (CPU)
        # Weights & Biases beside metrics.jsonl / TensorBoard: off while project is empty (docs/launch.md).
        wandb=ml_collections.ConfigDict(dict(project="", entity="", name="", mode="online")),
    ))

    # ---------------------------------------------------------------- init
    config.init = ml_collections.ConfigDict(dict(
        from_npz="",  # big_vision PaliGemma .npz; matching backbone weights are loaded (report in the log)
        from_checkpoint="",  # WORKDIR or WORKDIR:STEP of a vla_jax run: every matching parameter is loaded
        ema=False,  # from_checkpoint: take its EMA parameters
    ))

    # ---------------------------------------------------------------- periodic evaluation (docs/evaluation.md)
    # Every `every` steps process 0 evaluates the current params (EMA ones if kept and ema=True) closed
    # loop in the simulator and offline on the validation splits; logs eval/... scalars to metrics.jsonl.
    config.eval = ml_collections.ConfigDict(dict(
        every=0,                  # 0: off
        episodes=4,               # closed-loop episodes per (embodiment, task, split) cell; 0: no closed loop
        families="all",           # "all" or e.g. "pick,place"
        embodiments="all",        # "all" or e.g. "single_arm" (those with a simulator dataset in config.data)
        splits="train",           # e.g. "train,heldout_combo,heldout_paraphrase"
        offline_batches=2,        # validation batches per dataset for offline metrics; 0: none
        ema=True,                 # evaluate the EMA params when config.optimizer.ema_decay keeps them
        seed=0,                   # episode seeds, flow-sampling noise, validation sample choice
        max_steps=0,              # episode step limit; 0: the embodiment's
        execute_steps=0,          # actions executed per chunk; 0: the whole chunk
        num_samples=1,            # flow samples averaged into each chunk (vla_jax.eval.agents.ActionSampler)
        num_envs=16,              # parallel simulator environments
        image_size=96,            # rendered camera resolution (the generated data's)
    ))
    return config
