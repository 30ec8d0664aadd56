"""Progress of a long job with a known number of items: a tqdm bar on a terminal, else a plain line
every ``interval`` seconds (logs, CI), both with transitions/s and an ETA."""

from __future__ import annotations

import sys
import time


def _clock(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Progress:
    """``update(items, transitions)`` after each finished item (an episode); ``close()`` at the end."""

    def __init__(self, desc: str, total: int, *, enabled: bool = True, stream=None, interval: float = 10.0,
                 unit: str = "episodes"):
        self.desc, self.total, self.unit, self.interval = desc, max(int(total), 1), unit, interval
        self.stream = stream or sys.stdout
        self.enabled = enabled
        self.items = self.transitions = 0
        self.start = self._last = time.perf_counter()
        self._bar = None
        if enabled and self.stream.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=self.total, desc=desc, unit=" ep", file=self.stream, dynamic_ncols=True)

    def rate(self) -> float:
        return self.transitions / max(time.perf_counter() - self.start, 1e-9)

    def line(self) -> str:
        elapsed = time.perf_counter() - self.start
        eta = elapsed * (self.total - self.items) / self.items if self.items else float("nan")
        eta_text = _clock(eta) if self.items else "?"
        return (f"{self.desc}: {self.items:,}/{self.total:,} {self.unit} ({100 * self.items / self.total:.0f}%), "
                f"{self.transitions:,} transitions, {self.rate():,.0f} transitions/s, ETA {eta_text}")

    def update(self, items: int, transitions: int) -> None:
        self.items += items
        self.transitions += transitions
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(items)
            self._bar.set_postfix_str(f"{self.rate():,.0f} transitions/s", refresh=False)
        elif time.perf_counter() - self._last >= self.interval:
            self._last = time.perf_counter()
            print(self.line(), file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
