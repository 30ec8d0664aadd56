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


@dataclasses.dataclass(frozen=True)
class DatasetSettings:
    name: str
    kind: str  # "robot" | "web"
    dir: str  # resolved path of the source as released (dataset root or versioned directory)
    prepared: str  # resolved path of its prepared copy: <config.data.prepared_dir>/<name> (vla_jax/data/prepared.py)
    spec: str
    train_split: str
    eval_split: str
    norm_group: str  # robot datasets with the same norm_group share combined stats
    grounding: bool  # robot: the prompt is followed by the spec's grounding text as a text-loss answer


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

    def norm_group_members(self, name: str) -> list[str]:
        group = self.datasets[name].norm_group
        return [n for n, d in self.datasets.items() if d.kind == "robot" and d.norm_group == group]


def _resolve(path: str, data_dir: str) -> str:
    path = os.path.expanduser(str(path))
    return path if os.path.isabs(path) or "://" in path else os.path.join(data_dir, path)


def read_settings(config) -> DataSettings:
    data, model = config.data, config.model
    data_dir = os.path.abspath(os.path.expanduser(str(data.data_dir)))
    prepared_dir = _resolve(data.get("prepared_dir", "prepared"), data_dir)
    datasets = {}
    for name, d in data.datasets.items():
        kind = str(d.kind)
        if kind not in ("robot", "web"):
            raise DataError(f"dataset '{name}': config.data.datasets.{name}.kind={kind!r} must be 'robot' or 'web'")
        spec = get_spec(str(d.spec), name)
        if spec.kind != kind:
            raise DataError(f"dataset '{name}': spec '{spec.name}' is a {spec.kind} spec but kind is {kind!r}")
        grounding = bool(d.get("grounding", False))
        if grounding and getattr(spec, "grounding_key", None) is None:
            raise DataError(f"dataset '{name}': config.data.datasets.{name}.grounding=True but spec '{spec.name}' "
                            "records no grounding text (grounding_key); set grounding=False")
        datasets[name] = DatasetSettings(
            name=name,
            kind=kind,
            dir=_resolve(d.dir, data_dir),
            prepared=os.path.join(prepared_dir, name),
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
    )
