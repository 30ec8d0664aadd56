"""Compiles the real training step for a TPU slice on this machine (no TPU needed) and prints
per-device memory, FLOPs and the compiler's step-time estimate.

    JAX_PLATFORMS=cpu python tools/aot_compile.py --config=configs/pretrain.py:pi0 --topology=v5p:4x4x4 \
        --config.mesh.shape.data=1 --config.mesh.shape.fsdp=-1 --config.sharding=fsdp
"""

from vla_jax.platform import jax_defaults

jax_defaults()

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from vla_jax.config import flags_parser  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file[:arg].", lock_config=True)
_TOPOLOGY = flags.DEFINE_string("topology", "v5p:2x2x2", "[platform:]topology, e.g. v5p:4x4x4.")


def main(argv):
    del argv
    from vla_jax.train.aot import TopologyError, compile_report
    from vla_jax.train.sharding import ShardingError

    try:
        report = compile_report(_CONFIG.value, _TOPOLOGY.value)
    except (TopologyError, ShardingError) as e:
        raise SystemExit(f"error: {e}")
    print(report.table())


if __name__ == "__main__":
    app.run(main, flags_parser=flags_parser)
