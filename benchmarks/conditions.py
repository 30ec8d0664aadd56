"""What a benchmark figure was measured under, shared by the scripts in benchmarks/: the machine, the load
average against the core count (a figure measured on an overloaded machine is flagged), and writing one
section of docs/performance.md."""

from __future__ import annotations

import os
import platform
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PERFORMANCE_MD = os.path.join(ROOT, "docs", "performance.md")


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def machine(*packages: str) -> str:
    """``"2-core CPU (AMD EPYC ...), jax 0.10.2, ..."`` with the versions of ``packages``."""
    import importlib

    versions = [f"{p} {importlib.import_module(p).__version__.split('+')[0]}" for p in ("jax",) + packages]
    return f"{os.cpu_count()}-core CPU ({cpu_name()}), " + ", ".join(versions)


class LoadWatch:
    """The 1-minute load average sampled at ``sample()`` calls (start, between runs, end). ``overloaded``: it
    exceeded the core count at some sample (the benchmark's own threads count too), so the measurement may have
    waited for CPU time."""

    def __init__(self):
        self.samples: list[float] = []
        self.sample()

    def sample(self) -> float:
        self.samples.append(os.getloadavg()[0])
        return self.samples[-1]

    @property
    def overloaded(self) -> bool:
        return max(self.samples) > (os.cpu_count() or 1)

    def describe(self) -> str:
        cores = os.cpu_count() or 1
        text = f"load average {min(self.samples):.1f}-{max(self.samples):.1f} on {cores} cores"
        return text + (" (above the core count, counting the benchmark's own threads: figures are pessimistic)"
                       if self.overloaded else "")


def write_section(heading: str, text: str, path: str = PERFORMANCE_MD) -> None:
    """Replaces (or appends) one section of ``path``: from the line ``heading`` (e.g. ``"## Inference"``) to
    the next heading of the same or a higher level."""
    body = open(path).read() if os.path.isfile(path) else "# Performance\n"
    level = len(heading) - len(heading.lstrip("#"))
    match = re.search(rf"^{re.escape(heading)}[ \t]*$", body, flags=re.MULTILINE)
    if match:
        rest = body[match.end():]
        end = re.search(rf"^#{{1,{level}}} ", rest, flags=re.MULTILINE)
        body = body[:match.start()] + text.rstrip("\n") + "\n\n" + (rest[end.start():] if end else "")
    else:
        body = body.rstrip("\n") + "\n\n" + text
    with open(path, "w") as f:
        f.write(body.rstrip("\n") + "\n")
