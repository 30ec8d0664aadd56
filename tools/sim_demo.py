"""Rolls out the scripted expert for one task per family and embodiment and writes a PNG filmstrip.

Each row is one episode (label: embodiment, instruction, success); each column a time step with
that embodiment's cameras stacked top to bottom.

    python tools/sim_demo.py --out=/tmp/sim_demo.png
"""

from __future__ import annotations

import argparse

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from vla_jax.platform import jax_defaults

jax_defaults()

from vla_jax.sim import EMBODIMENTS, FAMILIES, collect_episode, sample_task  # noqa: E402

_FONT_SIZE = 18  # pixels: readable at the strip's scale=2 without zooming
_LABEL_H = _FONT_SIZE + 8
_GAP = 4


def episode_strip(episode: dict, frames: int, scale: int) -> np.ndarray:
    """uint8 [cameras * R * scale, frames * (R * scale + gap), 3]: evenly spaced steps, cameras stacked."""
    steps = episode["steps"]
    picks = np.linspace(0, len(steps) - 1, frames).round().astype(int)
    columns = []
    for t in picks:
        obs = steps[t]["observation"]
        cams = [obs[k] for k in sorted(obs) if k.startswith("image_")]
        col = np.concatenate(cams, axis=0).repeat(scale, axis=0).repeat(scale, axis=1)
        columns.append(np.pad(col, ((0, 0), (0, _GAP), (0, 0)), constant_values=255))
    return np.concatenate(columns, axis=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="PNG path to write")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--split", default="train")
    parser.add_argument("--image_size", type=int, default=96)
    parser.add_argument("--frames", type=int, default=8, help="time steps shown per episode")
    parser.add_argument("--scale", type=int, default=2, help="pixel upscaling for viewing")
    args = parser.parse_args()

    rows = []
    for name, spec in EMBODIMENTS.items():
        for i, family in enumerate(FAMILIES):
            seed = args.seed * 100 + i
            task = sample_task(np.random.default_rng(seed), family, args.split)
            episode = collect_episode(name, task, seed, spec.max_episode_steps, args.image_size)
            meta = episode["episode_metadata"]
            label = f"{name} | {task.instruction} | success={meta['success']} | {len(episode['steps'])} steps"
            rows.append((label, episode_strip(episode, args.frames, args.scale)))

    width = max(strip.shape[1] for _, strip in rows)
    height = sum(strip.shape[0] + _LABEL_H + _GAP for _, strip in rows)
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=_FONT_SIZE)
    y = 0
    for label, strip in rows:
        draw.text((4, y + 2), label, fill="black", font=font)
        canvas.paste(Image.fromarray(strip), (0, y + _LABEL_H))
        y += strip.shape[0] + _LABEL_H + _GAP
    canvas.save(args.out)
    print(f"wrote {args.out} ({width}x{height})")


if __name__ == "__main__":
    main()
