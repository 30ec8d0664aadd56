"""Serves a policy over websockets in openpi's protocol (docs/serving.md).

    python -m vla_jax.serve --policy=exports/debug --robot=single_arm --port=8000          # PyTorch (or ONNX)
    python -m vla_jax.serve --workdir=runs/debug:2000 --robot=single_arm --max_batch=16     # a checkpoint, JAX

Errors at start-up are one line on stderr, exit code 2. SIGTERM / SIGINT: the requests in flight are answered,
then the process exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from vla_jax.extras import needs_extras
from vla_jax.platform import jax_defaults


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m vla_jax.serve", description=__doc__.split("\n")[0])
    p.add_argument("--policy", help="export folder (tools/export.py): PyTorch or ONNX backend, no JAX")
    p.add_argument("--workdir", help="training run RUN or RUN:STEP (newest step by default): JAX backend")
    p.add_argument("--ema", action="store_true", help="serve the checkpoint's EMA parameters (--workdir)")
    p.add_argument("--robot", required=True, help="serving config: a built-in name or a robot .json file")
    p.add_argument("--dataset", help="normalization statistics to use instead of the robot config's dataset")
    p.add_argument("--backend", help="jax | torch | onnx (default: jax for --workdir, torch for --policy)")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max_batch", type=int, default=8, help="most requests stacked into one model call")
    p.add_argument("--max_wait_ms", type=float, default=5.0, help="how long a request waits for others to batch")
    p.add_argument("--api_key", help="refuse connections without the header 'Authorization: Api-Key <key>'")
    p.add_argument("--max_message_mb", type=float, default=16.0, help="largest request frame accepted")
    p.add_argument("--idle_timeout_s", type=float, default=300.0, help="close connections silent this long")
    p.add_argument("--max_clients", type=int, default=256, help="refuse connections beyond this many (503)")
    p.add_argument("--threads", type=int, default=None, help="PyTorch / onnxruntime threads")
    p.add_argument("--seed", type=int, default=0, help="noise of requests without noise / noise_seed")
    p.add_argument("--warmup", action=argparse.BooleanOptionalAction, default=True,
                   help="run every batch size once before serving (JAX: compile them)")
    return p.parse_args(argv)


def workdir_step(value: str) -> tuple[str, int | None]:
    """``RUN`` -> (RUN, None); ``RUN:STEP`` -> (RUN, STEP)."""
    run, _, step = value.rpartition(":")
    return (run, int(step)) if run and step.isdigit() else (value, None)


@needs_extras
def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    if args.workdir is not None:
        jax_defaults()
    import dataclasses

    from vla_jax.serve.backends import BackendError, load_backend
    from vla_jax.serve.robots import RobotConfigError, get_robot
    from vla_jax.serve.server import PolicyServer

    workdir, step = workdir_step(args.workdir) if args.workdir else (None, None)
    try:
        robot = get_robot(args.robot)
        if args.dataset:
            robot = dataclasses.replace(robot, dataset=args.dataset)
        backend = load_backend(args.backend, policy=args.policy, workdir=workdir, step=step, ema=args.ema,
                               threads=args.threads)
        server = PolicyServer(backend, robot, host=args.host, port=args.port, max_batch=args.max_batch,
                              max_wait_ms=args.max_wait_ms, api_key=args.api_key,
                              max_message_bytes=int(args.max_message_mb * 2 ** 20),
                              idle_timeout_s=args.idle_timeout_s, max_clients=args.max_clients, seed=args.seed)
    except (BackendError, RobotConfigError, ValueError) as e:
        print(f"error: {str(e).splitlines()[0]}", file=sys.stderr, flush=True)
        return 2

    if args.warmup:
        server.warm_up()

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await server.serve(stop)

    try:
        asyncio.run(run())
    except OSError as e:  # the port is taken, the host cannot be bound
        print(f"error: cannot serve on {args.host}:{args.port}: {e.strerror or e}", file=sys.stderr, flush=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
