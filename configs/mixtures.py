"""Data mixtures: ``get_data_config(mixture, data_dir)`` returns the whole ``config.data`` subtree.

Mixtures:
  default          tabletop single arm 0.45, bimanual 0.35, web vision-language 0.2
  robot_only       the two tabletop robot datasets (0.55 / 0.45)
  single_arm_only  tabletop single arm alone
  bimanual_only    tabletop bimanual alone
  balanced         the three tabletop datasets, equal weights multiplied by their sizes (balance_by_size)
  metaworld_mt50   Meta-World MT50 scripted demonstrations (tools/generate_data.py --suite=metaworld_mt50),
                   with ``data_dir/tokenizer_metaworld.model`` (written with them)
  metaworld_mt10   the same for MT10
  metaworld_mt50_cotrain  MT50 0.6 co-trained with the tabletop robot data (single arm 0.15, bimanual 0.1) and
                   the web vision-language data 0.15 (both generators run into the same data_dir)
  bridge           a real BridgeData V2 download (``data_dir`` holds ``bridge_dataset/<version>`` as released;
                   see docs/data.md) plus a tokenizer at ``data_dir/tokenizer.model``
  bridge_openpi    bridge with openpi's pi0 preprocessing: the "pi0" prompt format and resize_with_pad
                   (for ``size=pi0`` with the PaliGemma tokenizer as ``data_dir/tokenizer.model``)
  fractal          a real RT-1 (``fractal20220817_data/<version>``) download, like bridge
  lerobot          a LeRobotDataset directory (codebase v2.1 or v3.0) in the ALOHA layout at
                   ``data_dir/lerobot_aloha`` (spec ``lerobot_aloha``; docs/data.md, "LeRobot datasets")
  oxe_magic_soup             Octo's Open X-Embodiment mixture (25 datasets), Octo's weights
  oxe_magic_soup_plus        OpenVLA's magic soup++ (27 datasets: Octo's less nyu_door_opening, plus fmb,
                             dobbe, droid), OpenVLA's weights
  oxe_magic_soup_plus_minus  OpenVLA's magic soup++ without language_table and droid, fractal at 1.0
                   The OXE mixtures read ``data_dir/<name>/<version>/`` for each dataset (the OXE bucket's
                   directory names, as released; tools/prepare_data.py prepares them, see docs/data.md),
                   multiply weights by transition counts (balance_by_size, as Octo's and OpenVLA's
                   balance_weights) and take specs from
                   vla_jax/data/oxe_specs.py. OpenVLA's own names ``bridge_orig`` and ``fmb_dataset`` are
                   ``bridge_dataset`` (the same release; OpenVLA's configs map both names to it) and ``fmb``.

Fields (read by vla_jax/data/settings.py only):
  data_dir            root; relative dataset dirs, tokenizer and stats_dir are resolved against it
  tokenizer           SentencePiece .model file
  stats_dir           normalization statistics cache (tools/prepare_data.py and tools/compute_stats.py write it)
  prepared_dir        prepared copies of the robot / web datasets, what the trainer reads (tools/prepare_data.py)
  datasets.<name>     kind ("robot" = RLDS | "web" | "lerobot" = LeRobotDataset), dir (as released), spec
                      (vla_jax/data/specs.py), train_split, eval_split (lerobot: names in meta/info.json "splits"),
                      norm_group (robot datasets with the same non-empty group share combined stats),
                      grounding (robot: train the backbone to name where the target is, from the spec's
                      grounding text; the tabletop datasets record one, docs/experiments.md)
  mixture.<name>      sampling weight (>= 0); source index in batches = position in sorted name order
  balance_by_size     multiply weights by the transition (example) counts
  drop_missing        leave out (and log) mixture datasets whose directory does not exist, renormalizing the
                      weights over the rest; False: one error line listing every missing dataset
  num_workers         grain worker processes (0 = in-process)
  worker_buffer_size  batches buffered per worker
  read_threads        grain read threads per process (reading + transforms)
  seed                shuffle / mixing / augmentation seed
  train_ops/eval_ops  image op strings (vla_jax/data/transforms.py registry)
  prompt_format       "plain" (bos + instruction) | "pi0" | "pi05" (openpi's; vla_jax/data/prompts.py)

Image ops: real-robot mixtures get Octo-style random crops of the third-person camera (slot 0) plus
color jitter. The simulated tabletop mixtures get mild brightness / contrast jitter only: their
overhead camera is fixed, so a pixel is a fixed table position, and cropping would break that
mapping; saturation jitter would blur the color names the instructions rely on. The openpi mixtures
resize with padding first (aspect kept, black bars) and then augment like openpi's training: a random
crop of 95% of each side of the third-person camera and stronger color jitter.
"""

import ml_collections

TABLETOP = {
    "tabletop_single_arm": dict(kind="robot", dir="tabletop_single_arm", spec="tabletop_single_arm", grounding=True),
    "tabletop_bimanual": dict(kind="robot", dir="tabletop_bimanual", spec="tabletop_bimanual", grounding=True),
    "tabletop_web_vl": dict(kind="web", dir="tabletop_web_vl", spec="tabletop_web_vl"),
}

METAWORLD = {name: dict(kind="robot", dir=name, spec="metaworld") for name in ("metaworld_mt50", "metaworld_mt10")}

REAL_OPS = dict(
    train_ops=("random_resized_crop(scale=(0.8, 1.0), ratio=(0.9, 1.1), slots=(0,))",
               "color_jitter(brightness=0.2, contrast=0.2, saturation=0.2)"),
    eval_ops=("center_crop(scale=0.9, slots=(0,))",),
)
OPENPI_OPS = dict(
    train_ops=("resize_with_pad", "random_resized_crop(scale=(0.9025, 0.9025), ratio=(1.0, 1.0), slots=(0,))",
               "color_jitter(brightness=0.3, contrast=0.4, saturation=0.5)"),
    eval_ops=("resize_with_pad",),
)
SIM_OPS = dict(train_ops=("color_jitter(brightness=0.1, contrast=0.1, saturation=0.0)",), eval_ops=())

# Octo: octo/data/oxe/oxe_dataset_mixes.py, OXE_MAGIC_SOUP.
OXE_MAGIC_SOUP = (
    ("fractal20220817_data", 0.54087122203),
    ("kuka", 0.8341046294),
    ("bridge_dataset", 1.0),
    ("taco_play", 2.0),
    ("jaco_play", 1.0),
    ("berkeley_cable_routing", 1.0),
    ("roboturk", 2.0),
    ("nyu_door_opening_surprising_effectiveness", 1.0),
    ("viola", 2.0),
    ("berkeley_autolab_ur5", 2.0),
    ("toto", 1.0),
    ("language_table", 0.1),
    ("stanford_hydra_dataset_converted_externally_to_rlds", 2.0),
    ("austin_buds_dataset_converted_externally_to_rlds", 1.0),
    ("nyu_franka_play_dataset_converted_externally_to_rlds", 3.0),
    ("furniture_bench_dataset_converted_externally_to_rlds", 0.1),
    ("ucsd_kitchen_dataset_converted_externally_to_rlds", 2.0),
    ("austin_sailor_dataset_converted_externally_to_rlds", 1.0),
    ("austin_sirius_dataset_converted_externally_to_rlds", 1.0),
    ("bc_z", 0.2),
    ("dlr_edan_shared_control_converted_externally_to_rlds", 1.0),
    ("iamlab_cmu_pickup_insert_converted_externally_to_rlds", 1.0),
    ("utaustin_mutex", 1.0),
    ("berkeley_fanuc_manipulation", 2.0),
    ("cmu_stretch", 1.0),
)
# OpenVLA: prismatic/vla/datasets/rlds/oxe/mixtures.py, "oxe_magic_soup_plus" (its bridge_orig is bridge_dataset
# here, its fmb_dataset is fmb).
OXE_MAGIC_SOUP_PLUS = (
    ("fractal20220817_data", 0.54087122203),
    ("kuka", 0.8341046294),
    ("bridge_dataset", 1.0),
    ("taco_play", 2.0),
    ("jaco_play", 1.0),
    ("berkeley_cable_routing", 1.0),
    ("roboturk", 2.0),
    ("viola", 2.0),
    ("berkeley_autolab_ur5", 2.0),
    ("toto", 1.0),
    ("language_table", 0.1),
    ("stanford_hydra_dataset_converted_externally_to_rlds", 2.0),
    ("austin_buds_dataset_converted_externally_to_rlds", 1.0),
    ("nyu_franka_play_dataset_converted_externally_to_rlds", 3.0),
    ("furniture_bench_dataset_converted_externally_to_rlds", 0.1),
    ("ucsd_kitchen_dataset_converted_externally_to_rlds", 2.0),
    ("austin_sailor_dataset_converted_externally_to_rlds", 1.0),
    ("austin_sirius_dataset_converted_externally_to_rlds", 1.0),
    ("dlr_edan_shared_control_converted_externally_to_rlds", 1.0),
    ("iamlab_cmu_pickup_insert_converted_externally_to_rlds", 1.0),
    ("utaustin_mutex", 1.0),
    ("berkeley_fanuc_manipulation", 2.0),
    ("cmu_stretch", 1.0),
    ("bc_z", 0.2),
    ("fmb", 1.0),
    ("dobbe", 0.2),
    ("droid", 0.06),
)
# OpenVLA: "oxe_magic_soup_plus_minus" (the same renames).
OXE_MAGIC_SOUP_PLUS_MINUS = (
    ("fractal20220817_data", 1.0),
    ("kuka", 0.8341046294),
    ("bridge_dataset", 1.0),
    ("taco_play", 2.0),
    ("jaco_play", 1.0),
    ("berkeley_cable_routing", 1.0),
    ("roboturk", 2.0),
    ("viola", 2.0),
    ("berkeley_autolab_ur5", 2.0),
    ("toto", 1.0),
    ("stanford_hydra_dataset_converted_externally_to_rlds", 2.0),
    ("austin_buds_dataset_converted_externally_to_rlds", 1.0),
    ("nyu_franka_play_dataset_converted_externally_to_rlds", 3.0),
    ("furniture_bench_dataset_converted_externally_to_rlds", 0.1),
    ("ucsd_kitchen_dataset_converted_externally_to_rlds", 2.0),
    ("austin_sailor_dataset_converted_externally_to_rlds", 1.0),
    ("austin_sirius_dataset_converted_externally_to_rlds", 1.0),
    ("dlr_edan_shared_control_converted_externally_to_rlds", 1.0),
    ("iamlab_cmu_pickup_insert_converted_externally_to_rlds", 1.0),
    ("utaustin_mutex", 1.0),
    ("berkeley_fanuc_manipulation", 2.0),
    ("cmu_stretch", 1.0),
    ("bc_z", 0.2),
    ("fmb", 1.0),
    ("dobbe", 0.2),
)


def _oxe(weights) -> dict:
    """An Open X-Embodiment mixture: every dataset at ``data_dir/<name>`` with the spec of that name."""
    return dict(datasets={n: dict(kind="robot", dir=n, spec=n) for n, _ in weights}, weights=dict(weights),
                balance_by_size=True, ops=REAL_OPS)


MIXTURES = {
    "default": dict(datasets=TABLETOP, weights={"tabletop_single_arm": 0.45, "tabletop_bimanual": 0.35,
                                                "tabletop_web_vl": 0.2}, ops=SIM_OPS),
    "robot_only": dict(datasets=TABLETOP, weights={"tabletop_single_arm": 0.55, "tabletop_bimanual": 0.45},
                       ops=SIM_OPS),
    "single_arm_only": dict(datasets=TABLETOP, weights={"tabletop_single_arm": 1.0}, ops=SIM_OPS),
    "bimanual_only": dict(datasets=TABLETOP, weights={"tabletop_bimanual": 1.0}, ops=SIM_OPS),
    "metaworld_mt50": dict(datasets=METAWORLD, weights={"metaworld_mt50": 1.0}, ops=SIM_OPS,
                           tokenizer="tokenizer_metaworld.model"),
    "metaworld_mt10": dict(datasets=METAWORLD, weights={"metaworld_mt10": 1.0}, ops=SIM_OPS,
                           tokenizer="tokenizer_metaworld.model"),
    "metaworld_mt50_cotrain": dict(datasets={**TABLETOP, **METAWORLD},
                                   weights={"metaworld_mt50": 0.6, "tabletop_single_arm": 0.15,
                                            "tabletop_bimanual": 0.1, "tabletop_web_vl": 0.15},
                                   ops=SIM_OPS, tokenizer="tokenizer_metaworld.model"),
    "balanced": dict(datasets=TABLETOP, weights={n: 1.0 for n in TABLETOP}, balance_by_size=True, ops=SIM_OPS),
    "bridge": dict(datasets={"bridge_dataset": dict(kind="robot", dir="bridge_dataset", spec="bridge_dataset")},
                   weights={"bridge_dataset": 1.0}, ops=REAL_OPS),
    "lerobot": dict(datasets={"lerobot_aloha": dict(kind="lerobot", dir="lerobot_aloha", spec="lerobot_aloha")},
                    weights={"lerobot_aloha": 1.0}, ops=REAL_OPS),
    "bridge_openpi": dict(datasets={"bridge_dataset": dict(kind="robot", dir="bridge_dataset", spec="bridge_dataset")},
                          weights={"bridge_dataset": 1.0}, ops=OPENPI_OPS, prompt_format="pi0"),
    "fractal": dict(datasets={"fractal20220817_data": dict(kind="robot", dir="fractal20220817_data",
                                                           spec="fractal20220817_data")},
                    weights={"fractal20220817_data": 1.0}, ops=REAL_OPS),
    "oxe_magic_soup": _oxe(OXE_MAGIC_SOUP),
    "oxe_magic_soup_plus": _oxe(OXE_MAGIC_SOUP_PLUS),
    "oxe_magic_soup_plus_minus": _oxe(OXE_MAGIC_SOUP_PLUS_MINUS),
}


def get_data_config(mixture: str = "default", data_dir: str = "data/default") -> ml_collections.ConfigDict:
    if mixture not in MIXTURES:
        raise ValueError(f"unknown mixture {mixture!r} in configs/mixtures.py; choose one of {', '.join(MIXTURES)}")
    m = MIXTURES[mixture]
    c = ml_collections.ConfigDict()
    c.data_dir = data_dir
    c.tokenizer = m.get("tokenizer", "tokenizer.model")
    c.stats_dir = "stats"
    c.prepared_dir = "prepared"  # vla_jax.data.generate writes the tabletop datasets' prepared copies here too
    c.datasets = ml_collections.ConfigDict()
    for name, d in m["datasets"].items():
        c.datasets[name] = ml_collections.ConfigDict(
            {**dict(train_split="train", eval_split="val", norm_group="", grounding=False), **d})
    c.mixture = ml_collections.ConfigDict(dict(m["weights"]))
    c.balance_by_size = m.get("balance_by_size", False)
    c.drop_missing = False
    c.num_workers = 1
    c.worker_buffer_size = 2
    c.read_threads = 2
    c.seed = 0
    c.train_ops = m["ops"]["train_ops"]
    c.eval_ops = m["ops"]["eval_ops"]
    c.prompt_format = m.get("prompt_format", "plain")
    return c
