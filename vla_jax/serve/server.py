"""The websocket policy server (openpi's protocol) with dynamic batching, robust to bad clients.

Per connection: one binary frame with the metadata (msgpack dict) on connect, then request / reply pairs:
msgpack(observation dict) -> msgpack({"actions": float32 [H, action_dim] in robot units, "server_timing":
{"infer_ms", "queue_ms", "batch_size", "padded_batch_size"}}). A bad request gets a text frame with a one-line
message and the close code 1011; frames over ``max_message_bytes`` are refused by the websocket layer (1009);
a connection idle for ``idle_timeout_s`` is closed (1008). Every such event is one line in the log, and only
that client is affected. ``GET /healthz`` answers 200; with ``api_key`` a handshake without the header
``Authorization: Api-Key <key>`` gets 401. :meth:`PolicyServer.serve` stops on its event after the requests in
flight are answered.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hmac
import http
import logging
import threading
import time
from typing import Any

import numpy as np
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode

from vla_jax.serve.backends import Backend
from vla_jax.serve.batcher import Batcher
from vla_jax.serve.model_io import ModelIO
from vla_jax.serve.observation import Observation, ObservationSpec, RequestError
from vla_jax.serve.protocol import ProtocolError, pack, unpack
from vla_jax.serve.robots import RobotConfig

log = logging.getLogger("vla_jax.serve")


class _OneLine(logging.Filter):
    """Folds a record's exception into its message: the websocket layer's errors stay one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            e = record.exc_info[1]
            record.msg, record.args = f"{record.getMessage()}: {type(e).__name__}: {e}", ()
            record.exc_info = record.exc_text = None
        return True


_ws_log = logging.getLogger("vla_jax.serve.websocket")
_ws_log.addFilter(_OneLine())
_ws_log.setLevel(logging.WARNING)


def _peer(conn: ServerConnection) -> str:
    address = conn.remote_address
    return f"{address[0]}:{address[1]}" if isinstance(address, tuple) else str(address)


class _Connection(ServerConnection):
    """Logs (one line) a client dropped because its websocket handshake did not finish in time."""

    async def handshake(self, *args, **kwargs) -> None:
        try:
            await super().handshake(*args, **kwargs)
        except asyncio.CancelledError:
            log.warning(f"{_peer(self)}: no websocket handshake in time; dropped")
            raise


class PolicyServer:
    """Serves ``backend`` to clients of ``robot`` (see the module doc for the protocol)."""

    def __init__(self, backend: Backend, robot: RobotConfig, *, host: str = "127.0.0.1", port: int = 8000,
                 max_batch: int = 8, max_wait_ms: float = 5.0, api_key: str | None = None,
                 max_message_bytes: int = 16 * 2 ** 20, idle_timeout_s: float = 300.0, max_clients: int = 256,
                 seed: int = 0):
        self.backend, self.robot = backend, robot
        self.host, self.port, self.api_key = host, port, api_key
        self.max_message_bytes, self.idle_timeout_s, self.max_clients = max_message_bytes, idle_timeout_s, max_clients
        info = backend.info
        self.io = ModelIO(info, robot)
        self.spec = ObservationSpec(robot, info.dims.num_cameras, info.dims.action_horizon, info.dims.max_action_dim)
        self.max_batch, self.max_wait_ms = max_batch, max_wait_ms
        self.batcher = Batcher(backend.sample, max_batch, max_wait_ms, pad=backend.pads_batch,
                               senders=lambda: self.clients)
        self.rng = np.random.default_rng(seed)
        self.metadata = {
            "server": "vla_jax", "robot": robot.name, "dataset": robot.dataset, "backend": backend.name,
            "model_preset": info.preset, "action_head": info.action_head, "checkpoint_step": info.step,
            "action_horizon": info.dims.action_horizon, "action_dim": self.io.action_dim,
            "image_size": info.dims.image_size, "image_layout": robot.image_layout, "max_batch": max_batch,
            "observation": self.spec.describe(),
        }
        self.requests = 0  # received
        self.clients = 0  # open connections
        self._inflight = 0
        self._idle: asyncio.Event | None = None
        self._draining = False
        self._prep = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="preprocess")

    # ------------------------------------------------------------------------------------------ requests
    def _noise(self, obs: Observation) -> np.ndarray:
        if obs.noise is not None:
            return obs.noise
        rng = self.rng if obs.noise_seed is None else np.random.default_rng(obs.noise_seed)
        return rng.standard_normal(self.spec.noise_shape, dtype=np.float32)

    async def _answer(self, frame: Any) -> bytes:
        if not isinstance(frame, bytes):
            raise ProtocolError("expected a binary msgpack frame, got text")
        obs = self.spec.parse(unpack(frame))
        example = await asyncio.get_running_loop().run_in_executor(self._prep, self.io.example, obs)
        actions, timing = await self.batcher.submit(example, self._noise(obs))
        return pack({"actions": self.io.actions(actions), "server_timing": timing})

    async def _fail(self, conn: ServerConnection, message: str) -> None:
        try:
            await conn.send(message)
            await conn.close(CloseCode.INTERNAL_ERROR, "error; message in the previous frame")
        except ConnectionClosed:
            pass

    def _busy(self, delta: int) -> None:
        self._inflight += delta
        if self._inflight == 0:
            self._idle.set()
        else:
            self._idle.clear()

    async def _handle(self, conn: ServerConnection) -> None:
        peer = _peer(conn)
        self.clients += 1
        try:
            await conn.send(pack(self.metadata))
            while True:
                try:
                    frame = await asyncio.wait_for(conn.recv(), self.idle_timeout_s)
                except asyncio.TimeoutError:
                    log.warning(f"{peer}: no request for {self.idle_timeout_s:g}s; closing")
                    await conn.close(CloseCode.POLICY_VIOLATION, "idle timeout")
                    return
                if self._draining:
                    await self._fail(conn, "server is shutting down")
                    return
                self._busy(+1)
                self.requests += 1
                try:
                    await conn.send(await self._answer(frame))
                except (ProtocolError, RequestError) as e:
                    log.warning(f"{peer}: bad request: {e}")
                    await self._fail(conn, f"bad request: {e}")
                    return
                except ConnectionClosed:
                    log.warning(f"{peer}: disconnected before its reply was sent")
                    return
                except Exception as e:  # noqa: BLE001 - one client's failure never stops the server
                    first = str(e).splitlines()[0] if str(e) else ""
                    log.error(f"{peer}: inference failed: {type(e).__name__}: {first}")
                    await self._fail(conn, f"inference failed: {type(e).__name__}: {e}")
                    return
                finally:
                    self._busy(-1)
        except ConnectionClosed as e:
            code = e.rcvd.code if e.rcvd else e.sent.code if e.sent else None
            if code not in (CloseCode.NORMAL_CLOSURE, CloseCode.GOING_AWAY):
                log.warning(f"{peer}: connection closed ({e})")
        finally:
            self.clients -= 1

    def _process_request(self, conn: ServerConnection, request):
        if request.path == "/healthz":
            return conn.respond(http.HTTPStatus.OK, "OK\n")
        if self.api_key is not None:
            given = request.headers.get("Authorization", "")
            if not hmac.compare_digest(given.encode(), f"Api-Key {self.api_key}".encode()):
                log.warning(f"{_peer(conn)}: refused: {'wrong' if given else 'no'} API key")
                return conn.respond(http.HTTPStatus.UNAUTHORIZED, "missing or wrong API key\n")
        if self.clients >= self.max_clients:
            log.warning(f"{_peer(conn)}: refused: {self.clients} clients connected (max_clients)")
            return conn.respond(http.HTTPStatus.SERVICE_UNAVAILABLE, "too many clients\n")
        return None

    # ------------------------------------------------------------------------------------------ lifecycle
    def warm_up(self) -> float:
        """Runs the model once per batch size it will see (JAX: compiles every padded size); returns seconds."""
        t0 = time.perf_counter()
        r = self.backend.info.dims.image_size
        images = [None if k is None else np.zeros((r, r, 3), np.uint8) for k in self.spec.cameras]
        example = self.io.example(Observation(images, np.zeros(self.robot.state_dim, np.float32), "warm up"))
        for size in self.batcher.sizes or (1,):
            self.backend.sample({k: np.stack([v] * size) for k, v in example.items()},
                                np.zeros((size, *self.spec.noise_shape), np.float32))
        seconds = time.perf_counter() - t0
        log.info(f"warmed up batch sizes {list(self.batcher.sizes or (1,))} in {seconds:.1f}s")
        return seconds

    async def serve(self, stop: asyncio.Event, started: threading.Event | None = None) -> None:
        """Serves until ``stop`` is set, then stops accepting, answers the requests in flight and closes."""
        self._idle = asyncio.Event()
        self._idle.set()
        batching = asyncio.get_running_loop().create_task(self.batcher.run())
        server = await serve(self._handle, self.host, self.port, process_request=self._process_request,
                             compression=None, max_size=self.max_message_bytes,
                             open_timeout=min(10.0, self.idle_timeout_s), logger=_ws_log, create_connection=_Connection)
        self.port = server.sockets[0].getsockname()[1]
        log.info(f"serving {self.robot.name} ({self.backend.name}, {self.backend.info.source}) on "
                 f"ws://{self.host}:{self.port}, max_batch={self.max_batch}, max_wait_ms={self.max_wait_ms:g}")
        if started is not None:
            started.set()
        try:
            await stop.wait()
            self._draining = True
            server.server.close()  # no new connections; open ones stay until their requests are answered
            log.info(f"stopping: {self._inflight} request(s) in flight")
            await self._idle.wait()
            server.close()
            await server.wait_closed()
        finally:
            batching.cancel()
            self.batcher.close()
            self._prep.shutdown(wait=False)
        log.info(f"stopped after {self.requests} request(s)")


class ServerThread:
    """A :class:`PolicyServer` on its own event loop in a background thread: ``with ServerThread(server) as s:
    ... s.url ...``; leaving the block stops it like SIGTERM does."""

    def __init__(self, server: PolicyServer):
        self.server = server
        self._started = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, daemon=True, name="policy-server")

    def _main(self) -> None:
        async def main():
            self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
            await self.server.serve(self._stop, self._started)

        try:
            asyncio.run(main())
        except BaseException as e:  # noqa: BLE001 - reported to the starting thread
            self._error = e
            self._started.set()

    @property
    def url(self) -> str:
        return f"ws://{self.server.host}:{self.server.port}"

    def __enter__(self) -> ServerThread:
        self._thread.start()
        self._started.wait()
        if self._error is not None:
            raise self._error
        return self

    def __exit__(self, *exc) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join()
