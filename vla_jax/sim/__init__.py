"""Deterministic numpy tabletop simulator: scenes, physics, cameras, tasks, scripted expert,
RLDS-style demonstration collection and a synthetic web vision-language example generator.

Frame: x right, y back (away from the robots), z up, meters; see world.py / tasks.py / embodiments.py.
"""

from vla_jax.sim.embodiments import EMBODIMENTS, Embodiment
from vla_jax.sim.env import TabletopEnv
from vla_jax.sim.expert import ScriptedExpert
from vla_jax.sim.render import CameraSpec, render
from vla_jax.sim.demonstrations import collect_episode
from vla_jax.sim.tasks import (
    DIRECTIONS,
    FAMILIES,
    HELDOUT_COMBOS,
    HELDOUT_PARAPHRASES,
    PARAPHRASES,
    SPLITS,
    Task,
    make_task,
    sample_task,
)
from vla_jax.sim.web_vl import make_web_example
from vla_jax.sim.world import COLOR_NAMES, Arm, SceneObject, World

__all__ = [
    "COLOR_NAMES",
    "DIRECTIONS",
    "EMBODIMENTS",
    "FAMILIES",
    "HELDOUT_COMBOS",
    "HELDOUT_PARAPHRASES",
    "PARAPHRASES",
    "SPLITS",
    "Arm",
    "CameraSpec",
    "Embodiment",
    "SceneObject",
    "ScriptedExpert",
    "TabletopEnv",
    "Task",
    "World",
    "collect_episode",
    "make_task",
    "make_web_example",
    "render",
    "sample_task",
]
