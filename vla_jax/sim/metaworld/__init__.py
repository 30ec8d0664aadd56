"""Meta-World (MuJoCo) tasks behind the tabletop world's interface: task table with instructions and
difficulty groups (tasks.py, no MuJoCo needed), the environment and scripted expert (env.py) and
demonstration collection (demonstrations.py)."""
