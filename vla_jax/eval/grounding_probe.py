"""First-frame grounding probe: does the backbone know where the named object is before the arm moves?

For ``scenes`` fresh scenes per task family (seeded, so every run sees the same ones), with an
instruction of the given split (vla_jax.sim.SPLITS), the model reads the first observation and the
instruction and decodes one token greedily; the answer is compared with
the target's ``<locRC>`` cell in camera 0 (vla_jax.sim.grounding_answers). This is the moment that needs the
binding of words to image regions: once the gripper is at the target, "where the gripper is" answers
as well (docs/experiments.md). Reported per family:

``exact``   the decoded token is the target's cell
``near``    it is the target's cell or one of its 8 neighbours (about one object width)
``other``   it is the cell of another object (the policy would go to the wrong one)
``keypoint_error``  (models with keypoints and location tokens) mean distance of camera 0's first keypoint,
            the one the ``keypoint`` loss trains, from the target's true image position, as a fraction
            of the image width (the overhead camera sees ~0.58 m: 0.01 is ~6 mm)
"""

from __future__ import annotations

from typing import Sequence

import jax
import numpy as np

from vla_jax.eval.offline import UNKNOWN
from vla_jax.models import addons
from vla_jax.models.vla import VLA, greedy_decode
from vla_jax.sim import FAMILIES, TabletopEnv, sample_task
from vla_jax.sim.grounding_answers import object_location, object_uv

SEED_OFFSET = 10_000  # scene seeds: SEED_OFFSET + 1000 * seed + index (apart from rollout seeds)


def _cell(token: str) -> tuple[int, int] | None:
    if len(token) == 7 and token.startswith("<loc") and token.endswith(">") and token[4:6].isdigit():
        return int(token[4]), int(token[5])
    return None


def _answer(tokenizer, token: int) -> str:
    """The piece of ``token``; UNKNOWN (no cell) for an id past the tokenizer's pieces, which a model whose
    vocabulary is larger than its tokenizer (e.g. with the discrete head's action bins) can generate."""
    return tokenizer.decode([token]) if 0 <= token < tokenizer.vocab_size else UNKNOWN


def first_frame_grounding(model, params, io, embodiment: str, *, scenes: int = 20,
                          families: Sequence[str] = FAMILIES, split: str = "train", seed: int = 0,
                          image_size: int = 96, batch_size: int = 16) -> dict[str, dict]:
    """{family: {"exact", "near", "other": fractions, "n": scenes[, "keypoint_error"]}} plus "all" over the
    families.

    ``io``: the dataset's PolicyIO (vla_jax.data.policy_io.make_policy_io); ``params``: {"params": ...}."""
    decode = jax.jit(lambda p, o: greedy_decode(model, p, o, 1, actions_only=False))
    keypoints = None
    if addons.has(model.cfg, "keypoints") and addons.has(model.cfg, "location_tokens"):  # the trained keypoint
        keypoints = jax.jit(lambda p, o: model.apply(p, o, method=VLA.embed_prefix).extras["keypoints"][:, 0, 0])
    tokenizer = io.transform.tokenizer
    env = TabletopEnv(embodiment, image_size)
    camera = env.spec.cameras[0]
    rows: dict[str, list[tuple[float, float, float, float]]] = {f: [] for f in families}
    jobs = [(f, SEED_OFFSET + 1000 * seed + i) for f in families for i in range(scenes)]
    for start in range(0, len(jobs), batch_size):
        chunk = jobs[start:start + batch_size]
        observations, truths, others, uvs = [], [], [], []
        for family, scene_seed in chunk:
            task = sample_task(np.random.default_rng(scene_seed), family, split)
            obs = env.reset(task, scene_seed)
            observations.append(io.observation({**obs["images"], "state": obs["state"]}, task.instruction))
            truths.append(object_location(env.world, camera, env.target))
            uv = object_uv(env.world, camera, env.target)
            uvs.append(np.full(2, np.nan) if uv is None else np.asarray(uv, float))
            others.append({object_location(env.world, camera, j) for j in range(len(env.world.objects))
                           if j != env.target} - {truths[-1]})
        batch = {k: np.concatenate([o[k] for o in observations]) for k in observations[0]}
        tokens = np.asarray(decode(params, batch))[:, 0]
        errors = np.full(len(chunk), np.nan)
        if keypoints is not None:  # keypoints in [-1, 1] -> image fractions [0, 1]
            errors = np.linalg.norm((np.asarray(keypoints(params, batch)) + 1.0) / 2.0 - np.stack(uvs), axis=-1)
        for (family, _), token, truth, other, error in zip(chunk, tokens, truths, others, errors):
            answer = _answer(tokenizer, int(token))
            got, want = _cell(answer), _cell(truth)
            near = got is not None and max(abs(got[0] - want[0]), abs(got[1] - want[1])) <= 1
            rows[family].append((answer == truth, near, answer in other, error))
    out = {}
    for name, values in [*rows.items(), ("all", [v for f in families for v in rows[f]])]:
        a = np.asarray(values, float).reshape(-1, 4)
        out[name] = {"exact": float(a[:, 0].mean()), "near": float(a[:, 1].mean()), "other": float(a[:, 2].mean()),
                     "n": int(len(a))}
        if keypoints is not None:
            out[name]["keypoint_error"] = float(np.nanmean(a[:, 3]))
    return out


def format_grounding(results: dict[str, dict[str, dict[str, dict]]]) -> str:
    """Markdown table: {embodiment: {split: {family: metrics}}} -> exact / near / other object (/ keypoint error)."""
    rows = [(emb, split, fam, m) for emb, splits in results.items() for split, fams in splits.items()
            for fam, m in fams.items()]
    kp = any("keypoint_error" in m for *_, m in rows)
    lines = ["| embodiment | split | family | exact cell | within one cell | another object's cell | scenes |"
             + (" keypoint error (image width) |" if kp else ""),
             "|---|---|---|---:|---:|---:|---:|" + ("---:|" if kp else "")]
    for emb, split, fam, m in rows:
        lines.append(f"| {emb} | {split} | {fam} | {100 * m['exact']:.0f}% | {100 * m['near']:.0f}% | "
                     f"{100 * m['other']:.0f}% | {m['n']} |"
                     + (f" {100 * m.get('keypoint_error', float('nan')):.1f}% |" if kp else ""))
    return "\n".join(lines) + "\n"

