"""MetaWorldEnv: one Meta-World (v3, MuJoCo) task behind the tabletop world's interface.

obs = {"images": {"corner2": uint8 [R, R, 3], "gripperPOV": uint8 [R, R, 3]}, "state": float32 [4]}: the
third-person ``corner2`` camera (MuJoCo renders it upside down; it is turned the right way up here) and the
wrist camera ``gripperPOV``; the state is the end-effector xyz and the gripper opening (the first 4 entries
of Meta-World's 39-D observation). Actions are float [4] in [-1, 1]: end-effector xyz delta (scaled by
Meta-World's action scale) and gripper effort (-1 open, 1 close).

Rendering is headless: ``MUJOCO_GL`` defaults to ``egl`` (set by vla_jax.sim.metaworld, before MuJoCo is
imported); anti-aliasing
(``offsamples``), shadows and reflections are off, which makes two cameras ~10x cheaper on CPU and looks the
same at these resolutions. A missing OpenGL backend is one :class:`OpenGLUnavailable` line.

Rollouts are deterministic in (task, seed): reset seeds the task's initial-state sampler
(``seeded_rand_vec``) and the environment with ``seed``. The goal position is in Meta-World's observation
(the scripted experts read it) but not in the state the policy sees.
"""

from __future__ import annotations

import gc
import os
import sys
import warnings

import numpy as np

from vla_jax.sim.metaworld.tasks import MetaWorldTask

CAMERAS = ("corner2", "gripperPOV")
STATE_DIM = 4
ACTION_DIM = 4


class OpenGLUnavailable(RuntimeError):
    """No OpenGL backend for headless MuJoCo rendering; the message is one line naming the fix."""


def _gl_error(reason: object) -> OpenGLUnavailable:
    backend = os.environ.get("MUJOCO_GL", "")
    first = str(reason).strip().splitlines()[0] if str(reason).strip() else type(reason).__name__
    return OpenGLUnavailable(
        f"MuJoCo cannot render headless with MUJOCO_GL={backend!r} ({first}); use MUJOCO_GL=egl (Debian/Ubuntu "
        "package libegl1) or MUJOCO_GL=osmesa (package libosmesa6)")


def _renderer(mujoco, model, size: int):
    """mujoco.Renderer [size x size] for ``model``, or OpenGLUnavailable (GLFW's warnings and the half-built
    renderer's failing ``__del__`` silenced: the one line says it all)."""
    hook, error = sys.unraisablehook, None
    sys.unraisablehook = lambda unraisable: None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                return mujoco.Renderer(model, size, size)
            except Exception as e:  # noqa: BLE001 - every GL failure becomes the one-line error
                error = _gl_error(e)
        gc.collect()
    finally:
        sys.unraisablehook = hook
    raise error


def _modules():
    """(mujoco, metaworld.env_dict, metaworld.policies), imported on first use."""
    try:
        import mujoco
        from metaworld import env_dict, policies
    except (ImportError, RuntimeError, AttributeError) as e:
        if isinstance(e, ModuleNotFoundError) and e.name in ("mujoco", "metaworld"):
            raise ModuleNotFoundError(f"Meta-World needs `pip install metaworld==3.1.1 mujoco==3.3.0` "
                                      "(requirements.txt)") from None
        raise _gl_error(e) from None
    return mujoco, env_dict, policies


class MetaWorldEnv:
    """Deterministic Meta-World environment; the MuJoCo env of a task is built on its first reset and kept
    until a reset asks for another task. ``image_size=0`` renders nothing (``images`` is empty): for policies
    that read no images."""

    def __init__(self, embodiment: str = "sawyer", image_size: int = 64):
        self.embodiment = embodiment
        self.image_size = image_size
        self.task: MetaWorldTask | None = None
        self.num_steps = 0
        self.episode = 0
        self._env = None
        self._renderer = None
        self._obs: np.ndarray | None = None
        self._success = False

    def _build(self, name: str) -> None:
        mujoco, env_dict, _ = _modules()
        self.close()
        env = env_dict.ALL_V3_ENVIRONMENTS[f"{name}-v3"]()
        env._partially_observable = False  # the goal is in the observation: the scripted experts read it
        del env.sawyer_observation_space  # cached with the goal's bounds zeroed; step() clips to it
        env._freeze_rand_vec = False
        env.seeded_rand_vec = True
        env._set_task_called = True
        env.model.vis.quality.offsamples = 0
        self._env = env
        if self.image_size > 0:
            try:
                self._renderer = _renderer(mujoco, env.model, self.image_size)
            except OpenGLUnavailable:
                self.close()
                raise
            self._renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
            self._renderer.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0

    def reset(self, task: MetaWorldTask, seed: int) -> dict:
        """Samples the initial state of ``task`` from ``seed``; returns the first observation."""
        if self.task is None or task.family != self.task.family or self._env is None:
            self._build(task.family)
        self._env.seed(int(seed) % 2**63)
        self._obs, _ = self._env.reset()
        self.task, self.num_steps, self._success = task, 0, False
        self.episode += 1
        return self.observe()

    def step(self, action: np.ndarray) -> dict:
        """Applies action [4] (clipped to [-1, 1]) and returns the new observation."""
        action = np.asarray(action, dtype=np.float64)
        if action.shape != (ACTION_DIM,):
            raise ValueError(f"Meta-World expects an action of shape ({ACTION_DIM},), got {action.shape}")
        self._obs, _, _, _, info = self._env.step(np.clip(action, -1.0, 1.0).astype(np.float32))
        self._success = bool(info["success"])
        self.num_steps += 1
        return self.observe()

    def render(self, camera: str) -> np.ndarray:
        """uint8 [R, R, 3] of ``camera``."""
        self._renderer.update_scene(self._env.data, camera=camera)
        image = self._renderer.render()
        return np.ascontiguousarray(image[::-1, ::-1]) if camera == "corner2" else image.copy()

    def observe(self) -> dict:
        cameras = CAMERAS if self._renderer is not None else ()
        return {"images": {cam: self.render(cam) for cam in cameras}, "state": self.state()}

    def state(self) -> np.ndarray:
        """float32 [4]: end-effector x, y, z and gripper opening."""
        return self._obs[:STATE_DIM].astype(np.float32)

    def full_observation(self) -> np.ndarray:
        """float64 [39]: Meta-World's own observation (objects and goal included; the expert's input)."""
        return self._obs.copy()

    def success(self) -> bool:
        """Meta-World's success flag of the last step (False right after reset)."""
        return self._success

    def failure_kind(self) -> str | None:
        """No mistake is detected beyond timing out."""
        return None

    def expert(self, noise: float = 0.0, seed: int = 0) -> "MetaWorldExpert":
        return MetaWorldExpert(self, noise, seed)

    @staticmethod
    def action_bounds() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(low, high, gripper mask) [4] each of meaningful actions (the gripper effort is continuous)."""
        return -np.ones(ACTION_DIM), np.ones(ACTION_DIM), np.zeros(ACTION_DIM, bool)

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
        if self._env is not None:
            self._env.close()
        self._env = self._renderer = None


class MetaWorldExpert:
    """The package's scripted policy for the env's task (metaworld.policies), reading the full observation,
    with Gaussian noise of std ``noise`` added to every action dimension (seeded; then clipped to [-1, 1])."""

    def __init__(self, env: MetaWorldEnv, noise: float = 0.0, seed: int = 0):
        _, _, policies = _modules()
        self.env, self.noise = env, noise
        self.policy = policies.ENV_POLICY_MAP[f"{env.task.family}-v3"]()
        self.rng = np.random.default_rng([int(seed) % 2**63, 2])

    def act(self) -> np.ndarray:
        """float32 [4]."""
        with warnings.catch_warnings():  # the policies warn on every step their gains saturate [-1, 1] (by design)
            warnings.simplefilter("ignore", UserWarning)
            action = np.asarray(self.policy.get_action(self.env.full_observation()), np.float64)
        if self.noise > 0:
            action = action + self.rng.normal(0.0, self.noise, size=action.shape)
        return np.clip(action, -1.0, 1.0).astype(np.float32)
