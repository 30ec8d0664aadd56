"""openpi's wire format: msgpack, numpy arrays and scalars as tagged maps (``openpi_client.msgpack_numpy``).

An array travels as ``{b"__ndarray__": True, b"data": raw bytes, b"dtype": dtype.str, b"shape": shape}``, a numpy
scalar as ``{b"__npgeneric__": True, b"data": value, b"dtype": dtype.str}``; everything else is plain msgpack.
Decoding builds arrays from raw bytes only (``np.frombuffer``): bool, integer and float dtypes, the byte count
checked against the shape. Nothing is ever unpickled.
"""

from __future__ import annotations

import math
from typing import Any

import msgpack
import numpy as np

NDARRAY, NPGENERIC = b"__ndarray__", b"__npgeneric__"
DTYPE_KINDS = "biuf"  # bool, signed / unsigned integers, floats
MAX_DIMS = 8


class ProtocolError(ValueError):
    """A frame that is not a valid message; the text is one line."""


def _encode(obj: Any) -> Any:
    if isinstance(obj, (np.ndarray, np.generic)) and obj.dtype.kind not in DTYPE_KINDS:
        raise TypeError(f"cannot send dtype {obj.dtype}")
    if isinstance(obj, np.ndarray):
        return {NDARRAY: True, b"data": np.ascontiguousarray(obj).tobytes(), b"dtype": obj.dtype.str,
                b"shape": list(obj.shape)}
    if isinstance(obj, np.generic):
        return {NPGENERIC: True, b"data": obj.item(), b"dtype": obj.dtype.str}
    raise TypeError(f"cannot send {type(obj).__name__}")


def pack(obj: Any) -> bytes:
    """msgpack bytes of ``obj`` (dicts, lists, str, numbers, None, numpy arrays and scalars)."""
    return msgpack.packb(obj, default=_encode, use_bin_type=True)


def _dtype(value: Any) -> np.dtype:
    if not isinstance(value, str):
        raise ProtocolError("array dtype must be a string such as '<f4'")
    try:
        dtype = np.dtype(value)
    except TypeError:
        raise ProtocolError(f"unknown array dtype {value!r}") from None
    if dtype.kind not in DTYPE_KINDS or dtype.fields is not None or dtype.subdtype is not None:
        raise ProtocolError(f"array dtype {value!r} is not bool, integer or float")
    return dtype


def _decode(obj: dict) -> Any:
    if NDARRAY in obj:
        dtype, shape, data = _dtype(obj.get(b"dtype")), obj.get(b"shape"), obj.get(b"data")
        if (not isinstance(shape, (list, tuple)) or len(shape) > MAX_DIMS
                or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape)):
            raise ProtocolError(f"array shape {shape!r} is not a list of at most {MAX_DIMS} sizes")
        if not isinstance(data, bytes) or len(data) != math.prod(shape) * dtype.itemsize:
            size = len(data) if isinstance(data, bytes) else type(data).__name__
            raise ProtocolError(f"array data ({size} bytes) does not match shape {list(shape)} of {dtype.str}")
        return np.frombuffer(data, dtype).reshape(shape)
    if NPGENERIC in obj:
        dtype, data = _dtype(obj.get(b"dtype")), obj.get(b"data")
        if not isinstance(data, (bool, int, float)):
            raise ProtocolError(f"numpy scalar data {type(data).__name__} is not a number")
        try:
            return dtype.type(data)
        except (OverflowError, ValueError):
            raise ProtocolError(f"numpy scalar {data!r} does not fit {dtype.str}") from None
    return obj


def unpack(data: bytes) -> Any:
    """The object in a msgpack frame; ProtocolError (one line) for anything malformed."""
    try:
        return msgpack.unpackb(data, object_hook=_decode, raw=False, strict_map_key=True)
    except ProtocolError:
        raise
    except Exception as e:  # noqa: BLE001 - msgpack raises several types for corrupt input
        raise ProtocolError(f"not a msgpack message ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else e})"
                            ) from None
