"""Meta-World (MuJoCo) tasks behind the tabletop world's interface: task table with instructions and
difficulty groups (tasks.py, no MuJoCo needed), the environment and scripted expert (env.py) and
demonstration collection (demonstrations.py)."""

import os

os.environ.setdefault("MUJOCO_GL", "egl")  # headless; before anything here imports MuJoCo
