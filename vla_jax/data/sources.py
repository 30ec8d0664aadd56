"""grain random-access sources over prepared splits (vla_jax/data/prepared.py).

A robot sample reads its own step: one frame record (its cameras' encoded bytes), its state row,
the rows of its action chunk and its instruction (the spec's expressions were evaluated when the copy
was prepared), whatever the length of its episode. A web sample
reads its one example record. Sources hold only this process's shard of the episodes / examples.
"""

from __future__ import annotations

import numpy as np

from vla_jax.data import prepared, records


class RobotTransitions:
    """Element i = raw sample of the i-th (episode, step) transition of this shard's episodes.

    ``episode_ids``: [E_shard] indices of the split's episodes; transitions are enumerated episode by
    episode in that order, steps in order.
    """

    def __init__(self, split: prepared.RobotSplit, spec, episode_ids, horizon: int, num_cameras: int,
                 source: int, grounding: bool = False):
        self.split = split
        self.episode_ids = np.asarray(episode_ids, np.int64)
        self.lengths = split.lengths[self.episode_ids]  # [E_shard]
        self.starts = split.offsets[self.episode_ids]  # [E_shard] transition index of each step 0 in the split
        self.ends = np.cumsum(self.lengths)
        self.horizon = horizon
        self.image_keys = list(spec.image_keys[:num_cameras])
        self.source = source
        self.grounding = grounding

    def __len__(self) -> int:
        return int(self.ends[-1]) if len(self.ends) else 0

    def _position(self, index: int) -> tuple[int, int]:
        """(position in this shard's episodes, step) of element ``index``."""
        k = int(np.searchsorted(self.ends, index, side="right"))
        return k, int(index - (self.ends[k - 1] if k else 0))

    def locate(self, index: int) -> tuple[int, int]:
        """(episode index in the split, step) of element ``index``."""
        k, t = self._position(index)
        return int(self.episode_ids[k]), t

    def __getitem__(self, index: int) -> dict:
        k, t = self._position(int(index) % len(self))
        g = int(self.starts[k]) + t
        n = min(self.horizon, int(self.lengths[k]) - t)
        frame = self.split.frame(g)
        raw = {
            "source": self.source,
            "images": [frame[key] if key is not None else None for key in self.image_keys],
            "state": self.split.rows("state", g, g + 1)[0],
            "actions": self.split.rows("action", g, g + n),
            "num_steps": n,
            "instruction": self.split.text("instruction", g),
        }
        if self.grounding:
            raw["grounding"] = self.split.text("grounding", g)
        return raw


class WebExamples:
    """Element i = raw web vision-language example ``example_ids[i]`` of the split."""

    def __init__(self, split: prepared.WebSplit, spec, example_ids, source: int, dataset: str):
        self.split = split
        self.spec = spec
        self.example_ids = np.asarray(example_ids, np.int64)
        self.source = source
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.example_ids)

    def __getitem__(self, index: int) -> dict:
        fmap = self.split.read(int(self.example_ids[int(index) % len(self)]))
        name, spec = self.dataset, self.spec
        raw = {"source": self.source, "images": [records.feature_list(fmap, spec.image_key, name)[0]]}
        if spec.caption_key:
            raw["caption"] = records.to_text(records.feature_list(fmap, spec.caption_key, name)[0])
        if spec.question_key and spec.answer_key:
            questions = records.feature_list(fmap, spec.question_key, name)
            answers = records.feature_list(fmap, spec.answer_key, name)
            raw["qa"] = [(records.to_text(q), records.to_text(a)) for q, a in zip(questions, answers)]
        return raw
