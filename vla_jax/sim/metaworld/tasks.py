"""Meta-World tasks as data: instructions, held-out paraphrases, difficulty groups and the MT10 / MT50 sets.

Every one of the 50 MT50 tasks has five instructions written from what the task asks (``door-open`` ->
"open the door"); template 4 is held out: ``split="train"`` (demonstrations, training) uses templates
0-3, ``split="heldout_paraphrase"`` only template 4, as the tabletop world does (vla_jax/sim/tasks.py).

Difficulty groups are those of Seo et al., "Masked World Models for Visual Control" (2022), which the
DP3 and SmolVLA papers report Meta-World results by: Easy 28, Medium 11, Hard 6, Very Hard 5 tasks.
Nothing here imports metaworld.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SPLITS = ("train", "heldout_paraphrase")
HELDOUT_PARAPHRASES = (4,)
GROUPS = ("easy", "medium", "hard", "very_hard")

# task: (difficulty group, five instructions; the last is held out)
TASKS: dict[str, tuple[str, tuple[str, ...]]] = {
    "assembly": ("hard", ("put the ring on the peg", "assemble the ring onto the peg", "place the nut over the peg",
                          "fit the ring around the peg", "slide the round nut down onto the peg")),
    "basketball": ("medium", ("put the ball in the hoop", "dunk the basketball", "place the ball into the basket",
                              "score the ball in the hoop", "pick up the ball and drop it through the hoop")),
    "bin-picking": ("medium", ("move the cube to the other bin", "pick the block from one bin into the other",
                               "transfer the cube between the bins", "put the cube in the empty bin",
                               "take the block out of its bin and drop it in the other one")),
    "box-close": ("medium", ("close the box", "put the lid on the box", "cover the box with its lid",
                             "place the lid onto the box", "pick up the lid and shut the box with it")),
    "button-press": ("easy", ("press the button", "push the button", "push the button in from the front",
                              "press the button forward", "poke the button straight ahead")),
    "button-press-topdown": ("easy", ("press the button from the top", "push the button down",
                                      "press down on the button", "push the button from above",
                                      "tap the button downward from above")),
    "button-press-topdown-wall": ("easy", ("press the button from the top behind the wall",
                                           "push the button down past the wall",
                                           "press down on the button behind the wall",
                                           "push the walled button from above",
                                           "reach over the wall and press the button down")),
    "button-press-wall": ("easy", ("press the button behind the wall", "push the button past the wall",
                                   "press the button next to the wall", "push in the button behind the wall",
                                   "reach around the wall and press the button")),
    "coffee-button": ("easy", ("press the coffee machine button", "push the button on the coffee machine",
                               "start the coffee machine", "press the button to make coffee",
                               "switch on the coffee maker with its button")),
    "coffee-pull": ("medium", ("pull the mug out of the coffee machine", "take the cup away from the coffee machine",
                               "slide the mug back from the coffee maker", "pull the coffee cup toward you",
                               "drag the mug out from under the coffee machine")),
    "coffee-push": ("medium", ("push the mug under the coffee machine", "slide the cup into the coffee machine",
                               "move the mug under the spout", "push the coffee cup to the machine",
                               "shove the mug forward under the coffee maker")),
    "dial-turn": ("easy", ("turn the dial", "rotate the dial", "twist the knob", "spin the dial around",
                           "give the dial a turn")),
    "disassemble": ("very_hard", ("take the ring off the peg", "remove the nut from the peg",
                                  "lift the ring off the peg", "disassemble the ring from the peg",
                                  "pull the round nut up and off the peg")),
    "door-close": ("easy", ("close the door", "shut the door", "push the door closed", "swing the door shut",
                            "push the open door until it is closed")),
    "door-lock": ("easy", ("lock the door", "turn the door lock", "lock the door with the knob",
                           "turn the lock to lock the door", "rotate the lock down to secure the door")),
    "door-open": ("easy", ("open the door", "pull the door open", "swing the door open", "open the door by its handle",
                           "grab the handle and pull the door open")),
    "door-unlock": ("easy", ("unlock the door", "turn the door lock open", "unlock the door with the knob",
                             "turn the lock to unlock the door", "rotate the lock up to release the door")),
    "drawer-close": ("easy", ("close the drawer", "shut the drawer", "push the drawer closed",
                              "slide the drawer shut", "push the open drawer back in")),
    "drawer-open": ("easy", ("open the drawer", "pull the drawer open", "slide the drawer out",
                             "pull out the drawer", "grab the handle and open the drawer")),
    "faucet-close": ("easy", ("close the faucet", "turn the faucet off", "turn off the tap", "shut the faucet",
                              "rotate the faucet handle to close it")),
    "faucet-open": ("easy", ("open the faucet", "turn the faucet on", "turn on the tap", "open the tap",
                             "rotate the faucet handle to open it")),
    "hammer": ("medium", ("hammer the nail", "drive the nail in with the hammer", "hit the nail with the hammer",
                          "use the hammer on the nail", "pick up the hammer and pound the nail in")),
    "hand-insert": ("hard", ("put your hand in the hole", "insert the gripper into the hole",
                             "reach into the hole", "move the hand into the hole",
                             "lower the gripper down into the hole")),
    "handle-press": ("easy", ("press the handle down", "push down the handle", "press the handle",
                              "push the handle down from above", "lower the handle by pressing it")),
    "handle-press-side": ("easy", ("press the handle down from the side", "push down the side handle",
                                   "press the handle at the side", "push the handle down sideways",
                                   "lower the handle by pressing it from the side")),
    "handle-pull": ("easy", ("pull the handle up", "lift the handle", "pull up the handle", "raise the handle",
                             "pull the handle upward")),
    "handle-pull-side": ("easy", ("pull the handle up from the side", "lift the side handle",
                                  "pull up the handle at the side", "raise the handle from the side",
                                  "pull the side handle upward")),
    "lever-pull": ("easy", ("pull the lever", "pull the lever up", "lift the lever", "raise the lever",
                            "swing the lever upward")),
    "peg-insert-side": ("medium", ("insert the peg into the hole", "put the peg in the side hole",
                                   "push the peg into the hole", "slide the peg into the hole",
                                   "pick up the peg and fit it into the hole from the side")),
    "peg-unplug-side": ("easy", ("unplug the peg", "pull the peg out", "remove the peg from the hole",
                                 "take the peg out of the side hole", "pull the plugged peg out sideways")),
    "pick-out-of-hole": ("hard", ("pick the peg out of the hole", "lift the peg out of the hole",
                                  "take the peg out of the hole", "pull the peg up out of the hole",
                                  "grab the peg in the hole and lift it out")),
    "pick-place": ("hard", ("pick up the puck and place it at the goal", "put the puck at the target",
                            "move the puck to the goal", "place the puck on the target spot",
                            "grab the puck and set it down at the goal")),
    "pick-place-wall": ("very_hard", ("pick up the puck and place it at the goal behind the wall",
                                      "put the puck at the target over the wall",
                                      "move the puck over the wall to the goal",
                                      "place the puck past the wall on the target",
                                      "lift the puck over the wall and set it on the goal")),
    "plate-slide": ("easy", ("slide the plate into the goal", "push the plate into the net",
                             "slide the plate forward into the goal", "move the plate into the goal",
                             "shove the plate ahead into the net")),
    "plate-slide-back": ("easy", ("slide the plate back out of the goal", "pull the plate back from the net",
                                  "slide the plate backward out of the goal", "move the plate back out of the goal",
                                  "drag the plate back toward you from the net")),
    "plate-slide-back-side": ("easy", ("slide the plate sideways back out of the goal",
                                       "pull the plate out of the side net",
                                       "slide the plate out of the goal to the side",
                                       "move the plate back out of the side goal",
                                       "drag the plate sideways out of the net")),
    "plate-slide-side": ("easy", ("slide the plate sideways into the goal", "push the plate into the side net",
                                  "slide the plate into the goal from the side", "move the plate into the side goal",
                                  "shove the plate sideways into the net")),
    "push": ("hard", ("push the puck to the goal", "slide the puck to the target", "push the puck onto the goal",
                      "move the puck to the goal by pushing it", "nudge the puck along to the target")),
    "push-back": ("hard", ("push the puck back to the goal", "slide the puck backward to the target",
                           "push the puck toward you to the goal", "move the puck back to the goal",
                           "drag the puck backward onto the target")),
    "push-wall": ("medium", ("push the puck to the goal around the wall", "slide the puck past the wall to the target",
                             "push the puck around the wall onto the goal", "move the puck past the wall to the goal",
                             "nudge the puck around the wall to the target")),
    "reach": ("easy", ("reach the goal", "move the gripper to the goal", "reach the target position",
                       "go to the target", "bring the hand to the goal point")),
    "reach-wall": ("easy", ("reach the goal behind the wall", "move the gripper to the goal over the wall",
                            "reach the target past the wall", "go to the target behind the wall",
                            "bring the hand over the wall to the goal point")),
    "shelf-place": ("very_hard", ("put the block on the shelf", "place the cube on the shelf",
                                  "move the block onto the shelf", "set the block on the shelf",
                                  "pick up the block and put it up on the shelf")),
    "soccer": ("medium", ("kick the ball into the goal", "push the soccer ball into the net",
                          "score a goal with the ball", "move the ball into the goal",
                          "shoot the soccer ball into the goal")),
    "stick-pull": ("very_hard", ("pull the bottle with the stick", "use the stick to pull the bottle",
                                 "drag the bottle toward you with the stick", "grab the stick and pull the bottle",
                                 "hook the bottle with the stick and pull it back")),
    "stick-push": ("very_hard", ("push the bottle with the stick", "use the stick to push the bottle",
                                 "shove the bottle forward with the stick", "grab the stick and push the bottle",
                                 "pick up the stick and push the bottle away with it")),
    "sweep": ("medium", ("sweep the cube off the table", "push the block off the edge",
                         "sweep the block off the table", "slide the cube off the table",
                         "brush the cube over the edge of the table")),
    "sweep-into": ("medium", ("sweep the cube into the hole", "push the block into the hole",
                              "sweep the block into the hole", "slide the cube into the hole",
                              "brush the cube into the hole")),
    "window-close": ("easy", ("close the window", "shut the window", "slide the window closed",
                              "push the window shut", "slide the open window until it is closed")),
    "window-open": ("easy", ("open the window", "slide the window open", "push the window open",
                             "slide the window sideways to open it", "move the window pane until it is open")),
}
MT50 = tuple(TASKS)
MT10 = ("reach", "push", "pick-place", "door-open", "drawer-open", "drawer-close", "button-press-topdown",
        "peg-insert-side", "window-open", "window-close")
TASK_SETS: dict[str, tuple[str, ...]] = {"metaworld_mt50": MT50, "metaworld_mt10": MT10}


@dataclass(frozen=True)
class MetaWorldTask:
    """One Meta-World task with an instruction; ``family`` is the task name (e.g. "door-open")."""

    family: str
    instruction: str
    paraphrase: int

    @property
    def group(self) -> str:
        return TASKS[self.family][0]


def make_task(name: str, paraphrase: int = 0) -> MetaWorldTask:
    if name not in TASKS:
        raise ValueError(f"unknown Meta-World task {name!r}; the 50 tasks are listed in vla_jax/sim/metaworld/tasks.py")
    return MetaWorldTask(name, TASKS[name][1][paraphrase], paraphrase)


def sample_task(rng: np.random.Generator, family: str, split: str = "train") -> MetaWorldTask:
    """Task ``family`` with a paraphrase drawn from ``split``'s templates (see the module doc)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    count = len(TASKS[family][1])
    templates = HELDOUT_PARAPHRASES if split == "heldout_paraphrase" else [
        i for i in range(count) if i not in HELDOUT_PARAPHRASES]
    return make_task(family, int(templates[rng.integers(len(templates))]))


def group_of(name: str) -> str:
    return TASKS[name][0]


def all_instructions() -> list[str]:
    """Every instruction of every task, held-out paraphrases included (for the tokenizer corpus)."""
    return [text for _, texts in TASKS.values() for text in texts]
