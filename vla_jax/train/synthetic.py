"""Deterministic in-memory synthetic batches (``config.data.kind = "synthetic"``) for tests and smoke runs.

Example ``i`` of the infinite global stream is a pure function of ``(seed, i)``; global batch ``b``
holds examples ``b*B .. b*B+B-1`` and process ``p`` of ``P`` gets rows ``p*B/P .. (p+1)*B/P-1`` of it,
so any process split sees exactly the same global batches (multi-process runs equal 1-process runs).
It is a grain ``MapDataset`` -> iterator, so ``get_state()/set_state()`` resume exactly.

Sources ``0 .. num_sources-2`` are robot data whose action chunk is a fixed smooth function of the
state (learnable); the last source (if ``num_sources >= 3``) is web-style captioning with
``has_actions = False`` and answer tokens carrying the text loss.
"""

from __future__ import annotations

import grain
import numpy as np

from vla_jax.batch import BATCH_KEYS, dims_from_config


def make_example(model_cfg, seed: int, index: int, num_sources: int) -> dict[str, np.ndarray]:
    d = dims_from_config(model_cfg)
    rng = np.random.default_rng([seed, index])
    source = index % num_sources
    web = num_sources >= 3 and source == num_sources - 1
    c, r, l, h, a, s = d["C"], d["R"], d["L"], d["H"], d["A"], d["S"]
    low = rng.uniform(-1, 1, (c, 4, 4, 3)).astype(np.float32)
    images = np.kron(low, np.ones((1, r // 4 + 1, r // 4 + 1, 1), np.float32))[:, :r, :r]
    image_mask = np.ones(c, bool)
    if source == 1 and c > 1:
        image_mask[-1] = False
        images[-1] = 0.0
    vocab = model_cfg.vocab_size
    hi = max(vocab - 257, 3)
    n_prompt = int(rng.integers(2, max(l // 2, 3)))
    tokens = np.zeros(l, np.int32)
    tokens[:n_prompt] = rng.integers(1, hi, n_prompt)
    token_mask = np.arange(l) < n_prompt
    token_ar = np.zeros(l, bool)
    token_loss = np.zeros(l, bool)
    state_dim = s if source != 0 else max(1, s // 2)
    action_dim = a if source != 0 else max(1, a // 2)
    state = np.zeros(s, np.float32)
    state[:state_dim] = rng.normal(size=state_dim)
    actions = np.zeros((h, a), np.float32)
    if web:
        n_answer = min(l - n_prompt, 4)
        # the answer is a deterministic function of the first prompt token (learnable)
        tokens[n_prompt:n_prompt + n_answer] = (tokens[0] * (np.arange(n_answer) + 3)) % (hi - 1) + 1
        token_mask[n_prompt:n_prompt + n_answer] = True
        token_ar[n_prompt:n_prompt + n_answer] = True
        token_loss[n_prompt:n_prompt + n_answer] = True
        state[:] = 0.0
        state_dim = action_dim = 0
    else:
        steps = np.arange(h, dtype=np.float32)[:, None] / max(h, 1)
        base = np.resize(state[:state_dim], action_dim)[None, :]
        actions[:, :action_dim] = np.tanh(base * (1.0 + steps) + 0.3 * images[0].mean() + 0.1 * source)
    state_mask = np.arange(s) < state_dim
    action_dim_mask = np.arange(a) < action_dim
    step_mask = np.ones(h, bool)
    if not web and rng.uniform() < 0.25:
        step_mask[int(rng.integers(1, h + 1)):] = False
    return {
        "images": images.astype(np.float32),
        "image_mask": image_mask,
        "tokens": tokens,
        "token_mask": token_mask,
        "token_ar": token_ar,
        "token_loss": token_loss,
        "state": state,
        "state_mask": state_mask,
        "actions": actions,
        "action_dim_mask": action_dim_mask,
        "action_step_mask": step_mask,
        "has_actions": np.asarray(not web),
        "source": np.asarray(source, np.int32),
    }


class _LocalBatch:
    """Global batch index -> this process's rows (picklable for grain)."""

    def __init__(self, model_cfg, seed, num_examples, num_sources, batch_size, process_index, process_count):
        self.model_cfg, self.seed, self.num_examples = model_cfg, seed, num_examples
        self.num_sources = num_sources
        self.local = batch_size // process_count
        self.batch_size = batch_size
        self.offset = process_index * self.local

    def __call__(self, b: int) -> dict[str, np.ndarray]:
        rows = [make_example(self.model_cfg, self.seed, (b * self.batch_size + self.offset + r) % self.num_examples,
                             self.num_sources) for r in range(self.local)]
        return {k: np.stack([x[k] for x in rows]).astype(BATCH_KEYS[k][0]) for k in BATCH_KEYS}


def make_synthetic_iterator(config, *, process_index: int = 0, process_count: int = 1):
    """Iterator of per-process numpy batches with ``get_state()/set_state()``."""
    data = config.data
    if config.batch_size % process_count:
        raise ValueError(f"config.batch_size={config.batch_size} is not divisible by {process_count} processes")
    fn = _LocalBatch(config.model, int(data.seed), int(data.num_examples), int(data.num_sources),
                     int(config.batch_size), process_index, process_count)
    ds = grain.MapDataset.range(1 << 40).map(fn)
    # few threads, small buffer: the batches are cheap and the CPU belongs to the train step
    return iter(ds.to_iter_dataset(grain.ReadOptions(num_threads=1, prefetch_buffer_size=2)))


def source_names(config) -> list[str]:
    n = int(config.data.num_sources)
    return [f"synthetic_web" if n >= 3 and i == n - 1 else f"synthetic_robot_{i}" for i in range(n)]
