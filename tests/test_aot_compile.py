"""Ahead-of-time compilation of the train step for a TPU slice, on this CPU-only machine (libtpu compiles)."""

import pytest

from vla_jax.config import load_config
from vla_jax.train.aot import TopologyError, compile_report

pytest.importorskip("libtpu", reason="libtpu is in requirements.txt on Linux x86_64")


def test_debug_step_compiles_for_v5p_slice_with_fsdp():
    config = load_config("configs/pretrain.py:debug,mixture=synthetic",
                         {"mesh.shape.data": 1, "mesh.shape.fsdp": -1, "sharding": "fsdp"})
    report = compile_report(config, "v5p:2x2x2")
    assert report.num_devices == 8 and report.mesh == {"data": 1, "fsdp": 8, "tensor": 1}
    assert report.device_kind.startswith("TPU v5")
    assert report.fits is True
    # State (3.4M params + Adam moments + EMA, float32: ~55 MB) is split 8 ways, apart from small replicated
    # leaves (norms, biases, the conv stem): the arguments per device are well under the full size.
    assert 0 < report.argument_bytes < 3.4e6 * 16 / 3
    assert report.analytic_flops_per_device > 1e8 and report.flops_per_device > 0
    assert "peak / device" in report.table()


def test_bad_topology_is_one_line():
    config = load_config("configs/pretrain.py:debug,mixture=synthetic")
    with pytest.raises(TopologyError, match="v5p:2x2x2") as e:
        compile_report(config, "v5p:3x3x3x3")
    assert "\n" not in str(e.value)


def test_pi05_step_compiles_for_v5p_slice_with_fsdp_and_tensor_parallelism():
    """The pi05 preset (adaptive norms, bfloat16, full remat) at tiny sizes on a (data=2, fsdp=2, tensor=2) mesh."""
    from vla_jax.train import testing

    sizes = {k: v for k, v in testing.TINY.items() if k.startswith("model.")} | {"model.addons": ()}
    config = load_config("configs/pretrain.py:size=pi05,mixture=synthetic",
                         {**sizes, "batch_size": 8, "mesh.shape.data": 2, "mesh.shape.fsdp": 2,
                          "mesh.shape.tensor": 2, "sharding": "fsdp_tp"})
    assert config.model.action_expert == "pi05" and config.model.remat == "full"
    report = compile_report(config, "v5p:2x2x2")
    assert report.mesh == {"data": 2, "fsdp": 2, "tensor": 2} and report.fits is True
    assert report.flops_per_device > 0
