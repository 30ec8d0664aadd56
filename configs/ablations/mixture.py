"""Data-mixture ablation sweep for ``tools/ablate.py`` (see docs/evaluation.md).

    python tools/ablate.py --config=configs/ablations/mixture.py --out=runs/ablate_mixture
    python tools/ablate.py --config=configs/ablations/mixture.py:steps=2000,episodes=50 --out=runs/abl --launch_only

Arguments (``:key=value,...``): ``size`` (the pretrain preset, default debug), ``mixture`` (the
base mixture of configs/mixtures.py), ``steps`` (training steps of every variant), ``episodes``
(closed-loop episodes per cell), ``seed`` (training seed, the same for every variant).

Fields: ``base`` (a config spec for ``python -m vla_jax.train``), ``overrides`` (dotted overrides for
every variant), ``variants`` (name -> dotted overrides on top), ``varied`` (the override key on the
x-axis of the plots; variants that change anything else are drawn as separate markers), ``eval``
(evaluation settings, identical for every variant: same seeds, same episodes).
"""

import pathlib

import ml_collections

from vla_jax.config import dotted, load_sibling, parse_arg

PRETRAIN = pathlib.Path(__file__).resolve().parents[1] / "pretrain.py"


def get_config(arg=None):
    arg = parse_arg(arg, size="debug", mixture="default", steps=300, episodes=20, seed=0)
    sweep = ml_collections.ConfigDict()
    sweep.base = f"configs/pretrain.py:size={arg.size},mixture={arg.mixture}"
    sweep.overrides = dotted({"num_steps": arg.steps, "seed": arg.seed})
    web = "data.mixture.tabletop_web_vl"
    sweep.variants = dotted({})
    # web vision-language co-training weight (robot weights stay 0.45 / 0.35; the default mixture has 0.2)
    for weight in (0.0, 0.1, 0.2, 0.3):
        sweep.variants[f"web_{weight:g}"] = dotted({web: weight})
    # the single-arm data alone (plus web): does bimanual data help or hurt single-arm control?
    sweep.variants["no_bimanual"] = dotted({"data.mixture.tabletop_bimanual": 0.0})
    # grounding supervision off: the robot prompts get no "where is the target" answer (docs/experiments.md)
    sweep.variants["no_grounding"] = dotted({f"data.datasets.{name}.grounding": False
                                             for name in ("tabletop_single_arm", "tabletop_bimanual")})
    # the action head: flow matching (default) vs discrete action tokens, same mixture
    # (the prefix readout feeds the flow expert, so the discrete variant drops it, as pretrain.py's head=discrete)
    addons = load_sibling(PRETRAIN, "pretrain").MODEL_PRESETS[arg.size]["addons"]
    sweep.variants["discrete"] = dotted({"model.action_head": "discrete",
                                         "model.addons": tuple(a for a in addons if a != "prefix_readout")})
    sweep.varied = web
    sweep.eval = ml_collections.ConfigDict(dict(
        episodes=arg.episodes,     # per (embodiment, task, split) cell
        seed=0,                    # episode seeds, sampling noise and validation examples: identical per variant
        families="all",
        embodiments="all",
        splits="train,heldout_combo,heldout_paraphrase",
        execute_steps=4,           # actions executed per chunk (receding horizon); 0: the whole chunk
        max_steps=0,               # 0: the embodiment's limit
        offline_batches=8,         # validation batches per dataset
        ema=False,                 # evaluate raw params (short debug runs: EMA lags behind)
        num_envs=16,
        image_size=96,
        record=1,                  # episodes per cell kept for filmstrips
        baselines=False,           # also evaluate expert / random / mean per variant
    ))
    return sweep
