"""Offline metrics on the validation splits of the datasets in a config's mixture.

For every dataset in ``config.data.mixture`` (weight 0 included, so an ablation that leaves a
dataset out still reports how the model does on it):

robot datasets
    ``loss/<head>``        validation loss of the action head (flow matching or discrete tokens), as
                           in training: sum over real chunk steps x real dims / their count, with a
                           fixed flow noise / time per batch (``seed``); ``loss/<head>_se`` its standard
                           error over examples.
    ``action_mse``         mean squared error of the sampled chunk against the target chunk, both
                           un-normalized with the dataset's (norm group's) statistics, i.e. in robot
                           units, over real chunk steps (``action_step_mask``) and real action dims
                           only; ``action_mse_se`` its standard error over examples.
    ``action_l1``          the same with absolute errors.
    ``action_mse_normalized``  the MSE in the model's normalized units (comparable across datasets).
    ``action_mse_per_dim`` list, robot units.
    ``chunk_translation_error``  for specs with ``action_translation_dims``: per arm, the distance between the
                           predicted and the recorded chunk's summed translation (where the chunk takes the
                           end effector, in robot units, e.g. m), averaged over examples and arms: the
                           localization error of the policy on the demonstrated states (a grasp tolerates a
                           few cm); ``chunk_translation_error_se`` its standard error.
    ``token_accuracy``     discrete head only: fraction of real action tokens (256 bins per value)
                           decoded exactly right by greedy decoding.
    ``exact_match``        with grounding (config.data.datasets.<name>.grounding): the answer "where the
                           target is" (a location token) decoded right, as for web answers below.
web vision-language datasets
    ``loss/text``          teacher-forced next-token loss on the answers (``loss/text_se``).
    ``exact_match``        greedy decoding of the answer after the prompt (image + prompt prefix), cut at
                           the first eos, detokenized and compared (whitespace-stripped) with the reference
                           answer, i.e. the answer tokens of the example detokenized (an answer cut by
                           ``max_text_len`` is compared on as many generated tokens). Generated ids the
                           tokenizer lacks (the model vocabulary is larger) decode as UNKNOWN, never matching.
                           ``samples`` holds a few (prompt, reference, prediction) triples.

every dataset
    ``image_reliance``     how much the model looks: the relative increase of the validation loss of the
                           dataset's head (flow / discrete / text) when each example gets the images of
                           another example of the batch (same noise, same text and state). ~0 means a
                           "blind" model that predicts from the instruction and state alone.
    ``camera_reliance/<k>`` the same with only camera slot ``k`` swapped (slots some example has): which
                           views the model reads (e.g. a policy that reads only its wrist camera shows ~0
                           for the overhead slot 0).

robot datasets
    ``instruction_reliance`` the same when each example gets another example's instruction instead: ~0 for
                           a policy that ignores what it is told (it cannot tell "the red cup" from "the
                           blue block" in a scene with both).

Examples: ``max_batches`` batches of ``batch_size`` transitions / examples spread evenly over the whole
split (every transition when the split is smaller), decoded with the evaluation image ops; the chosen
indices, the per-example augmentation rng, the flow noise and the loss rng are fixed, so the numbers
are deterministic for given params. Padded rows (last batch) never count.

    ev = OfflineEvaluator(config, model, max_batches=4)
    metrics = ev(params)            # {dataset: {metric: value}}
    flat = flatten(metrics)         # {"offline/<dataset>/<metric>": float}
"""

from __future__ import annotations

import functools
import math
from typing import Callable, Mapping, Sequence

import jax
import numpy as np

from vla_jax.batch import OBSERVATION_KEYS
from vla_jax.data.mixture import dataset_examples, load_tokenizer
from vla_jax.data.settings import read_settings
from vla_jax.data.transforms import finalize_batch
from vla_jax.models import action_tokens, vla
from vla_jax.models.vla import VLA, make_config

DEFAULT_MAX_BATCHES = 4
NUM_SAMPLES = 3  # (prompt, reference, prediction) triples kept per web dataset
_IMAGE_KEYS = ("images", "image_mask")  # what image / camera reliance give another example
_TEXT_KEYS = ("tokens", "token_mask", "token_ar", "token_loss")  # what instruction reliance gives another example


class OfflineError(ValueError):
    """A config whose validation data cannot be evaluated; the message is one line."""


UNKNOWN = "\u2047"  # stands for generated ids the tokenizer does not have (model vocab > tokenizer pieces)


def _decode_until_eos(tokenizer, ids: Sequence[int]) -> str:
    """Text of ``ids`` up to the first eos; ids outside the tokenizer (e.g. action bins) become UNKNOWN."""
    ids = [int(i) for i in ids]
    eos = tokenizer.eos_id
    if eos is not None and eos >= 0 and eos in ids:
        ids = ids[: ids.index(eos)]
    size = tokenizer.vocab_size
    parts, run = [], []
    for i in ids:
        if 0 <= i < size:
            run.append(i)
        else:
            parts += [tokenizer.decode(run), UNKNOWN]
            run = []
    parts.append(tokenizer.decode(run))
    return "".join(parts).strip()


class _Split:
    """One dataset's chosen validation examples as fixed-size (padded) uint8 batches."""

    def __init__(self, name: str, kind: str, batches: list[dict], valid: list[int], info, size: int):
        self.name, self.kind, self.batches, self.valid, self.info, self.size = name, kind, batches, valid, info, size


class OfflineEvaluator:
    """Offline metrics for one config; the data is read once, the model functions compile once.

    ``model``: a ``vla_jax.models.vla.VLA`` (built from ``config.model`` if None). ``datasets``: names
    (default every dataset of ``config.data.mixture``). ``split``: default each dataset's eval split.

    ``robot_fn(params, batch, rng) -> [B, H, A]`` normalized actions and ``text_fn(params, batch) ->
    int [B, N]`` generated tokens replace the model's sampler / greedy decoder (oracles in tests); both
    receive the full batch (with targets), the defaults only look at the observation / the prompt.
    """

    def __init__(self, config, model=None, *, max_batches: int | None = DEFAULT_MAX_BATCHES,
                 batch_size: int | None = None, seed: int = 0, split: str | None = None,
                 datasets: Sequence[str] | None = None, max_answer_tokens: int | None = None,
                 robot_fn: Callable | None = None, text_fn: Callable | None = None):
        if config.data.get("kind", "mixture") == "synthetic":
            raise OfflineError("offline metrics need real datasets with validation splits; "
                               "config.data.kind='synthetic' has none")
        self.config = config
        self.model = model if model is not None else VLA(make_config(config.model))
        self.settings = read_settings(config)
        self.tokenizer = load_tokenizer(self.settings)
        self.max_batches = max_batches
        self.batch_size = int(batch_size or min(int(config.batch_size), 32))
        self.seed = int(seed)
        self.split = split
        names = list(self.settings.mixture)
        for name in datasets or ():
            if name not in names:
                raise OfflineError(f"dataset '{name}' is not in config.data.mixture ({', '.join(names)})")
        self.names = list(datasets) if datasets else names
        self.head = self.model.cfg.action_head
        self.max_answer_tokens = int(max_answer_tokens or self.model.cfg.max_text_len)
        self._robot_fn, self._text_fn = robot_fn, text_fn
        self._loss_fn = None
        self._splits: dict[str, _Split] | None = None

    # ------------------------------------------------------------------------------------------ data
    def _load(self) -> dict[str, _Split]:
        if self._splits is not None:
            return self._splits
        out = {}
        for name in self.names:
            entry, ds = dataset_examples(self.settings, name, self.tokenizer, split=self.split, seed=self.seed)
            total = len(entry.source)
            want = total if self.max_batches is None else min(total, self.max_batches * self.batch_size)
            indices = (np.arange(want, dtype=np.int64) * total) // max(want, 1)  # evenly spread, increasing
            batches, valid = [], []
            for start in range(0, len(indices), self.batch_size):
                rows = [ds[int(i)] for i in indices[start: start + self.batch_size]]
                n = len(rows)
                rows += [rows[0]] * (self.batch_size - n)  # fixed shapes: one compile
                batches.append({k: np.stack([r[k] for r in rows]) for k in rows[0]})
                valid.append(n)
            out[name] = _Split(name, entry.kind, batches, valid, entry.info, total)
        self._splits = out
        return out

    # ------------------------------------------------------------------------------------------ model fns
    def _fns(self):
        if self._loss_fn is not None:
            return
        self._loss_fn = _jitted(self.model, "loss")
        if self._robot_fn is None:
            sample = _jitted(self.model, "sample")
            self._robot_fn = lambda p, b, r: sample(p, _observation(b), r)
        if self._text_fn is None:
            decode = _jitted(self.model, "decode", self.max_answer_tokens)
            self._text_fn = lambda p, b: decode(p, _observation(b))

    # ------------------------------------------------------------------------------------------ metrics
    def __call__(self, params) -> dict[str, dict]:
        """{dataset: {metric: value}} (see the module doc) for ``params`` ({"params": ...})."""
        self._fns()
        key = jax.random.PRNGKey(self.seed)
        results = {}
        for d, (name, split) in enumerate(self._load().items()):
            acc = _Accumulator(split, self.head, self.tokenizer)
            for b, (raw, n) in enumerate(zip(split.batches, split.valid)):
                batch = finalize_batch(dict(raw))
                rng = jax.random.fold_in(jax.random.fold_in(key, d), b)
                loss_rng, sample_rng = jax.random.split(rng)
                terms = jax.device_get(self._loss_fn(params, batch, loss_rng))
                acc.add_losses(terms, n)
                if n > 1:  # the valid rows' inputs moved by one row: all images, one camera slot, the text
                    order = np.concatenate([np.roll(np.arange(n), 1), np.arange(n, len(batch["images"]))])
                    moved = {k: batch[k][order] for k in _IMAGE_KEYS + _TEXT_KEYS}
                    slot = np.arange(batch["image_mask"].shape[1])
                    variants = {"all": {k: moved[k] for k in _IMAGE_KEYS}}
                    for k in slot[batch["image_mask"][:n].any(axis=0)]:
                        variants[int(k)] = {key: np.where((slot == k).reshape(-1, *[1] * (batch[key].ndim - 2)),
                                                          moved[key], batch[key]) for key in _IMAGE_KEYS}
                    if split.kind == "robot":
                        variants["instruction"] = {k: moved[k] for k in _TEXT_KEYS}
                    for which, inputs in variants.items():
                        acc.add_losses(jax.device_get(self._loss_fn(params, {**batch, **inputs}, loss_rng)), n,
                                       swapped=which)
                if split.kind == "robot":
                    acc.add_actions(np.asarray(self._robot_fn(params, batch, sample_rng), np.float32), batch, n)
                if split.kind == "web" or batch["token_ar"][:n].any():  # robot: grounding answers
                    acc.add_text(np.asarray(self._text_fn(params, batch)), batch, n)
            results[name] = acc.result()
        return results


def _observation(batch: dict) -> dict:
    """The observation keys of a batch with its answers (web VQA, robot grounding) removed from the text:
    what the policy / the decoder sees at inference."""
    prompt = batch["token_mask"] & ~batch["token_ar"]
    obs = {k: batch[k] for k in OBSERVATION_KEYS}
    obs.update(tokens=np.where(prompt, batch["tokens"], 0).astype(np.int32), token_mask=prompt)
    return obs


@functools.lru_cache(maxsize=16)
def _jitted(model, what: str, num_tokens: int = 0):
    """Jitted model functions shared by evaluators of equal models (compiled once per process)."""
    if what == "loss":
        return jax.jit(lambda p, b, r: model.apply(p, b, r, method=vla.VLA.compute_loss))
    if what == "sample":
        return jax.jit(lambda p, obs, r: vla.sample(model, p, obs, r))
    return jax.jit(lambda p, obs: vla.greedy_decode(model, p, obs, num_tokens, actions_only=False))


class _Accumulator:
    def __init__(self, split: _Split, head: str, tokenizer):
        self.split, self.head, self.tokenizer = split, head, tokenizer
        self.loss: dict[str, list] = {}  # head -> [(sum, count) per example]
        self.swapped: dict = {}  # "all" | camera slot | "instruction" -> the same with another example's input
        self.sq, self.ab, self.sq_norm, self.count = 0.0, 0.0, 0.0, 0
        self.sq_dim = None
        self.count_dim = None
        self.example_mse: list[float] = []
        self.translation_errors: list[float] = []
        self.tok_right, self.tok_count = 0, 0
        self.exact: list[bool] = []
        self.samples: list[dict] = []

    def add_losses(self, terms: Mapping, n: int, swapped: str | int | None = None) -> None:
        into = self.loss if swapped is None else self.swapped.setdefault(swapped, {})
        for head, (sums, counts) in terms.items():
            sums, counts = np.asarray(sums, np.float64)[:n], np.asarray(counts, np.float64)[:n]
            keep = counts > 0
            into.setdefault(head, []).extend(zip(sums[keep].tolist(), counts[keep].tolist()))

    def add_actions(self, pred: np.ndarray, batch: dict, n: int) -> None:
        info = self.split.info
        a = info.action_dim
        pred, target = pred[:n], np.asarray(batch["actions"], np.float32)[:n]
        steps = np.asarray(batch["action_step_mask"], bool)[:n]
        mask = np.broadcast_to(steps[:, :, None], steps.shape + (a,))
        raw_pred = info.action_norm.inverse(pred[..., :a])
        raw_target = info.action_norm.inverse(target[..., :a])
        err = np.where(mask, raw_pred.astype(np.float64) - raw_target, 0.0)
        err_norm = np.where(mask, pred[..., :a].astype(np.float64) - target[..., :a], 0.0)
        self.sq += float(np.square(err).sum())
        self.ab += float(np.abs(err).sum())
        self.sq_norm += float(np.square(err_norm).sum())
        self.count += int(mask.sum())
        sq_dim = np.square(err).sum(axis=(0, 1))
        cnt_dim = mask.sum(axis=(0, 1))
        self.sq_dim = sq_dim if self.sq_dim is None else self.sq_dim + sq_dim
        self.count_dim = cnt_dim if self.count_dim is None else self.count_dim + cnt_dim
        per_example = np.square(err).sum(axis=(1, 2)) / np.maximum(mask.sum(axis=(1, 2)), 1)
        self.example_mse.extend(per_example[mask.sum(axis=(1, 2)) > 0].tolist())
        for dims in info.translation_dims:  # [n, 3]: where each chunk takes that arm
            gap = np.linalg.norm(err[:, :, list(dims)].sum(axis=1), axis=-1)
            self.translation_errors.extend(gap[steps.any(axis=1)].tolist())
        if self.head == "discrete":
            # token ids relative to a 256-id vocabulary: the same bins as the model's last 256 ids
            bins = lambda x: np.asarray(action_tokens.encode(x, action_tokens.NUM_BINS))  # noqa: E731
            right = (bins(pred[..., :a]) == bins(target[..., :a])) & mask
            self.tok_right += int(right.sum())
            self.tok_count += int(mask.sum())

    def add_text(self, generated: np.ndarray, batch: dict, n: int) -> None:
        tok = self.tokenizer
        for i in range(n):
            answer = np.asarray(batch["token_mask"][i] & batch["token_ar"][i], bool)
            if not answer.any():
                continue
            prompt = np.asarray(batch["token_mask"][i], bool) & ~answer
            answer_ids = batch["tokens"][i][answer].tolist()
            reference = _decode_until_eos(tok, answer_ids)
            cut = generated[i] if tok.eos_id in answer_ids else generated[i][: len(answer_ids)]  # truncated answer
            prediction = _decode_until_eos(tok, cut)
            self.exact.append(prediction == reference)
            if len(self.samples) < NUM_SAMPLES:
                prompt_ids = [t for t in batch["tokens"][i][prompt].tolist() if t != tok.bos_id]
                self.samples.append({"prompt": tok.decode(prompt_ids), "reference": reference,
                                     "prediction": prediction})

    def result(self) -> dict:
        out = {"kind": self.split.kind, "split_size": self.split.size, "examples": int(sum(self.split.valid))}
        for head, pairs in sorted(self.loss.items()):
            sums = np.array([p[0] for p in pairs])
            counts = np.array([p[1] for p in pairs])
            if counts.sum() <= 0:
                continue
            out[f"loss/{head}"] = float(sums.sum() / counts.sum())
            out[f"loss/{head}_se"] = _se(sums / counts)
            if f"loss/{head}" != head_loss_key(out):
                continue
            for which, terms in self.swapped.items():
                other = terms.get(head)
                if other:
                    swapped = sum(p[0] for p in other) / max(sum(p[1] for p in other), 1e-12)
                    key = {"all": "image_reliance", "instruction": "instruction_reliance"}.get(
                        which, f"camera_reliance/{which}")
                    out[key] = swapped / out[f"loss/{head}"] - 1.0
        if self.split.kind == "robot":
            c = max(self.count, 1)
            out.update(action_mse=self.sq / c, action_mse_se=_se(self.example_mse), action_l1=self.ab / c,
                       action_mse_normalized=self.sq_norm / c, action_elements=self.count,
                       action_mse_per_dim=(self.sq_dim / np.maximum(self.count_dim, 1)).tolist()
                       if self.sq_dim is not None else [])
            if self.translation_errors:
                out["chunk_translation_error"] = float(np.mean(self.translation_errors))
                out["chunk_translation_error_se"] = _se(np.asarray(self.translation_errors))
            if self.head == "discrete":
                out["token_accuracy"] = self.tok_right / max(self.tok_count, 1)
        if self.split.kind == "web" or self.exact:
            out["exact_match"] = float(np.mean(self.exact)) if self.exact else float("nan")
            out["exact_match_se"] = _se(np.asarray(self.exact, np.float64))
            out["answers"] = len(self.exact)
            out["samples"] = self.samples
        return out


def _se(values) -> float:
    values = np.asarray(values, np.float64)
    if values.size < 2:
        return 0.0
    return float(values.std(ddof=1) / math.sqrt(values.size))


def offline_metrics(config, model, params, **kwargs) -> dict[str, dict]:
    """One-shot :class:`OfflineEvaluator` (``kwargs`` as its constructor)."""
    return OfflineEvaluator(config, model, **kwargs)(params)


# ---------------------------------------------------------------------------------------------- display
COUNTS = ("split_size", "examples", "action_elements", "answers")


def flatten(metrics: Mapping[str, Mapping], prefix: str = "offline") -> dict[str, float]:
    """{"<prefix>/<dataset>/<metric>": float} of the scalar metrics (standard errors included, counts not)."""
    out = {}
    for name, m in metrics.items():
        for k, v in m.items():
            if isinstance(v, (int, float, np.floating, np.integer)) and not isinstance(v, bool) and k not in COUNTS:
                out[f"{prefix}/{name}/{k}" if prefix else f"{name}/{k}"] = float(v)
    return out


def _fmt(v, digits=4) -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and not math.isfinite(v):
        return "nan"
    return f"{v:.{digits}g}" if isinstance(v, float) else str(v)


def head_loss_key(m: Mapping) -> str | None:
    """The validation-loss key of a dataset's own head: ``loss/flow`` or ``loss/discrete`` for robot data,
    ``loss/text`` for web data (None if absent)."""
    keys = ("loss/text",) if m.get("kind") == "web" else ("loss/flow", "loss/discrete")
    return next((k for k in keys if k in m), None)


def format_reliance(m: Mapping) -> str:
    """``+34.1%`` (all views), followed by the per-slot values when there are several: ``(+0.2 / +30.5)``."""
    if "image_reliance" not in m:
        return "-"
    slots = sorted(int(k.split("/")[1]) for k in m if k.startswith("camera_reliance/"))
    per = " / ".join(f"{100 * m[f'camera_reliance/{k}']:+.1f}" for k in slots)
    return f"{100 * m['image_reliance']:+.1f}%" + (f" ({per})" if len(slots) > 1 else "")


def format_translation(m: Mapping) -> str:
    if "chunk_translation_error" not in m:
        return "-"
    return f"{_fmt(m['chunk_translation_error'])} ± {_fmt(m['chunk_translation_error_se'], 2)}"


def format_instruction_reliance(m: Mapping) -> str:
    return f"{100 * m['instruction_reliance']:+.1f}%" if "instruction_reliance" in m else "-"


def format_table(metrics: Mapping[str, Mapping]) -> str:
    """Markdown table: one row per dataset."""
    head = ("| dataset | kind | examples | val loss | action MSE (robot units) | action L1 | MSE (normalized) "
            "| chunk translation error | token acc | exact match | image reliance (per camera) "
            "| instruction reliance |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
    rows = []
    for name, m in metrics.items():
        loss_key = head_loss_key(m)
        loss = f"{_fmt(m[loss_key])} ± {_fmt(m[loss_key + '_se'], 2)} ({loss_key[5:]})" if loss_key else "-"
        mse = f"{_fmt(m['action_mse'])} ± {_fmt(m['action_mse_se'], 2)}" if "action_mse" in m else "-"
        has_em = "exact_match" in m and math.isfinite(m["exact_match"])
        em = f"{100 * m['exact_match']:.0f}% ({m['answers']})" if has_em else "-"
        tok = f"{100 * m['token_accuracy']:.1f}%" if "token_accuracy" in m else "-"
        rows.append(f"| {name} | {m['kind']} | {m['examples']} | {loss} | {mse} | {_fmt(m.get('action_l1'))} "
                    f"| {_fmt(m.get('action_mse_normalized'))} | {format_translation(m)} | {tok} | {em} "
                    f"| {format_reliance(m)} "
                    f"| {format_instruction_reliance(m)} |")
    return head + "\n".join(rows) + "\n"
