"""Policy-server load: N concurrent openpi clients over loopback, dynamic batching on vs off.

    python benchmarks/serve_load.py                                  # debug/torch, debug/jax, tiny/torch; N = 1, 4, 16
    python benchmarks/serve_load.py --runs=debug/onnx --clients=16 --rounds=2 --seconds=3
    python benchmarks/serve_load.py --write_docs                     # the tables into docs/performance.md

Each run is a model and a backend. Models: ``debug`` (the preset) and ``tiny`` (the serving tests' model,
``vla_jax.train.testing.TINY``), each a checkpoint with random float32 parameters, statistics for the tabletop
single arm and a tiny tokenizer. Backends: ``torch`` (the checkpoint's export folder, one thread,
``OMP_WAIT_POLICY=PASSIVE``), ``onnx`` (the same folder), ``jax`` (the checkpoint). Each run is served by two
processes, ``python -m vla_jax.serve --max_batch=16`` (batched) and ``--max_batch=1`` (unbatched), both with
``--max_wait_ms`` (default 50; the wait ends as soon as every connection has a request in, so it only bounds
stragglers). Each of N client threads holds one real openpi-client connection and asks back to back with a
two-camera 96 x 96 tabletop observation, up to ``--requests`` requests or ``--seconds`` seconds; latency is per
request at the client (send to reply decoded), throughput the requests of all clients over the wall time. For
each N the two servers are measured in alternating order (A B, B A, ...) for ``--rounds`` rounds; the table gives
medians over rounds, p50 / p99 over all requests, the median per-round throughput ratio, and the in-process
sampling time of the same backend (``backend.sample``, no server) at batch 1 and at the largest N.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

os.environ.setdefault("JAX_PLATFORMS", "cpu")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
from conditions import LoadWatch, machine, write_section  # noqa: E402

from vla_jax.train import testing  # noqa: E402

SECTION = "## Serving"


TINY = {**{k: v for k, v in testing.TINY.items() if k.startswith("model.")},  # the serving tests' model
        "model.max_action_dim": 8, "model.max_state_dim": 9, "model.max_text_len": 24}
MODELS = {"debug": {}, "tiny": TINY}  # name: overrides of configs/pretrain.py:debug
THREADS = {"torch": 1, "onnx": 1, "jax": None}  # the servers' --threads (PyTorch: 1 thread is faster on 2 cores)


def make_checkpoint(model: str, out: str) -> tuple[str, int]:
    """(workdir, parameter count) of a params-only checkpoint of ``model`` (MODELS) with random parameters,
    tabletop single-arm statistics and a tokenizer."""
    import flax.linen as nn
    import jax

    from vla_jax.config import load_config
    from vla_jax.data.tokenizer import train_tokenizer
    from vla_jax.models import summary, vla
    from vla_jax.train.checkpoint import write_checkpoint

    config = load_config(f"{ROOT}/configs/pretrain.py:debug", {"model.dtype": "float32", **MODELS[model]})
    config.data.data_dir = out
    config.data.tokenizer = "tokenizer.model"
    texts = [f"{v} the {c} {o}" for v in ("pick up", "push", "place") for c in ("red", "green", "blue")
             for o in ("block", "cup", "bowl")]
    train_tokenizer(texts, os.path.join(out, "tokenizer.model"), vocab_size=60, log=lambda *a: None)
    rng = np.random.default_rng(0)
    shapes = nn.unbox(summary.param_shapes(vla.make_config(config.model)))
    params = jax.tree.map(lambda s: rng.standard_normal(s.shape, np.float32) * s.shape[-1] ** -0.5, shapes)

    def block(dim):
        mean, std = rng.normal(size=dim) * 0.01, rng.uniform(0.01, 0.05, dim)
        return {"mean": mean.tolist(), "std": std.tolist(), "q01": (mean - 2 * std).tolist(),
                "q99": (mean + 2 * std).tolist()}

    stats = {"tabletop_single_arm": {"action": block(7), "state": block(8)}}
    workdir = os.path.join(out, f"run_{model}")
    write_checkpoint(workdir, params, config, stats)
    return workdir, sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))


def source(backend: str, workdir: str, folder: str) -> dict:
    return {"workdir": workdir} if backend == "jax" else {"policy": folder}


def in_process_ms(backend: str, src: dict, sizes: tuple[int, ...], repeats: int) -> dict[int, float]:
    """Median ms of one ``backend.sample`` call per batch size (the backend the server runs)."""
    from vla_jax.serve.backends import load_backend
    from vla_jax.serve.robots import get_robot
    from vla_jax.serve.server import PolicyServer

    server = PolicyServer(load_backend(backend, threads=THREADS[backend], **src), get_robot("single_arm"),
                          max_batch=max(sizes))
    example = server.io.example(server.spec.parse(request(0)))
    out = {}
    for size in sizes:
        obs = {k: np.stack([v] * size) for k, v in example.items()}
        noise = np.zeros((size, *server.spec.noise_shape), np.float32)
        server.backend.sample(obs, noise)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            server.backend.sample(obs, noise)
            times.append(time.perf_counter() - t0)
        out[size] = statistics.median(times) * 1000
    return out


def request(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {"observation/image_0": rng.integers(0, 256, (96, 96, 3), dtype=np.uint8),
            "observation/image_1": rng.integers(0, 256, (96, 96, 3), dtype=np.uint8),
            "observation/state": rng.normal(size=8).astype(np.float32), "prompt": "pick up the red block"}


def start_server(backend: str, src: dict, port: int, max_batch: int, max_wait_ms: float,
                 log_path: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "vla_jax.serve", *[f"--{k}={v}" for k, v in src.items()], f"--backend={backend}",
           "--robot=single_arm", f"--port={port}", f"--max_batch={max_batch}", f"--max_wait_ms={max_wait_ms:g}"]
    if THREADS[backend]:
        cmd.append(f"--threads={THREADS[backend]}")
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=open(log_path, "w"))


def wait_healthy(port: int, process: subprocess.Popen, log_path: str, timeout: float = 900) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server on port {port} exited: {open(log_path).read()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                return
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"server on port {port} did not come up in {timeout:.0f}s")


def load(url: str, clients: int, requests: int, seconds: float) -> dict:
    """N clients asking back to back: {"latency_ms": [...], "batch": [...], "seconds": wall, "count": n}."""
    from openpi_client.websocket_client_policy import WebsocketClientPolicy

    conns = [WebsocketClientPolicy(url) for _ in range(clients)]
    obs = [request(i) for i in range(clients)]
    start = threading.Barrier(clients + 1)
    results = [([], []) for _ in range(clients)]

    def run(i: int) -> None:
        latencies, batches = results[i]
        start.wait()
        end = time.perf_counter() + seconds
        while len(latencies) < requests and time.perf_counter() < end:
            t0 = time.perf_counter()
            reply = conns[i].infer(obs[i])
            latencies.append((time.perf_counter() - t0) * 1000)
            batches.append(reply["server_timing"]["batch_size"])

    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        futures = [pool.submit(run, i) for i in range(clients)]
        start.wait()
        t0 = time.perf_counter()
        for f in futures:
            f.result()
        wall = time.perf_counter() - t0
    for c in conns:
        c._ws.close()
    latencies = [x for lat, _ in results for x in lat]
    return {"latency_ms": latencies, "batch": [x for _, b in results for x in b], "seconds": wall,
            "count": len(latencies)}


def summarize(runs: list[dict]) -> dict:
    latencies = np.concatenate([r["latency_ms"] for r in runs])
    return {"rps": statistics.median(r["count"] / r["seconds"] for r in runs), "p50": np.percentile(latencies, 50),
            "p99": np.percentile(latencies, 99), "requests": int(sum(r["count"] for r in runs)),
            "batch": float(np.mean(np.concatenate([r["batch"] for r in runs])))}


def table(title: str, rows: list[tuple], in_process: dict[int, float]) -> str:
    lines = [title, "", "| clients | server | requests | requests/s | p50 latency ms | p99 latency ms | mean batch | "
             "throughput batched / unbatched |", "|---:|---|---:|---:|---:|---:|---:|---|"]
    for n, batched, unbatched, ratios in rows:
        for name, s in (("batched (max_batch=16)", batched), ("unbatched (max_batch=1)", unbatched)):
            ratio = (f"**{statistics.median(ratios):.2f}x** (rounds {min(ratios):.2f}-{max(ratios):.2f})"
                     if s is batched else "")
            lines.append(f"| {n} | {name} | {s['requests']} | {s['rps']:.1f} | {s['p50']:.1f} | {s['p99']:.1f} | "
                         f"{s['batch']:.1f} | {ratio} |")
    sizes = sorted(in_process)
    lines += ["", "In-process sampling, the same model (`backend.sample`, no server, median): "
              + ", ".join(f"batch {b}: {in_process[b]:.1f} ms ({in_process[b] / b:.1f} ms per example)"
                          for b in sizes) + "."]
    return "\n".join(lines)


def measure(backend: str, src: dict, label: str, tmp: str, args, counts: list[int]) -> str:
    """Both servers of one backend under every client count; returns its Markdown table."""
    in_process = in_process_ms(backend, src, tuple(sorted({1, max(counts)})), repeats=10)
    print(f"[{backend}] in-process sampling ms:", {k: round(v, 1) for k, v in in_process.items()}, flush=True)
    servers = {}
    for name, port, max_batch in (("batched", args.port, 16), ("unbatched", args.port + 1, 1)):
        log_path = os.path.join(tmp, f"{backend}_{name}.log")
        servers[name] = (f"ws://127.0.0.1:{port}", start_server(backend, src, port, max_batch, args.max_wait_ms,
                                                                  log_path), port, log_path)
    try:
        for url, process, port, log_path in servers.values():
            wait_healthy(port, process, log_path)
        rows = []
        for n in counts:
            runs = {"batched": [], "unbatched": []}
            for r in range(args.rounds):
                for name in (("batched", "unbatched") if r % 2 == 0 else ("unbatched", "batched")):
                    runs[name].append(load(servers[name][0], n, args.requests, args.seconds))
                    print(f"[{backend}] N={n} round {r} {name}: "
                          f"{runs[name][-1]['count'] / runs[name][-1]['seconds']:.1f} req/s", flush=True)
            ratios = [b["count"] / b["seconds"] / (u["count"] / u["seconds"])
                      for b, u in zip(runs["batched"], runs["unbatched"])]
            rows.append((n, summarize(runs["batched"]), summarize(runs["unbatched"]), ratios))
    finally:
        for _, process, _, _ in servers.values():
            process.terminate()
            process.wait(timeout=60)
    return table(label, rows, in_process)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", default="debug/torch,debug/jax,tiny/torch", help="comma list of MODEL/BACKEND")
    p.add_argument("--clients", default="1,4,16", help="comma list of concurrent clients")
    p.add_argument("--rounds", type=int, default=3, help="A/B rounds per client count (order alternates)")
    p.add_argument("--requests", type=int, default=300, help="most requests per client and measurement")
    p.add_argument("--seconds", type=float, default=5.0, help="most seconds per measurement")
    p.add_argument("--max_wait_ms", type=float, default=50.0, help="the servers' --max_wait_ms")
    p.add_argument("--port", type=int, default=18700, help="batched server's port; unbatched: port + 1")
    p.add_argument("--write_docs", action="store_true")
    args = p.parse_args(argv)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    counts = [int(n) for n in args.clients.split(",")]
    runs = [tuple(r.split("/")) for r in args.runs.split(",")]
    watch = LoadWatch()
    tables = []
    with tempfile.TemporaryDirectory() as tmp:
        for model in dict.fromkeys(m for m, _ in runs):
            workdir, num_params = make_checkpoint(model, tmp)
            folder = os.path.join(tmp, f"export_{model}")
            backends = [b for m, b in runs if m == model]
            if set(backends) - {"jax"}:
                from vla_jax.export.package import export

                export(workdir, folder, fmt="all" if "onnx" in backends else "pytorch", tolerance=1e-3,
                       log=lambda *a: None)  # random weights: parity is not what is measured here
            for backend in backends:
                label = (f"`{model}` ({num_params / 1e6:.2f}M parameters), {backend} backend"
                         + (f" ({THREADS[backend]} thread)" if THREADS[backend] else "") + ":")
                tables.append(measure(backend, source(backend, workdir, folder), label, tmp, args, counts))
    watch.sample()
    text = "\n\n".join(tables)
    where = (f"{machine('websockets')}; float32, `--max_wait_ms={args.max_wait_ms:g}`; {args.rounds} alternating "
             f"rounds of at most {args.requests} requests per client or {args.seconds:g} s; {watch.describe()}")
    print("\n" + text + f"\n\nmachine: {where}")
    if args.write_docs:
        section = (f"{SECTION}\n\nMeasured with `python benchmarks/serve_load.py --write_docs` on a {where}. "
                   "Clients and servers share the machine (loopback). Per run two server processes: "
                   "`python -m vla_jax.serve ... --robot=single_arm` with `--max_batch=16` (batched) or "
                   "`--max_batch=1` (unbatched); N openpi-client connections in one process, each asking back to "
                   "back with two 96 x 96 camera images. Latency is per request at the client; requests/s is the "
                   "median over rounds; the ratio is the median of the per-round throughput ratios (the two "
                   "servers measured in alternating order).\n\n" + text + "\n")
        write_section(SECTION, section)
        print("wrote docs/performance.md")


if __name__ == "__main__":
    main()
