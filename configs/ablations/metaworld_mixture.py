"""Meta-World MT50 alone vs co-trained with the tabletop robot data and the web vision-language data, for
``tools/ablate.py`` (docs/results.md, "Meta-World MT50").

    python tools/ablate.py --config=configs/ablations/metaworld_mixture.py:data_dir=data/default --out=runs/ablate_mt50

Both variants are the ``metaworld_mt50_cotrain`` mixture's model, tokenizer, steps and seed; ``mt50_alone``
sets the tabletop and web weights to 0 (MT50 gets every example), ``mt50_cotrain`` keeps MT50 0.6, tabletop
single arm 0.15, bimanual 0.1, web 0.15 (configs/mixtures.py). ``data_dir`` must hold the tabletop data and
the MT50 demonstrations (docs/data.md, "Meta-World"). Evaluation: the MT50 suite, training paraphrases,
``episodes`` per task, EMA parameters, whole chunks executed.

Arguments (``:key=value,...``): ``size`` (pretrain preset, default debug), ``steps``, ``episodes`` (per task),
``seed``, ``data_dir``.
"""

import ml_collections

from vla_jax.config import dotted, parse_arg

NOT_MT50 = ("tabletop_single_arm", "tabletop_bimanual", "tabletop_web_vl")


def get_config(arg=None):
    arg = parse_arg(arg, size="debug", steps=1200, episodes=2, seed=0, data_dir="data/default")
    sweep = ml_collections.ConfigDict()
    sweep.base = f"configs/pretrain.py:size={arg.size},mixture=metaworld_mt50_cotrain"
    sweep.overrides = dotted({"num_steps": arg.steps, "seed": arg.seed, "data.data_dir": arg.data_dir,
                               "optimizer.warmup_steps": 100, "checkpoint.every": 200})
    sweep.variants = dotted({
        "mt50_alone": dotted({f"data.mixture.{name}": 0.0 for name in NOT_MT50}),
        "mt50_cotrain": dotted({}),
    })
    sweep.varied = ""  # two named variants: the plots put them side by side
    sweep.eval = ml_collections.ConfigDict(dict(
        suite="metaworld_mt50",
        episodes=arg.episodes,     # per task
        seed=0,                    # episode seeds and sampling noise: identical per variant
        families="all",
        embodiments="all",
        splits="train",
        execute_steps=0,           # the whole 8-action chunk
        max_steps=0,               # the suite's 200-step limit
        offline_batches=4,         # validation batches per dataset
        ema=True,
        num_envs=16,
        image_size=0,              # the model's resolution
        record=1,
        baselines=False,
    ))
    return sweep
