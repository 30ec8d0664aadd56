"""Config plumbing: big_vision-style ``get_config(arg)`` arguments and clear command-line errors."""

from __future__ import annotations

import ast
import importlib.util
import pathlib
import sys

import ml_collections
from absl import flags
from ml_collections import config_flags


class ConfigError(ValueError):
    """A bad config file, preset, key or value. Its message is one line naming the field and the fix."""


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
    """Parses ``"debug,head=discrete"`` into ``{size: debug, head: discrete}`` over ``defaults``.

    A bare first word sets the first default (``size``). Values are cast to the default's type.
    """
    out = dict(defaults)
    for i, part in enumerate(p for p in (arg or "").split(",") if p):
        key, sep, value = part.partition("=")
        if not sep:
            key, value = next(iter(defaults)), part if i == 0 else None
            if value is None:
                raise ConfigError(f"config argument {part!r} must look like key=value")
        if key not in defaults:
            raise ConfigError(f"unknown config argument {key!r}; known: {', '.join(defaults)}")
        kind = type(defaults[key])
        out[key] = value.lower() in ("1", "true", "yes") if kind is bool else kind(value)
    return ml_collections.ConfigDict(out)


def dotted(values: dict) -> ml_collections.ConfigDict:
    """A ConfigDict whose keys may be dotted paths (``{"data.mixture.x": 0.0}``): a sweep's overrides."""
    return ml_collections.ConfigDict(values, allow_dotted_keys=True)


def parse_call(text: str, where: str) -> tuple[str, tuple, dict]:
    """``"name(1, k=(2, 3))"`` -> ("name", (1,), {"k": (2, 3)}); arguments are Python literals.
    Raises ConfigError naming ``where`` (e.g. "config.data.train_ops") on anything else."""
    try:
        node = ast.parse(text.strip(), mode="eval").body
        if isinstance(node, ast.Name):
            return node.id, (), {}
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            args = tuple(ast.literal_eval(a) for a in node.args)
            kwargs = {k.arg: ast.literal_eval(k.value) for k in node.keywords}
            return node.func.id, args, kwargs
    except (SyntaxError, ValueError) as e:
        raise ConfigError(f"cannot parse {text!r} in {where}: {e}") from None
    raise ConfigError(f"cannot parse {text!r} in {where}; expected name or name(literal args)")


def load_sibling(path: str | pathlib.Path, name: str):
    """Imports ``name``.py that sits next to the config file ``path`` (configs/ is not a package)."""
    file = pathlib.Path(path).with_name(f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"vla_jax_configs_{name}", file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_config(spec: str, overrides: dict | None = None) -> ml_collections.ConfigDict:
    """Loads ``path.py[:arg]`` and applies ``{"a.b": value}`` overrides, raising ConfigError on bad keys."""
    path, _, arg = spec.partition(":")
    if not pathlib.Path(path).is_file():
        raise ConfigError(f"config file {path!r} does not exist")
    module = load_sibling(path, pathlib.Path(path).stem)
    config = module.get_config(arg or None)
    for key, value in (overrides or {}).items():
        _set(config, key, value)
    return config


def _set(config: ml_collections.ConfigDict, dotted: str, value) -> None:
    *parents, leaf = dotted.split(".")
    node = config
    for p in parents:
        if p not in node:
            raise ConfigError(f"unknown config key 'config.{dotted}' (no '{p}')")
        node = node[p]
    if leaf not in node:
        raise ConfigError(f"unknown config key 'config.{dotted}'")
    try:
        node[leaf] = value
    except (TypeError, ValueError) as e:
        raise ConfigError(f"config.{dotted}={value!r}: {e}") from None


def _unquote(text: str) -> str:
    """``text`` without quotes that wrap all of it (``"'key'"`` -> ``key``); quotes inside stay."""
    while len(text) > 1 and text[0] == text[-1] and text[0] in "'\"":
        text = text[1:-1].strip()
    return text


def _config_file_error() -> str | None:
    """The one-line error of a config-file flag whose file failed to load, else None (ml_collections
    defers that error, with a traceback, to the config's first use)."""
    for name in flags.FLAGS:
        try:
            getattr(flags.FLAGS[name].value, "keys", None)  # a config that failed to load raises on any attribute
        except OSError as e:
            path = config_flags.get_config_filename(flags.FLAGS[name]).partition(":")[0]
            if not pathlib.Path(path).is_file():
                return f"config file {path!r} (--{name}) does not exist"
            return f"config file {path!r} (--{name}) cannot be loaded: {str(e).strip().splitlines()[-1].strip()}"
    return None


def flags_parser(argv: list[str]) -> list[str]:
    """``absl.app.run(main, flags_parser=flags_parser)``: flag errors exit with one readable line."""
    try:
        rest = flags.FLAGS(argv)
    except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as e:
        lines = [ln.strip() for ln in str(e).replace("\\n", "\n").replace("\\'", "'").splitlines() if ln.strip()]
        msg = _unquote(lines[-1]) if "Traceback" in str(e) else _unquote(" ".join(lines))
        msg = msg.split("Error: ", 1)[-1] if "Traceback" in str(e) else msg
        if isinstance(e, (AttributeError, KeyError)):
            msg = "unknown config key: " + msg.replace("'", "").replace('"', "'")
        print(f"error: {msg}", file=sys.stderr)
        sys.exit(2)
    error = _config_file_error()
    if error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    return rest
