"""Policy serving over websockets in openpi's protocol: ``python -m vla_jax.serve`` (docs/serving.md).

* ``protocol``    — msgpack with numpy arrays as openpi's tagged maps; no pickle.
* ``robots``      — serving configs (observation keys -> camera slots, state, prompt; the statistics' dataset).
* ``observation`` — the request layout of a robot and model: metadata and the one-line checks.
* ``model_io``    — request -> model example (the training preprocessing), actions -> robot units.
* ``backends``    — jax (checkpoint) / torch / onnx (export folder) behind ``sample(obs, noise)``.
* ``batcher``     — dynamic batching with per-request noise, padded to fixed batch sizes.
* ``server``      — the websocket server, its bad-client handling and graceful stop.

Nothing imports JAX unless the jax backend is chosen.
"""
