"""The only module of vla_jax.data that reads the config; everything else takes these settings.

Fields read: ``config.data.*`` (see configs/mixtures.py), ``config.model.{num_cameras, image_size,
max_text_len, action_horizon, max_action_dim, max_state_dim, vocab_size, action_head}`` and
``config.batch_size``.
"""

from __future__ import annotations

import dataclasses
import math
import os

from vla_jax.data.errors import DataError
from vla_jax.data.prompts import check_prompt_format
from vla_jax.data.specs import get_spec
from vla_jax.data.transforms import Dims
from vla_jax.models import addons


# Dataset kind (config.data.datasets.<name>.kind) -> the spec kind it takes (vla_jax/data/specs.py). Kinds with
# robot specs give robot samples and have normalization statistics; other modules register their kinds
# (vla_jax/data/lerobot.py: "lerobot").
SPEC_KINDS: dict[str, str] = {"robot": "robot", "web": "web"}
# Dataset kinds the pipeline reads from prepared copies (tools/prepare_data.py; vla_jax/data/prepare.py's
# PREPARE_KINDS); the others (lerobot) are read where they are.
PREPARED_KINDS = ("robot", "web")


@dataclasses.dataclass(frozen=True)
class DatasetSettings:
    name: str
    kind: str  # a key of SPEC_KINDS: "robot" (RLDS) | "web" | "lerobot"
    dir: str  # resolved path of the source as released (dataset root or versioned directory)
    prepared: str | None  # kinds in PREPARED_KINDS: resolved path of the prepared copy, <prepared_dir>/<name>
    spec: str
    train_split: str
    eval_split: str
    norm_group: str  # robot datasets with the same norm_group share combined stats
    grounding: bool  # robot: the prompt is followed by the spec's grounding text as a text-loss answer

    @property
    def is_robot(self) -> bool:
        return SPEC_KINDS[self.kind] == "robot"

    @property
    def read_dir(self) -> str:
        """What the pipeline and the statistics read: the prepared copy, else the dataset where it is."""
        return self.prepared or self.dir


@dataclasses.dataclass(frozen=True)
class DataSettings:
    data_dir: str
    tokenizer: str
    stats_dir: str
    datasets: dict  # name -> DatasetSettings
    mixture: dict  # name -> weight, in config order
    balance_by_size: bool
    num_workers: int
    worker_buffer_size: int
    read_threads: int
    seed: int
    train_ops: tuple
    eval_ops: tuple
    dims: Dims
    vocab_size: int
    action_head: str
    batch_size: int
    required_tokens: tuple[tuple[str, int], ...] = ()  # (piece, id) the model's add-ons expect (vla_jax.models.addons)
    prompt_format: str = "plain"  # vla_jax/data/prompts.py: "plain" | "pi0" | "pi05"
    exact_vocab: bool = False  # the tokenizer must have exactly vocab_size pieces (openpi-compatible models)
    missing: dict = dataclasses.field(default_factory=dict)  # name -> dir: mixture datasets not on disk
    dropped: dict = dataclasses.field(default_factory=dict)  # name -> dir: those left out by drop_missing
    mixture_size: int = 0  # datasets with weight > 0 in config.data.mixture, before drop_missing

    def norm_group_members(self, name: str) -> list[str]:
        group = self.datasets[name].norm_group
        return [n for n, d in self.datasets.items() if d.is_robot and d.norm_group == group]


def _resolve(path: str, data_dir: str) -> str:
    path = os.path.expanduser(str(path))
    return path if os.path.isabs(path) or "://" in path else os.path.join(data_dir, path)


def read_settings(config) -> DataSettings:
    from vla_jax.data import lerobot  # noqa: F401  (registers the "lerobot" kind; vla_jax.data loads it lazily)

    data, model = config.data, config.model
    data_dir = os.path.abspath(os.path.expanduser(str(data.data_dir)))
    prepared_dir = _resolve(data.get("prepared_dir", "prepared"), data_dir)
    datasets = {}
    for name, d in data.datasets.items():
        kind = str(d.kind)
        if kind not in SPEC_KINDS:
            raise DataError(f"dataset '{name}': config.data.datasets.{name}.kind={kind!r} must be one of "
                            f"{sorted(SPEC_KINDS)}")
        spec = get_spec(str(d.spec), name)
        if spec.kind != SPEC_KINDS[kind]:
            raise DataError(f"dataset '{name}': spec '{spec.name}' is a {spec.kind} spec but kind is {kind!r}")
        grounding = bool(d.get("grounding", False))
        if grounding and getattr(spec, "grounding_key", None) is None:
            raise DataError(f"dataset '{name}': config.data.datasets.{name}.grounding=True but spec '{spec.name}' "
                            "records no grounding text (grounding_key); set grounding=False")
        datasets[name] = DatasetSettings(
            name=name,
            kind=kind,
            dir=_resolve(d.dir, data_dir),
            prepared=os.path.join(prepared_dir, name) if kind in PREPARED_KINDS else None,
            spec=str(d.spec),
            train_split=str(d.get("train_split", "train")),
            eval_split=str(d.get("eval_split", "val")),
            norm_group=str(d.get("norm_group", "") or name),
            grounding=grounding,
        )
    mixture = {}
    for name, weight in data.mixture.items():
        if name not in datasets:
            raise DataError(
                f"dataset '{name}' in config.data.mixture is not defined in config.data.datasets "
                f"(defined: {sorted(datasets)})"
            )
        weight = float(weight)
        if weight < 0 or not math.isfinite(weight):
            raise DataError(f"dataset '{name}': mixture weight {weight} must be finite and >= 0")
        mixture[name] = weight
    if sum(mixture.values()) <= 0:
        raise DataError(f"config.data.mixture weights {dict(mixture)} sum to zero; give at least one dataset a weight > 0")
    mixture_size = sum(w > 0 for w in mixture.values())
    missing = {n: datasets[n].dir for n, w in mixture.items() if w > 0 and not os.path.exists(datasets[n].dir)}
    dropped = {}
    if missing and bool(data.get("drop_missing", False)):
        if len(missing) == mixture_size:
            raise DataError(f"config.data.drop_missing: every dataset of config.data.mixture is missing on disk "
                            f"({', '.join(missing)} under {data_dir}); nothing left to train on")
        dropped, missing = missing, {}
        mixture = {n: w for n, w in mixture.items() if n not in dropped}
        datasets = {n: d for n, d in datasets.items() if n not in dropped}
    dims = Dims(
        num_cameras=int(model.num_cameras),
        image_size=int(model.image_size),
        max_text_len=int(model.max_text_len),
        action_horizon=int(model.action_horizon),
        max_action_dim=int(model.max_action_dim),
        max_state_dim=int(model.max_state_dim),
    )
    return DataSettings(
        data_dir=data_dir,
        tokenizer=_resolve(data.tokenizer, data_dir),
        stats_dir=_resolve(data.stats_dir, data_dir),
        datasets=datasets,
        mixture=mixture,
        balance_by_size=bool(data.balance_by_size),
        num_workers=int(data.num_workers),
        worker_buffer_size=int(data.worker_buffer_size),
        read_threads=int(data.read_threads),
        seed=int(data.seed),
        train_ops=tuple(data.train_ops),
        eval_ops=tuple(data.eval_ops),
        dims=dims,
        vocab_size=int(model.vocab_size),
        action_head=str(model.action_head),
        batch_size=int(config.batch_size),
        required_tokens=tuple(addons.required_tokens(model).items()),
        prompt_format=check_prompt_format(str(data.get("prompt_format", "plain"))),
        exact_vocab=bool(model.get("openpi_semantics", False)),
        missing=missing,
        dropped=dropped,
        mixture_size=mixture_size,
    )


def check_on_disk(settings: DataSettings) -> None:
    """One line naming every dataset of the mixture whose directory does not exist (all of them, not just
    the first), unless ``config.data.drop_missing`` left them out (:func:`dropped_line`)."""
    if settings.missing:
        listed = ", ".join(f"'{n}' ({d})" for n, d in settings.missing.items())
        raise DataError(
            f"{len(settings.missing)} of {settings.mixture_size} datasets of config.data.mixture missing on disk: "
            f"{listed}; generate them (python tools/generate_data.py --out_dir DIR), download them "
            "(docs/data.md) or point config.data at them, or set config.data.drop_missing=True to leave them "
            "out (weights renormalized over the rest)")


def dropped_line(settings: DataSettings) -> str:
    """What ``config.data.drop_missing`` left out, as one line ("" if nothing)."""
    if not settings.dropped:
        return ""
    kept = settings.mixture_size - len(settings.dropped)
    return (f"config.data.drop_missing: left out {len(settings.dropped)} of {settings.mixture_size} datasets "
            f"missing on disk ({', '.join(settings.dropped)}); weights renormalized over the other {kept}")
