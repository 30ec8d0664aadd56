"""Convert a TFRecord TFDS dataset (as Open X-Embodiment releases are) to array_record, without Beam or TF.

The pipeline needs random access, i.e. array_record files. ``tfds convert_format`` does this too but
(tfds 4.9.10) needs ``apache_beam`` installed. This converter copies each TFRecord shard's serialized
examples unchanged into an array_record shard of the same name and record count, and rewrites
``dataset_info.json``'s file format; features, splits and shard lengths stay as they are.

    python -m vla_jax.data.convert --src ~/tensorflow_datasets/bridge_dataset/1.0.0 \\
        --out data/oxe/bridge_dataset/1.0.0
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import struct
import uuid

from vla_jax.data.errors import DataError
from vla_jax.data.sources import resolve_dataset_dir


def read_tfrecord(path: str):
    """Yields the records of a TFRecord file (length-prefixed framing; CRCs are not verified)."""
    with open(path, "rb") as f:
        while True:
            header = f.read(12)
            if not header:
                return
            if len(header) < 12:
                raise DataError(f"{path}: truncated TFRecord header")
            (length,) = struct.unpack("<Q", header[:8])
            data = f.read(length)
            if len(data) < length or len(f.read(4)) < 4:
                raise DataError(f"{path}: truncated TFRecord record")
            yield data


def convert_to_array_record(src: str, out: str, log=print) -> str:
    """Converts the versioned TFDS directory ``src`` (TFRecord) into ``out`` (array_record); returns ``out``."""
    from array_record.python.array_record_module import ArrayRecordWriter

    src = resolve_dataset_dir(src, os.path.basename(os.path.dirname(os.path.abspath(src))) or src)
    with open(os.path.join(src, "dataset_info.json")) as f:
        info = json.load(f)
    if info.get("fileFormat", "tfrecord") != "tfrecord":
        raise DataError(f"{src} is stored as {info.get('fileFormat')}, not tfrecord; nothing to convert")
    shards = sorted(glob.glob(os.path.join(src, "*.tfrecord-*")))
    if not shards:
        raise DataError(f"{src} has no *.tfrecord-* shards")
    if os.path.exists(out):
        raise DataError(f"{out} already exists; remove it or choose another --out")
    tmp = f"{out.rstrip('/')}.tmp-{uuid.uuid4().hex[:8]}"
    os.makedirs(tmp)
    try:
        total = 0
        for shard in shards:
            name = os.path.basename(shard).replace(".tfrecord-", ".array_record-")
            writer = ArrayRecordWriter(os.path.join(tmp, name), "group_size:1")
            count = 0
            for record in read_tfrecord(shard):
                writer.write(record)
                count += 1
            writer.close()
            total += count
            log(f"[convert] {os.path.basename(shard)} -> {name}: {count} records")
        for path in glob.glob(os.path.join(src, "*")):
            if ".tfrecord-" not in os.path.basename(path) and os.path.basename(path) != "dataset_info.json":
                (shutil.copytree if os.path.isdir(path) else shutil.copy)(path, os.path.join(tmp, os.path.basename(path)))
        info["fileFormat"] = "array_record"
        with open(os.path.join(tmp, "dataset_info.json"), "w") as f:
            json.dump(info, f, indent=2)
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        os.rename(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log(f"[convert] wrote {out} ({total} records)")
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--src", required=True, help="versioned TFDS dir with *.tfrecord-* shards")
    p.add_argument("--out", required=True, help="new versioned dir, e.g. data/oxe/bridge_dataset/1.0.0")
    a = p.parse_args(argv)
    try:
        convert_to_array_record(a.src, a.out)
    except DataError as e:
        raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
    main()
