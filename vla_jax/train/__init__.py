"""Pod-scale pretraining: mesh + logical sharding rules, sharded TrainState, the jitted step,
orbax checkpoints (exact resume, any mesh), metrics/MFU, PaliGemma init, and the train loop.

Entry point: ``python -m vla_jax.train --config=configs/pretrain.py:debug --workdir=DIR``.

Modules: ``sharding`` (mesh, rules, NamedShardings), ``optimizer`` (AdamW + schedule + masks),
``state`` (TrainState, sharded creation), ``step`` (train step), ``checkpoint`` (Checkpointer),
``metrics`` (JSONL/TensorBoard, MFU), ``init_from`` (PaliGemma .npz), ``synthetic`` (test data),
``loop`` (flags + the loop). Submodules are imported lazily so ``import vla_jax.train`` is cheap.
"""
