"""Action-sampling latency (batch 1, 10 flow steps) for JAX (jit), PyTorch and onnxruntime, and the speed-up
of the prefix KV cache over naive re-encoding (JAX ``sample_actions`` vs ``sample_actions_naive``).

    python benchmarks/inference.py                                       # debug and small presets
    python benchmarks/inference.py --config=configs/pretrain.py:debug --write_docs

All runtimes compute in float32 on the CPU (the ``small`` preset trains in bfloat16; CPU kernels are fastest
in float32, and the ONNX graph is float32). Parameters are random (latency does not depend on the values).
Timings are the median of ``--repeats`` calls after one warm-up call (which includes jit compilation / the
ONNX session's graph optimization); the spread (min-max) is printed too. ``--write_docs`` puts the table
into docs/performance.md under its "## Inference" heading.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# PyTorch's OpenMP threads spin-wait by default; on a CPU shared with other jobs that stalls every op
# (measured here: 2 threads 1.6-6 s per sample vs 37 ms with 1 thread). PASSIVE makes idle threads sleep.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
from conditions import LoadWatch, machine, write_section  # noqa: E402

SECTION = "## Inference"


def random_params(cfg, seed: int = 0):
    """Random params with the tree of model.init (eval_shape: nothing allocated twice, nothing compiled)."""
    import flax.linen as nn
    import jax

    from vla_jax.models import summary

    shapes = nn.unbox(summary.param_shapes(cfg))
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: (rng.standard_normal(s.shape, np.float32) * (s.shape[-1] ** -0.5)), shapes)


def timeit(fn, repeats: int) -> tuple[float, float, float, float]:
    """(first call s, median s, min s, max s)."""
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return first, statistics.median(times), min(times), max(times)


def bench(spec: str, repeats: int, naive_repeats: int, num_steps: int, log=print) -> dict:
    import jax
    import torch

    from vla_jax.config import load_config
    from vla_jax.export import parity, to_onnx, to_torch
    from vla_jax.export import torch_port as tp
    from vla_jax.models import vla

    config = load_config(spec)
    cfg = parity.with_dtype(vla.make_config(config.model), "float32")
    if cfg.action_head != "flow":
        raise SystemExit(f"{spec}: the latency table is for the flow head (10 Euler steps)")
    model = vla.VLA(cfg)
    params = random_params(cfg)
    n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))
    inputs = parity.make_inputs(cfg, 1, seed=0)
    obs = {k: inputs[k] for k in parity.OBS_KEYS}
    row = {"preset": config.preset, "params": n_params, "prefix_tokens": cfg.num_cameras * cfg.vit.num_patches
           + cfg.max_text_len, "suffix_tokens": 1 + cfg.action_horizon}
    log(f"[{config.preset}] {n_params / 1e6:.1f}M params, prefix {row['prefix_tokens']} tokens, "
        f"suffix {row['suffix_tokens']} tokens, {num_steps} steps, batch 1")

    cached = jax.jit(lambda p, o, n: vla.sample_actions(model, p, o, n, num_steps))
    naive = jax.jit(lambda p, o, n: vla.sample_actions_naive(model, p, o, n, num_steps))
    dparams = jax.device_put(params)
    row["jax"] = timeit(lambda: cached(dparams, obs, inputs["noise"]).block_until_ready(), repeats)
    log(f"  jax (KV cache)    {fmt(row['jax'])}")
    row["jax_naive"] = timeit(lambda: naive(dparams, obs, inputs["noise"]).block_until_ready(), naive_repeats)
    log(f"  jax (re-encode)   {fmt(row['jax_naive'])}")
    ref = np.asarray(cached(dparams, obs, inputs["noise"]))

    policy = tp.VLAPolicy(to_torch.config_to_dict(cfg), dtype=torch.float32)
    policy.load_state_dict(to_torch.torch_state_dict(params, cfg))
    policy.eval().requires_grad_(False)
    del dparams
    row["torch"] = timeit(lambda: policy.sample_actions(**obs, noise=inputs["noise"], num_steps=num_steps), repeats)
    log(f"  pytorch           {fmt(row['torch'])}")
    diff_torch = np.abs(policy.sample_actions(**obs, noise=inputs["noise"], num_steps=num_steps).numpy() - ref).max()

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "policy.onnx")
        t0 = time.perf_counter()
        to_onnx.export_onnx(policy, path, num_steps=num_steps)
        row["onnx_export_s"] = time.perf_counter() - t0
        del policy
        session = to_onnx.onnx_session(path)
        row["onnx"] = timeit(lambda: to_onnx.run_onnx(session, inputs), repeats)
        log(f"  onnxruntime       {fmt(row['onnx'])} (export {row['onnx_export_s']:.0f}s)")
        diff_onnx = np.abs(to_onnx.run_onnx(session, inputs) - ref).max()
    row["parity"] = (float(diff_torch), float(diff_onnx))
    log(f"  max abs diff vs JAX: pytorch {diff_torch:.1e}, onnxruntime {diff_onnx:.1e}")
    return row


def fmt(t) -> str:
    return f"{t[1] * 1e3:8.1f} ms (min {t[2] * 1e3:.1f}, max {t[3] * 1e3:.1f}; first call {t[0]:.1f} s)"


def table(rows: list[dict], num_steps: int) -> str:
    lines = [f"Action-sampling latency, batch 1, {num_steps} flow steps, float32, median (ms):", "",
             "| preset | params | prefix / suffix tokens | JAX jit (KV cache) | JAX jit (re-encode every step) "
             "| KV-cache speed-up | PyTorch | onnxruntime | max abs diff vs JAX (PyTorch / ORT) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['preset']} | {r['params'] / 1e6:.1f}M | {r['prefix_tokens']} / {r['suffix_tokens']} "
            f"| {r['jax'][1] * 1e3:.1f} | {r['jax_naive'][1] * 1e3:.1f} | {r['jax_naive'][1] / r['jax'][1]:.1f}x "
            f"| {r['torch'][1] * 1e3:.1f} | {r['onnx'][1] * 1e3:.1f} | {r['parity'][0]:.1e} / {r['parity'][1]:.1e} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", action="append", help="config spec(s); default: the debug and small presets")
    p.add_argument("--repeats", type=int, default=None, help="timed calls per runtime (default 20 debug, 5 else)")
    p.add_argument("--naive_repeats", type=int, default=None, help="timed calls of the re-encoding sampler")
    p.add_argument("--num_steps", type=int, default=10)
    p.add_argument("--torch_threads", type=int, default=None, help="torch.set_num_threads (default: all cores)")
    p.add_argument("--write_docs", action="store_true", help="write the table into docs/performance.md")
    args = p.parse_args(argv)
    if args.torch_threads:
        import torch

        torch.set_num_threads(args.torch_threads)
    specs = args.config or [f"{ROOT}/configs/pretrain.py:debug", f"{ROOT}/configs/pretrain.py:small"]
    load = LoadWatch()
    rows = []
    for spec in specs:
        small = spec.endswith(":debug") or ":debug," in spec or spec.endswith("pretrain.py")
        repeats = args.repeats or (20 if small else 5)
        rows.append(bench(spec, repeats, args.naive_repeats or max(2, repeats // 4), args.num_steps))
        load.sample()
    text = table(rows, args.num_steps)
    import torch

    where = (f"{machine('torch', 'onnxruntime')} (torch: {torch.get_num_threads()} threads, OMP_WAIT_POLICY="
             f"{os.environ.get('OMP_WAIT_POLICY')}), {load.describe()}")
    print()
    print(text)
    print(f"\nmachine: {where}")
    if args.write_docs:
        section = (f"{SECTION}\n\nMeasured with `python benchmarks/inference.py --write_docs` on a {where}. "
                   "Random float32 parameters; median of repeated calls after a warm-up call (jit compile / "
                   "session setup excluded). The KV-cache speed-up is JAX `sample_actions` (prefix encoded "
                   "once, each Euler step runs only the state + action tokens against the cache) over "
                   "`sample_actions_naive` (prefix + suffix re-encoded every step).\n\n" + text + "\n")
        write_section(SECTION, section)
        print("wrote docs/performance.md")


if __name__ == "__main__":
    main()
