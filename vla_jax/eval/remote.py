"""Closed-loop evaluation through a policy server (``python -m vla_jax.serve``): ``tools/evaluate.py --server=URL``.

:class:`RemotePolicy` is a closed-loop policy whose chunks come over the websocket, one openpi client per
environment slot, so the envs' requests arrive together and the server batches them. Requests are written from
the server's metadata alone (its observation keys, found in the simulator's observation with
``vla_jax.data.policy_io.lookup``). Flow models get the noise the in-process sampler would draw
(:func:`vla_jax.eval.agents.flow_noise` of the seed and call counter), so an evaluation through a server
running the same checkpoint reproduces the in-process one.
"""

from __future__ import annotations

import concurrent.futures
import os
import time
from typing import Callable

import numpy as np
from openpi_client.websocket_client_policy import WebsocketClientPolicy
from websockets.exceptions import WebSocketException

from vla_jax.data.policy_io import lookup
from vla_jax.eval.agents import flow_noise
from vla_jax.eval.closed_loop import evaluate
from vla_jax.eval.report import results_payload, write_report
from vla_jax.eval.run import EvalError, EvalSettings, compact_table
from vla_jax.sim import EMBODIMENTS


class RemotePolicy:
    """vla_jax.eval.agents.Policy served at ``url``; chunks [B, H, action_dim] in robot units."""

    def __init__(self, url: str, seed: int = 0, api_key: str | None = None, name: str = "model"):
        self.url, self.seed, self.api_key, self.name = url, seed, api_key, name
        self.clients = [self._connect()]
        self.metadata = self.clients[0].get_server_metadata()
        spec = self.metadata["observation"]
        self.prompt_key = next(k for k, v in spec.items() if v["dtype"] == "str")
        self.keys = [k for k, v in spec.items() if v["required"] and k != self.prompt_key]
        self.noise_shape = tuple(spec["noise"]["shape"]) if self.metadata["action_head"] == "flow" else None
        self.batch_size, self.calls = 1, 0
        self._pool = concurrent.futures.ThreadPoolExecutor(1)

    def _connect(self) -> WebsocketClientPolicy:
        try:
            return WebsocketClientPolicy(self.url, api_key=self.api_key)
        except (OSError, WebSocketException) as e:
            raise EvalError(f"--server={self.url}: cannot connect ({e})") from None

    @property
    def robot(self) -> str:
        return self.metadata["robot"]

    def reset(self, batch_size: int) -> None:
        self.clients += [self._connect() for _ in range(batch_size - len(self.clients))]
        self._pool.shutdown()
        self._pool = concurrent.futures.ThreadPoolExecutor(batch_size, thread_name_prefix="remote-policy")
        self.batch_size, self.calls = batch_size, 0

    def act(self, observations, instructions, embodiment):
        noise = None if self.noise_shape is None else flow_noise(self.seed, self.calls, (self.batch_size,
                                                                                         *self.noise_shape))
        self.calls += 1
        requests = []
        for i, (obs, text) in enumerate(zip(observations, instructions)):
            request = {k: lookup(obs, k) for k in self.keys}
            request[self.prompt_key] = text
            if noise is not None:
                request["noise"] = noise[i]
            requests.append(request)
        replies = self._pool.map(lambda c, r: c.infer(r)["actions"], self.clients, requests)
        return np.stack(list(replies)).astype(np.float32)

    def close(self) -> None:
        self._pool.shutdown()
        for client in self.clients:
            client._ws.close()  # openpi-client 0.1.2 has no close()


def evaluate_server(url: str, settings: EvalSettings = EvalSettings(), *, api_key: str | None = None,
                    log: Callable[[str], None] = print) -> dict:
    """Closed-loop evaluation of the robot a server serves (a tabletop embodiment), as ``settings`` say; writes
    results.json / summary.md / summary.png (+ filmstrip, GIF) into ``settings.out`` and returns the payload."""
    s = settings
    s.validate()
    if not s.out:
        raise EvalError("--server needs --out (where the report goes)")
    if s.num_samples != 1:
        raise EvalError(f"--num_samples={s.num_samples}: a server answers one sample per request; use 1")
    t0 = time.perf_counter()
    policy = RemotePolicy(url, s.seed, api_key)
    try:
        robot = policy.robot
        if robot not in EMBODIMENTS or (s.explicit_embodiments and robot not in s.names("embodiments")):
            raise EvalError(f"--server={url} serves robot {robot!r}; closed-loop evaluation needs one of "
                            f"{', '.join(s.names('embodiments'))}")
        m = policy.metadata
        log(f"[eval] {url}: robot {robot}, {m['backend']} backend, preset {m['model_preset']}, step "
            f"{m['checkpoint_step']}: {s.episodes} episodes x {len(s.names('families'))} tasks x "
            f"{len(s.names('splits'))} splits -> {s.out}")
        results = {"model": evaluate(policy, record=s.record, **s.rollout_kwargs((robot,)))}
    finally:
        policy.close()
    extra = {"server": {"url": url, **{k: v for k, v in m.items() if k != "observation"}},
             "eval_settings": s.report_dict((robot,))}
    table = compact_table(results)
    paths = write_report(results, s.out, title=f"{url} ({robot}, step {m['checkpoint_step']}): closed-loop success",
                         extra=extra, markdown_head=f"# Evaluation through `{url}`\n\n```\n{table}```\n\n")
    log("\n" + table)
    log(f"[eval] wrote {os.path.abspath(s.out)} in {time.perf_counter() - t0:.1f}s")
    return {**results_payload(results, extra), "paths": paths}
