"""Column expressions: how a standardization spec builds state, action and instruction from a step's keys.

Each entry of ``RobotSpec.state_keys`` / ``action_keys`` (and ``instruction_key``) is an expression over
the raw step features of one episode:

==========================  =========================================================================
``observation/state``       a step key (``/`` for nesting, as TFDS flattens feature names): all its values
``action[0:6]``             a slice of the key's last axis (Python semantics, negative indices allowed)
``zeros(3)``, ``ones(1)``   constant columns of that width
``fn(expr)``                a named conversion from :data:`COLUMN_FNS` applied to ``expr``
==========================  =========================================================================

The entries' columns are concatenated in order. Conversions are row-wise (computed for the requested
steps only) or episode-wide (they look along the whole episode, e.g. relative -> absolute gripper
commands; the episode's column is converted, then the requested steps are taken). Text conversions
turn one step's values into the instruction string.

Evaluation reads raw values through ``column(key)``: the flat value list of step key ``key`` over the
whole episode (floats or ints, ``num_steps * width`` of them, or one ``bytes`` per step).
"""

from __future__ import annotations

import dataclasses
import functools
import re
import zlib
from typing import Callable, Sequence

import numpy as np

from vla_jax.data.errors import DataError

Column = Callable[[str], Sequence]  # step key -> flat raw values over the episode

ROWS, EPISODE, TEXT = "rows", "episode", "text"


@dataclasses.dataclass(frozen=True)
class ColumnFn:
    """A named conversion: ``fn`` maps a [T, d] array (or, for ``zlib_float32``, T byte strings) to [T, d'];
    text conversions map one step's [1, d] values to a string."""

    fn: Callable
    scope: str  # ROWS | EPISODE | TEXT
    doc: str


COLUMN_FNS: dict[str, ColumnFn] = {}


def register_column_fn(name: str, scope: str, doc: str):
    """Decorator adding a conversion to :data:`COLUMN_FNS` under ``name``."""

    def wrap(fn):
        COLUMN_FNS[name] = ColumnFn(fn, scope, doc)
        return fn

    return wrap


@register_column_fn("invert_gripper", ROWS, "1 - x (Octo's invert_gripper_actions)")
def _invert(x: np.ndarray) -> np.ndarray:
    return 1.0 - x


@register_column_fn("clip01", ROWS, "x clipped to [0, 1]")
def _clip01(x: np.ndarray) -> np.ndarray:
    return np.clip(x, 0.0, 1.0)


@register_column_fn("euler_from_quat", ROWS,
                    "quaternion (x, y, z, w) -> roll, pitch, yaw (tensorflow_graphics euler.from_quaternion "
                    "away from gimbal lock)")
def _euler_from_quat(q: np.ndarray) -> np.ndarray:
    if q.shape[-1] != 4:
        raise DataError(f"euler_from_quat needs 4 values (x, y, z, w) per step, got {q.shape[-1]}")
    x, y, z, w = (q[:, i].astype(np.float64) for i in range(4))
    r00 = 1.0 - 2.0 * (y * y + z * z)
    r10 = 2.0 * (x * y + w * z)
    r20 = 2.0 * (x * z - w * y)
    r21 = 2.0 * (y * z + w * x)
    r22 = 1.0 - 2.0 * (x * x + y * y)
    roll = np.arctan2(r21, r22)
    pitch = -np.arcsin(np.clip(r20, -1.0, 1.0))
    yaw = np.arctan2(r10, r00)
    return np.stack([roll, pitch, yaw], axis=-1).astype(np.float32)


@register_column_fn("zlib_float32", ROWS,
                    "per step, zlib-compressed float32 bytes (TFDS Tensor(encoding='zlib')) -> floats")
def _zlib_float32(values: np.ndarray) -> np.ndarray:
    if values.dtype != object:
        raise DataError("zlib_float32 needs a bytes key (a TFDS Tensor stored with encoding='zlib')")
    return np.stack([np.frombuffer(zlib.decompress(v), np.float32) for v in values]).astype(np.float32)


@register_column_fn("rel2abs_gripper", EPISODE,
                    "relative gripper commands (+1 close, -1 open, 0 keep) -> absolute (1 open, 0 closed), "
                    "Octo's rel2abs_gripper_actions")
def _rel2abs_gripper(x: np.ndarray) -> np.ndarray:
    commands = np.where(x[:, 0] < -0.1, 1, np.where(x[:, 0] > 0.1, -1, 0))  # +1 open, -1 close, 0 keep
    nonzero = np.flatnonzero(commands)
    state = -commands[nonzero[0]] if len(nonzero) else 1  # before the first command: its opposite; else open
    out = np.empty(len(commands), np.float32)
    for i, c in enumerate(commands):
        state = c if c else state
        out[i] = state / 2 + 0.5
    return out[:, None]


@register_column_fn("binarize_gripper", EPISODE,
                    "continuous gripper in [0, 1] -> 0 / 1; values between 0.05 and 0.95 take the next "
                    "settled value (Octo's binarize_gripper_actions)")
def _binarize_gripper(x: np.ndarray) -> np.ndarray:
    values = x[:, 0]
    out = np.empty(len(values), np.float32)
    carry = float(values[-1]) if len(values) else 0.0
    for i in range(len(values) - 1, -1, -1):
        if values[i] > 0.95 or values[i] < 0.05:
            carry = float(values[i] > 0.95)
        out[i] = carry
    return out[:, None]


@register_column_fn("text_from_codes", TEXT,
                    "int code points padded with 0 -> string (language_table's observation/instruction)")
def _text_from_codes(codes: np.ndarray) -> str:
    row = codes.reshape(-1).astype(np.int64)
    end = np.flatnonzero(row == 0)
    return "".join(map(chr, row[: end[0] if len(end) else len(row)]))


# ----------------------------------------------------------------------------- parsing

_KEY = re.compile(r"^([A-Za-z0-9_.\-]+(?:/[A-Za-z0-9_.\-]+)*)(?:\[(-?\d*):(-?\d*)\])?$")
_CALL = re.compile(r"^([a-z_][a-z0-9_]*)\((.*)\)$")
_CONSTANTS = {"zeros": 0.0, "ones": 1.0}


@dataclasses.dataclass(frozen=True)
class Key:
    path: str
    start: int | None = None  # slice of the last axis; None, None = all values
    stop: int | None = None


@dataclasses.dataclass(frozen=True)
class Const:
    value: float
    width: int


@dataclasses.dataclass(frozen=True)
class Call:
    fn: str
    arg: object  # Key | Const | Call


@functools.lru_cache(maxsize=None)
def parse(expr: str):
    """Parsed form of one column expression; one-line :class:`DataError` if it is not valid."""
    text = expr.replace(" ", "")
    call = _CALL.match(text)
    if call:
        name, inner = call.groups()
        if name in _CONSTANTS:
            if not inner.isdigit() or int(inner) == 0:
                raise DataError(f"column expression {expr!r}: {name}(N) needs a width N >= 1")
            return Const(_CONSTANTS[name], int(inner))
        if name not in COLUMN_FNS:
            raise DataError(f"column expression {expr!r}: unknown conversion {name!r}; known: "
                            f"{', '.join(sorted(COLUMN_FNS))}, zeros(N), ones(N)")
        return Call(name, parse(inner))
    key = _KEY.match(text)
    if not key:
        raise DataError(f"column expression {expr!r} is not a step key, key[a:b], zeros(N), ones(N) or fn(expr)")
    path, start, stop = key.groups()
    return Key(path, int(start) if start else None, int(stop) if stop else None)


def keys(expr: str) -> list[Key]:
    """The step keys (with their slices) an expression reads."""
    node = parse(expr)
    while isinstance(node, Call):
        node = node.arg
    return [node] if isinstance(node, Key) else []


def check(exprs: Sequence[str], *, text: bool = False) -> None:
    """Parses ``exprs`` (one-line :class:`DataError` if one is bad). ``text``: they are instructions, i.e. a
    text key or a text conversion of numbers; text conversions appear nowhere else."""
    text_fns = ", ".join(n for n, f in COLUMN_FNS.items() if f.scope == TEXT)
    for expr in exprs:
        node = parse(expr)
        if text and (isinstance(node, Const) or isinstance(node, Call) and COLUMN_FNS[node.fn].scope != TEXT):
            raise DataError(f"instruction {expr!r} must be a text step key or a text conversion ({text_fns})")
        node = node.arg if text and isinstance(node, Call) else node
        while isinstance(node, Call):
            if COLUMN_FNS[node.fn].scope == TEXT:
                raise DataError(f"column expression {expr!r}: {node.fn!r} makes text, usable only as the instruction")
            node = node.arg


# ----------------------------------------------------------------------------- evaluation


def _leaf(node: Key, column: Column, num_steps: int, start: int, stop: int) -> np.ndarray:
    values = column(node.path)
    if len(values) and isinstance(values[0], bytes):
        if len(values) != num_steps:
            raise DataError(f"step key '{node.path}' has {len(values)} byte strings for {num_steps} steps")
        return np.asarray(list(values[start:stop]), dtype=object)
    if num_steps == 0 or len(values) % num_steps:
        raise DataError(f"step key '{node.path}' has {len(values)} values, not a multiple of {num_steps} steps")
    width = len(values) // num_steps
    rows = np.asarray(values[start * width: stop * width], np.float32).reshape(stop - start, width)
    return rows[:, node.start:node.stop]


def _evaluate(node, column: Column, num_steps: int, start: int, stop: int) -> np.ndarray:
    if isinstance(node, Key):
        return _leaf(node, column, num_steps, start, stop)
    if isinstance(node, Const):
        return np.full((stop - start, node.width), node.value, np.float32)
    fn = COLUMN_FNS[node.fn]
    if fn.scope == EPISODE:
        return fn.fn(_evaluate(node.arg, column, num_steps, 0, num_steps))[start:stop]
    return fn.fn(_evaluate(node.arg, column, num_steps, start, stop))


def rows(exprs: Sequence[str], column: Column, num_steps: int, start: int = 0, stop: int | None = None) -> np.ndarray:
    """[stop - start, D] float32: the expressions' columns for steps [start, stop), concatenated."""
    stop = num_steps if stop is None else stop
    parts = []
    for expr in exprs:
        part = _evaluate(parse(expr), column, num_steps, start, stop)
        if part.dtype == object:
            raise DataError(f"column expression {expr!r} reads byte strings; decode them with a conversion "
                            "(e.g. zlib_float32)")
        parts.append(part)
    if not parts:
        return np.zeros((stop - start, 0), np.float32)
    return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=-1)


def text(expr: str, column: Column, num_steps: int, t: int) -> str:
    """The string of step ``t``: a text key's value, or a text conversion of the step's values."""
    node = parse(expr)
    if isinstance(node, Call):
        return COLUMN_FNS[node.fn].fn(_evaluate(node.arg, column, num_steps, t, t + 1))
    value = _leaf(node, column, num_steps, t, t + 1)
    if value.dtype != object:
        raise DataError(f"instruction '{expr}' holds numbers; decode them with a text conversion "
                        f"({', '.join(n for n, f in COLUMN_FNS.items() if f.scope == TEXT)})")
    return value[0].decode("utf-8")
