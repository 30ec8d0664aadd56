"""Serialized ``tf.train.Example`` records: parse one, pull out single keys, build one.

TFDS stores every example (an RLDS episode, a web example) as one ``tf.train.Example`` whose
features are flattened to ``a/b/c`` keys; an RLDS episode's step features are ``steps/<key>`` lists
with one entry (or one row) per step. The prepared frame records (vla_jax/data/prepared.py) use the
same message. Parsing uses the protobuf classes bundled with tensorflow-datasets (no TensorFlow).
"""

from __future__ import annotations

import numpy as np
# At import, not in the first parse: grain's read threads parsing their first records at once would each
# start importing tensorflow_datasets, which can deadlock on the import locks.
from tensorflow_datasets.proto import tf_example_pb2

from vla_jax.data.errors import DataError


def parse_record(record: bytes):
    """Parses one serialized example; returns its protobuf feature map (nothing is decoded)."""
    return tf_example_pb2.Example.FromString(record).features.feature


def make_record(ints: dict[str, int], blobs: dict[str, bytes]) -> bytes:
    """Serialized example with one int64 per key of ``ints`` and one bytes value per key of ``blobs``."""
    example = tf_example_pb2.Example()
    feature = example.features.feature
    for key, value in ints.items():
        feature[key].int64_list.value.append(int(value))
    for key, value in blobs.items():
        feature[key].bytes_list.value.append(value)
    return example.SerializeToString(deterministic=True)  # map keys sorted: the same bytes in every process


def feature_list(fmap, key: str, dataset: str):
    """The raw value list of flat feature ``key`` (a float, int64 or bytes repeated field)."""
    if key not in fmap:
        available = ", ".join(sorted(fmap.keys()))
        raise DataError(f"dataset '{dataset}': key '{key}' not found in the records (available: {available})")
    feature = fmap[key]
    kind = feature.WhichOneof("kind")
    if kind is None:
        return []
    return getattr(feature, kind).value


def to_text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)
