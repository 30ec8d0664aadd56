"""Research add-ons to the pi0 core, selected by name in ``config.model.addons``.

Each add-on is one flax module in this package, registered with :func:`register`. It owns its
parameters under its own subtree (``params/<name>/...``) and plugs into the hooks of :class:`Addon`,
which the core model calls at fixed points (see ``docs/architecture.md``). Config entries are op
strings, ``"name"`` or ``"name(k=v, ...)"``, e.g. ``("conv_stem(channels=(16, 32))", "prefix_readout")``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

from vla_jax.config import ConfigError, parse_call
from vla_jax.models.addons.base import Addon

REGISTRY: dict[str, type[Addon]] = {}


def register(name: str):
    """Class decorator: makes an :class:`Addon` subclass selectable as ``name`` in config.model.addons."""

    def wrap(cls: type[Addon]) -> type[Addon]:
        REGISTRY[name] = cls
        return cls

    return wrap


@dataclasses.dataclass(frozen=True)
class AddonSpec:
    """One configured add-on: its registered name and keyword arguments (hashable, so the model config is)."""

    name: str
    kwargs: tuple[tuple[str, Any], ...] = ()

    def build(self, model_cfg, **module_kwargs) -> Addon:
        """The add-on module for the core config ``model_cfg`` (unbound unless ``parent`` is passed)."""
        return REGISTRY[self.name](model=model_cfg, **dict(self.kwargs), **module_kwargs)


def hashable(value):
    """A config value with lists and tuples (nested) as tuples, so an AddonSpec hashes."""
    if isinstance(value, (list, tuple)):
        return tuple(hashable(v) for v in value)
    return value


def parse_specs(texts: Sequence[str]) -> tuple[AddonSpec, ...]:
    """config.model.addons strings -> specs. Raises ConfigError (one line) on unknown names, bad syntax,
    positional arguments or a name given twice."""
    if isinstance(texts, str) or not isinstance(texts, Sequence) or not all(isinstance(t, str) for t in texts):
        raise ConfigError(f"config.model.addons={texts!r} must be a tuple of strings, e.g. "
                          f"(\"conv_stem(channels=(16, 32))\", \"prefix_readout\")")
    specs = []
    for text in texts:
        name, args, kwargs = parse_call(text, "config.model.addons")
        if name not in REGISTRY:
            raise ConfigError(f"unknown add-on {name!r} in config.model.addons; registered: {sorted(REGISTRY)}")
        if args:
            raise ConfigError(f"config.model.addons entry {text!r}: give the arguments by name, e.g. "
                              f"{name}(k=v)")
        if any(s.name == name for s in specs):
            raise ConfigError(f"add-on {name!r} is listed twice in config.model.addons")
        specs.append(AddonSpec(name, tuple(sorted((k, hashable(v)) for k, v in kwargs.items()))))
    return tuple(specs)


def configure(model_cfg, specs: tuple[AddonSpec, ...]):
    """Validates each add-on against the core config and the other add-ons, and lets it adjust the core
    config (e.g. the ViT's input). Returns the final config. Raises ValueError (one line) naming the field."""
    names = tuple(s.name for s in specs)
    for spec in specs:
        try:
            addon = spec.build(model_cfg)
        except TypeError as e:
            fields = [f.name for f in dataclasses.fields(REGISTRY[spec.name]) if f.name not in Addon.CORE_FIELDS]
            raise ConfigError(f"config.model.addons: bad arguments for {spec.name!r} ({e}); it takes "
                              f"{fields}") from None
        model_cfg = addon.configure(names)
    return model_cfg


def loss_names(model_cfg) -> tuple[str, ...]:
    """The loss terms the add-ons of the core config ``model_cfg`` add (keys of config.loss_weights)."""
    return tuple(n for s in model_cfg.addons for n in s.build(model_cfg).losses())


def required_tokens(model) -> dict[str, int]:
    """What the data layer needs from the model config: ``{piece: id}`` for every SentencePiece piece the
    add-ons of ``model`` (config.model, a ConfigDict; only its ``addons`` are read) expect at a fixed vocabulary
    id."""
    out: dict[str, int] = {}
    for spec in parse_specs(model.get("addons", ())):
        out.update(spec.build(None).required_tokens())
    return out


def has(model_cfg, name: str) -> bool:
    """Whether the core config ``model_cfg`` (VLAConfig) uses add-on ``name``."""
    return any(s.name == name for s in model_cfg.addons)


# Every add-on module registers itself on import.
from vla_jax.models.addons import conv_stem, keypoints, location_tokens, prefix_readout  # noqa: E402,F401


def implementing(specs: tuple[AddonSpec, ...], hook: str) -> list[str]:
    """Names of the configured add-ons that override the :class:`Addon` hook ``hook``."""
    return [s.name for s in specs if getattr(REGISTRY[s.name], hook) is not getattr(Addon, hook)]
