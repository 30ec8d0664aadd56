"""Per-example transforms: a registry of named image ops (big_vision style) and the fixed
conversion of a raw robot / web sample into one example of the batch format (vla_jax/batch.py).

Ops are named in config as strings, e.g.::

    config.data.train_ops = ("random_resized_crop(scale=(0.8, 1.0), ratio=(0.9, 1.1), slots=(0,))",
                             "color_jitter(brightness=0.2, contrast=0.2, saturation=0.2)")
    config.data.eval_ops = ()

Each string is ``name`` or ``name(args...)`` with Python-literal arguments. ``name`` looks up a
factory in :data:`OPS` (add one with :func:`register_op`); the factory gets an :class:`OpContext`
plus the arguments and returns ``op(sample, rng) -> sample``. Ops see ``sample["images"]``: a list
over camera slots of ``PIL.Image`` (or None for a missing camera). After the ops, every image is
resized to ``config.model.image_size`` if it is not already, and scaled to [-1, 1].
"""

from __future__ import annotations

import dataclasses
import io
from typing import Callable

import numpy as np

from vla_jax.data import prompts
from vla_jax.config import ConfigError, parse_call
from vla_jax.data.errors import DataError

# --------------------------------------------------------------------------- op registry


@dataclasses.dataclass(frozen=True)
class OpContext:
    image_size: int
    num_cameras: int


OPS: dict[str, Callable] = {}


def register_op(name: str):
    def wrap(factory):
        OPS[name] = factory
        return factory

    return wrap


def parse_op(text: str):
    """``"name(1, k=(2, 3))"`` -> ("name", (1,), {"k": (2, 3)}); DataError on bad syntax."""
    try:
        return parse_call(text, "config.data.*_ops")
    except ConfigError as e:
        raise DataError(str(e)) from None


def build_ops(texts, ctx: OpContext) -> list:
    ops = []
    for text in texts or ():
        name, args, kwargs = parse_op(text)
        if name not in OPS:
            raise DataError(f"unknown op {name!r} in config.data.*_ops; registered ops: {sorted(OPS)}")
        try:
            ops.append(OPS[name](ctx, *args, **kwargs))
        except TypeError as e:
            raise DataError(f"bad arguments for op {text!r}: {e}") from None
    return ops


def _slots(images, slots):
    return [i for i, im in enumerate(images) if im is not None and (slots is None or i in slots)]


@register_op("resize")
def _resize(ctx: OpContext, size: int | None = None):
    size = size or ctx.image_size

    def op(sample, rng):
        from PIL import Image

        images = sample["images"]
        for i in _slots(images, None):
            if images[i].size != (size, size):
                images[i] = images[i].resize((size, size), Image.BILINEAR)
        return sample

    return op


@register_op("resize_with_pad")
def _resize_with_pad(ctx: OpContext, size: int | None = None, slots=None):
    """Resize keeping the aspect ratio to fit ``size`` (default image_size), then pad with black, centered
    (openpi's ``resize_with_pad``: an odd padding puts the extra row / column at the bottom / right)."""
    size = size or ctx.image_size

    def op(sample, rng):
        images = sample["images"]
        for i in _slots(images, slots):
            images[i] = resize_with_pad(images[i], size)
        return sample

    return op


def resize_with_pad(image, size: int):
    """PIL image -> ``size`` x ``size`` PIL image: bilinear resize by ``1 / max(w / size, h / size)``
    (sides truncated to ints), then black borders split evenly, the odd pixel after the image."""
    from PIL import Image

    w, h = image.size
    if (w, h) == (size, size):
        return image
    ratio = max(w / size, h / size)
    rw, rh = int(w / ratio), int(h / ratio)
    if (rw, rh) != (w, h):
        image = image.resize((rw, rh), Image.BILINEAR)
    canvas = Image.new(image.mode, (size, size))
    canvas.paste(image, ((size - rw) // 2, (size - rh) // 2))
    return canvas


@register_op("random_resized_crop")
def _random_resized_crop(ctx: OpContext, scale=(0.8, 1.0), ratio=(0.9, 1.1), slots=None):
    """Crop a random box of ``scale`` (fraction of the area) and aspect ``ratio``; resize to image_size."""
    log_ratio = (np.log(ratio[0]), np.log(ratio[1]))

    def op(sample, rng):
        from PIL import Image

        images = sample["images"]
        for i in _slots(images, slots):
            w, h = images[i].size
            area = w * h * rng.uniform(*scale)
            aspect = np.exp(rng.uniform(*log_ratio))
            cw = min(w, np.sqrt(area * aspect))
            ch = min(h, np.sqrt(area / aspect))
            x0 = rng.uniform(0, w - cw)
            y0 = rng.uniform(0, h - ch)
            size = (ctx.image_size, ctx.image_size)
            images[i] = images[i].resize(size, Image.BILINEAR, box=(x0, y0, x0 + cw, y0 + ch))
        return sample

    return op


@register_op("center_crop")
def _center_crop(ctx: OpContext, scale=0.9, slots=None):
    """Deterministic counterpart of random_resized_crop for eval: keep the central ``scale`` of the area."""

    def op(sample, rng):
        from PIL import Image

        images = sample["images"]
        for i in _slots(images, slots):
            w, h = images[i].size
            cw, ch = w * np.sqrt(scale), h * np.sqrt(scale)
            box = ((w - cw) / 2, (h - ch) / 2, (w + cw) / 2, (h + ch) / 2)
            images[i] = images[i].resize((ctx.image_size, ctx.image_size), Image.BILINEAR, box=box)
        return sample

    return op


@register_op("drop_cameras")
def _drop_cameras(ctx: OpContext, p=0.5, slots=(1, 2)):
    """Observation dropout: each camera of ``slots`` goes missing (image_mask False) with probability ``p``,
    never leaving an example without a camera (Octo-style observation dropout, meant to keep a policy from
    leaning on one view)."""
    if not 0.0 <= p <= 1.0:
        raise DataError(f"drop_cameras(p={p}): p must be in [0, 1]")

    def op(sample, rng):
        images = sample["images"]
        present = _slots(images, None)
        for i in _slots(images, slots):
            if rng.random() < p and len(present) > 1:
                images[i] = None
                present.remove(i)
        return sample

    return op


@register_op("color_jitter")
def _color_jitter(ctx: OpContext, brightness=0.2, contrast=0.2, saturation=0.2, slots=None):
    """Multiply brightness / contrast / saturation by factors drawn from [1 - x, 1 + x]."""

    def op(sample, rng):
        from PIL import ImageEnhance

        images = sample["images"]
        for i in _slots(images, slots):
            image = images[i]
            for amount, enhancer in (
                (brightness, ImageEnhance.Brightness),
                (contrast, ImageEnhance.Contrast),
                (saturation, ImageEnhance.Color),
            ):
                if amount:
                    image = enhancer(image).enhance(rng.uniform(1 - amount, 1 + amount))
            images[i] = image
        return sample

    return op


# --------------------------------------------------------------------------- batch-format examples


@dataclasses.dataclass(frozen=True)
class Dims:
    """The model dimensions the batch format needs (read from config.model in settings.py)."""

    num_cameras: int
    image_size: int
    max_text_len: int
    action_horizon: int
    max_action_dim: int
    max_state_dim: int


@dataclasses.dataclass
class RobotSourceInfo:
    action_norm: object  # stats.Normalizer
    state_norm: object
    action_dim: int
    state_dim: int
    translation_dims: tuple = ()  # the spec's action_translation_dims (offline chunk translation error)
    kind: str = "robot"


@dataclasses.dataclass
class WebSourceInfo:
    caption_prompt: str = "caption en"
    kind: str = "web"


def decode_image(data: bytes):
    """Decodes JPEG/PNG bytes into an RGB ``PIL.Image``."""
    from PIL import Image

    image = Image.open(io.BytesIO(data))
    return image if image.mode == "RGB" else image.convert("RGB")


def to_pil(image):
    """bytes (JPEG/PNG), uint8 array or PIL image -> RGB PIL image."""
    from PIL import Image

    if image is None:
        return None
    if isinstance(image, (bytes, bytearray)):
        return decode_image(bytes(image))
    if isinstance(image, np.ndarray):
        return Image.fromarray(np.asarray(image, np.uint8))
    return image


def build_tokens(tokenizer, prompt: str, answer: str | None, max_len: int, prompt_format: str = "plain",
                 state=None):
    """Prompt tokens (bos + prompt in ``prompt_format``, vla_jax/data/prompts.py; bidirectional, no loss)
    then answer tokens (+ eos, causal, loss). ``state``: the normalized state, for "pi05"."""
    prompt_ids = prompts.prompt_ids(tokenizer, prompt_format, prompt, state)
    answer_ids = tokenizer.encode(answer, eos=True) if answer is not None else []
    if len(prompt_ids) + len(answer_ids) > max_len:
        keep_prompt = max(max_len - len(answer_ids), min(len(prompt_ids), max_len // 2))
        prompt_ids = prompt_ids[:keep_prompt]
        answer_ids = answer_ids[: max_len - len(prompt_ids)]
    n_p, n_a = len(prompt_ids), len(answer_ids)
    tokens = np.full(max_len, tokenizer.pad_id, np.int32)
    tokens[: n_p + n_a] = prompt_ids + answer_ids
    mask = np.zeros(max_len, bool)
    mask[: n_p + n_a] = True
    ar = np.zeros(max_len, bool)
    ar[n_p : n_p + n_a] = True
    return tokens, mask, ar, ar.copy()


def finalize_batch(batch: dict) -> dict:
    """uint8 images (as examples and batches travel between processes: 4x less than float32) ->
    float32 in [-1, 1], missing cameras 0. Applied once per batch by the iterators / policy I/O."""
    images = batch["images"]
    if images.dtype == np.uint8:
        out = np.zeros(images.shape, np.float32)
        for b, c in zip(*np.nonzero(batch["image_mask"])):  # present cameras only, in place: no full-size temporaries
            x = out[b, c]
            np.multiply(images[b, c], np.float32(2.0 / 255.0), out=x, dtype=np.float32)
            x -= np.float32(1.0)
        batch = dict(batch, images=out)
    return batch


class SampleTransform:
    """Raw sample (from a source in sources/mixture) -> one batch-format example (uint8 images until
    :func:`finalize_batch`).

    Raw robot sample: {"source", "images": [bytes|array|None per slot], "state": [S_d],
    "actions": [H, A_d] raw, "num_steps": valid chunk steps, "instruction": str, and optionally
    "grounding": str (where the target is, "" for none; it follows the prompt as a text-loss answer
    that the action tokens never attend to)}.
    Raw web sample: {"source", "images": [...], "caption": str, "qa": [(q, a), ...]}.
    """

    def __init__(self, dims: Dims, tokenizer, source_infos: list, ops: list, prompt_format: str = "plain"):
        self.dims = dims
        self.tokenizer = tokenizer
        self.source_infos = source_infos
        self.ops = ops
        self.prompt_format = prompts.check_prompt_format(prompt_format)

    def _images(self, raw_images, rng):
        d = self.dims
        sample = {"images": [to_pil(im) for im in list(raw_images)[: d.num_cameras]]}
        sample["images"] += [None] * (d.num_cameras - len(sample["images"]))
        for op in self.ops:
            sample = op(sample, rng)
        images = np.zeros((d.num_cameras, d.image_size, d.image_size, 3), np.uint8)
        mask = np.zeros(d.num_cameras, bool)
        for i, image in enumerate(sample["images"]):
            if image is None:
                continue
            if image.size != (d.image_size, d.image_size):
                from PIL import Image

                image = image.resize((d.image_size, d.image_size), Image.BILINEAR)
            images[i] = np.asarray(image, np.uint8)
            mask[i] = True
        return images, mask

    def __call__(self, raw: dict, rng: np.random.Generator) -> dict:
        d = self.dims
        info = self.source_infos[raw["source"]]
        images, image_mask = self._images(raw["images"], rng)
        state = np.zeros(d.max_state_dim, np.float32)
        state_mask = np.zeros(d.max_state_dim, bool)
        actions = np.zeros((d.action_horizon, d.max_action_dim), np.float32)
        action_dim_mask = np.zeros(d.max_action_dim, bool)
        action_step_mask = np.zeros(d.action_horizon, bool)
        if info.kind == "robot":
            # Robot prompt: bidirectional, no text loss; a grounding answer after it is causal with loss.
            state[: info.state_dim] = info.state_norm(raw["state"])
            tokens, token_mask, token_ar, token_loss = build_tokens(
                self.tokenizer, raw["instruction"], raw.get("grounding") or None, d.max_text_len,
                self.prompt_format, state[: info.state_dim],
            )
            state_mask[: info.state_dim] = True
            if "actions" in raw:
                n = int(raw["num_steps"])
                actions[:n, : info.action_dim] = info.action_norm(raw["actions"][:n])
                action_step_mask[:n] = True
            action_dim_mask[: info.action_dim] = True
            has_actions = "actions" in raw
        else:
            choices = [(info.caption_prompt, raw["caption"])] if raw.get("caption") else []
            choices += list(raw.get("qa", ()))
            if not choices:
                raise DataError(f"web example from source {raw['source']} has neither caption nor QA")
            prompt, answer = choices[int(rng.integers(len(choices)))]
            # No state: the openpi formats give web prompts PaliGemma's "prefix\n" form (pi0's).
            web_format = "plain" if self.prompt_format == "plain" else "pi0"
            tokens, token_mask, token_ar, token_loss = build_tokens(self.tokenizer, prompt, answer, d.max_text_len,
                                                                    web_format)
            has_actions = False
        return {
            "images": images,
            "image_mask": image_mask,
            "tokens": tokens,
            "token_mask": token_mask,
            "token_ar": token_ar,
            "token_loss": token_loss,
            "state": state,
            "state_mask": state_mask,
            "actions": actions,
            "action_dim_mask": action_dim_mask,
            "action_step_mask": action_step_mask,
            "has_actions": np.bool_(has_actions),
            "source": np.int32(raw["source"]),
        }
