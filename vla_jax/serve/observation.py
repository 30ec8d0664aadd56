"""What a request must hold for one robot and model, as metadata and as a check: ``ObservationSpec.parse``.

A request is the robot's observation dict (:class:`~vla_jax.serve.robots.RobotConfig` keys) plus, optionally,
``noise``: float [H, A] (the flow's initial noise, A = the model's max action dim) or ``noise_seed``: int (the
noise is ``np.random.default_rng(noise_seed).standard_normal((H, A))``). Any violation is a one-line
:class:`RequestError` naming the key.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from vla_jax.serve.robots import RobotConfig

NOISE, NOISE_SEED = "noise", "noise_seed"
MAX_IMAGE_SIDE = 4096
MAX_PROMPT_CHARS = 2000


class RequestError(ValueError):
    """A request that does not match the served robot; one line."""


@dataclasses.dataclass
class Observation:
    """One parsed request. images: per camera slot uint8 [H, W, 3] or None; state: float32 [state_dim]."""

    images: list[np.ndarray | None]
    state: np.ndarray
    prompt: str
    noise: np.ndarray | None = None  # float32 [H, A]
    noise_seed: int | None = None


def flatten(obs: dict, prefix: str = "") -> dict:
    """``{"a": {"b": x}, "c/d": y}`` -> ``{"a/b": x, "c/d": y}`` (string keys only)."""
    out = {}
    for key, value in obs.items():
        if not isinstance(key, str):
            raise RequestError(f"observation key {key!r} is not a string")
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, path + "/"))
        else:
            out[path] = value
    return out


class ObservationSpec:
    """The request layout of ``robot`` for a model with ``num_cameras`` slots and [H, A] action chunks."""

    def __init__(self, robot: RobotConfig, num_cameras: int, horizon: int, max_action_dim: int):
        self.robot = robot
        self.cameras = list(robot.cameras[:num_cameras]) + [None] * max(0, num_cameras - len(robot.cameras))
        self.noise_shape = (horizon, max_action_dim)
        required = [k for k in self.cameras if k] + [k for k, _ in robot.state]
        self.required = required + ([robot.prompt_key] if robot.default_prompt is None else [])
        self.allowed = set(required) | {robot.prompt_key, NOISE, NOISE_SEED}

    def describe(self) -> dict:
        """{key: {"dtype", "shape", "required"}}: images with free sizes as None, "str" for the prompt."""
        image = [3, None, None] if self.robot.image_layout == "chw" else [None, None, 3]
        out = {k: {"dtype": "uint8", "shape": image, "required": True} for k in self.cameras if k}
        out.update({k: {"dtype": "float32", "shape": [n], "required": True} for k, n in self.robot.state})
        out[self.robot.prompt_key] = {"dtype": "str", "shape": [], "required": self.robot.default_prompt is None}
        out[NOISE] = {"dtype": "float32", "shape": list(self.noise_shape), "required": False}
        out[NOISE_SEED] = {"dtype": "int", "shape": [], "required": False}
        return out

    def parse(self, obs) -> Observation:
        """Checks a decoded request and returns its :class:`Observation`; RequestError on the first problem."""
        if not isinstance(obs, dict):
            raise RequestError(f"request is a {type(obs).__name__}, not an observation dict")
        flat = flatten(obs)
        unknown = sorted(set(flat) - self.allowed)
        if unknown:
            raise RequestError(f"unknown key {unknown[0]!r}; expected {', '.join(sorted(self.allowed))}")
        missing = [k for k in self.required if k not in flat]
        if missing:
            raise RequestError(f"missing key {missing[0]!r}")
        images = [self._image(k, flat[k]) if k else None for k in self.cameras]
        state = np.concatenate([self._vector(k, flat[k], n) for k, n in self.robot.state])
        prompt = flat.get(self.robot.prompt_key, self.robot.default_prompt)
        if not isinstance(prompt, str) or len(prompt) > MAX_PROMPT_CHARS:
            raise RequestError(f"{self.robot.prompt_key!r} must be a string of at most {MAX_PROMPT_CHARS} characters")
        noise = None if NOISE not in flat else self._noise(flat[NOISE])
        seed = flat.get(NOISE_SEED)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))
                                 or not 0 <= int(seed) < 2 ** 63):
            raise RequestError(f"{NOISE_SEED!r} must be an integer in [0, 2**63)")
        return Observation(images, state, prompt, noise, None if seed is None else int(seed))

    def _image(self, key: str, value) -> np.ndarray:
        want = "[3, H, W]" if self.robot.image_layout == "chw" else "[H, W, 3]"
        if not isinstance(value, np.ndarray):
            raise RequestError(f"{key!r} is a {type(value).__name__}; expected a uint8 array {want}")
        if value.dtype != np.uint8:
            raise RequestError(f"{key!r} has dtype {value.dtype}; expected uint8 {want}")
        if value.ndim != 3:
            raise RequestError(f"{key!r} has shape {list(value.shape)}; expected uint8 {want}")
        image = np.moveaxis(value, 0, -1) if self.robot.image_layout == "chw" else value
        if image.shape[-1] != 3:
            raise RequestError(f"{key!r} has {image.shape[-1]} channels (shape {list(value.shape)}); expected {want}")
        if not (1 <= image.shape[0] <= MAX_IMAGE_SIDE and 1 <= image.shape[1] <= MAX_IMAGE_SIDE):
            raise RequestError(f"{key!r} has shape {list(value.shape)}; sides must be 1..{MAX_IMAGE_SIDE}")
        return np.ascontiguousarray(image)

    def _vector(self, key: str, value, size: int) -> np.ndarray:
        array = value if isinstance(value, np.ndarray) else np.asarray(value) if isinstance(
            value, (int, float, list)) else None
        if array is None or array.dtype.kind not in "iuf":
            kind = type(value).__name__ if array is None else array.dtype
            raise RequestError(f"{key!r} is {kind}; expected numbers, float32 [{size}]")
        if array.shape not in ((size,), () if size == 1 else (size,)):
            raise RequestError(f"{key!r} has shape {list(array.shape)}; expected [{size}]")
        array = array.astype(np.float32).reshape(size)
        if not np.all(np.isfinite(array)):
            raise RequestError(f"{key!r} has non-finite values")
        return array

    def _noise(self, value) -> np.ndarray:
        h, a = self.noise_shape
        if not isinstance(value, np.ndarray) or value.dtype.kind != "f" or value.shape != self.noise_shape:
            shape = list(value.shape) if isinstance(value, np.ndarray) else type(value).__name__
            raise RequestError(f"{NOISE!r} is {shape}; expected float32 [{h}, {a}]")
        noise = value.astype(np.float32)
        if not np.all(np.isfinite(noise)):
            raise RequestError(f"{NOISE!r} has non-finite values")
        return noise
