"""Checks vla_jax against an openpi reference fixture: converts its parameters as tools/import_openpi.py does,
runs the pi0 core with ``openpi_semantics`` in JAX, in the exported PyTorch port or in onnxruntime, and prints
one line per output (max abs and relative diff).

    python tools/check_parity.py --fixture=../shared/fixtures/openpi/pi0_dummy.npz [--backend=jax|torch|onnx]

Exit 0 when every output is within tolerance (JAX 1e-5 absolute, PyTorch / ONNX 1e-4; the loss 1e-4
relative), 1 when one is not, 2 (one line on stderr) when the fixture cannot be converted.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from vla_jax.extras import needs_extras  # noqa: E402
os.environ.setdefault("JAX_PLATFORMS", "cpu")


@needs_extras
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--fixture", required=True, help="openpi fixture .npz (param/..., in/..., out/...)")
    p.add_argument("--backend", default="jax", choices=("jax", "torch", "onnx"),
                   help="jax: the vla_jax model; torch: the exported PyTorch port; onnx: its graphs in onnxruntime")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    from vla_jax.config import ConfigError
    from vla_jax.interop.openpi import OpenpiError, check_fixture

    try:
        diffs = check_fixture(args.fixture, args.backend)
    except (OpenpiError, ConfigError) as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 2
    for d in diffs:
        print(d.format(), flush=True)
    bad = [d.name for d in diffs if not d.ok]
    print(f"parity: {'FAIL (' + ', '.join(bad) + ')' if bad else 'ok'} ({len(diffs)} outputs, {args.backend})",
          flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
