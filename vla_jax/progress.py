"""Progress of a long job with a known number of items: a tqdm bar on a terminal, else one plain line every
``interval`` seconds (log files, SLURM, pod workers, CI), so no carriage-return fragments land in logs.

Every long job in the project reports through ``Progress``: the trainer (steps), the data generator and
preparer (episodes, with transitions/s), and the closed-loop evaluator (episodes)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


def _clock(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Progress:
    """``update(n, counted, **postfix)`` after each finished item; ``close()`` at the end.

    ``unit`` names the items (``steps``, ``episodes``); ``rate_of`` optionally names a finer quantity counted
    alongside them (``transitions``), whose rate is shown instead of items/s. ``postfix`` values (a loss, a
    learning rate) are shown as ``key=value`` after the counts."""

    def __init__(self, desc: str, total: int, *, initial: int = 0, unit: str = "items", rate_of: str | None = None,
                 enabled: bool = True, stream: TextIO | None = None, interval: float = 10.0):
        self.desc, self.total, self.unit, self.rate_of = desc, max(int(total), 1), unit, rate_of
        self.interval = interval
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.initial = self.items = int(initial)
        self.counted = 0
        self.postfix: dict[str, str] = {}
        self.start = self._last = time.perf_counter()
        self._bar = None
        if enabled and self.stream.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=self.total, initial=self.initial, desc=desc, unit=f" {unit}", file=self.stream,
                             dynamic_ncols=True, mininterval=0.5)

    def rate(self) -> float:
        """``rate_of`` per second when it is counted, else items per second, since the start."""
        done = self.counted if self.rate_of else self.items - self.initial
        return done / max(time.perf_counter() - self.start, 1e-9)

    def line(self) -> str:
        """The plain progress line: counts, percentage, rate, postfix and ETA."""
        elapsed = time.perf_counter() - self.start
        done = self.items - self.initial
        eta = _clock(elapsed * (self.total - self.items) / done) if done else "?"
        parts = [f"{self.desc}: {self.items:,}/{self.total:,} {self.unit} ({100 * self.items / self.total:.0f}%)"]
        if self.rate_of:
            parts.append(f"{self.counted:,} {self.rate_of}, {self.rate():,.0f} {self.rate_of}/s")
        else:
            parts.append(f"{self.rate():,.2f} {self.unit}/s")
        parts += [f"{k}={v}" for k, v in self.postfix.items()]
        return ", ".join(parts) + f", ETA {eta}"

    def update(self, n: int = 1, counted: int = 0, **postfix: str) -> None:
        self.items += n
        self.counted += counted
        self.postfix.update(postfix)
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(n)
            extra = [f"{self.rate():,.0f} {self.rate_of}/s"] if self.rate_of else []
            self._bar.set_postfix_str(", ".join(extra + [f"{k}={v}" for k, v in self.postfix.items()]), refresh=False)
        elif time.perf_counter() - self._last >= self.interval or self.items >= self.total:
            self._last = time.perf_counter()
            print(self.line(), file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def track(iterable, total: int, desc: str, *, unit: str = "items", enabled: bool = True):
    """``iterable``'s items, reporting one ``Progress`` item each."""
    progress = Progress(desc, total, unit=unit, enabled=enabled)
    try:
        for item in iterable:
            yield item
            progress.update(1)
    finally:
        progress.close()
