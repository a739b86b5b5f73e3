"""Progress that also reads well when stdout is not a terminal (``make demo | tee log``, a batch job).

On a terminal, training draws Lightning's live tqdm bar. Elsewhere a redrawn bar shows nothing
useful until the end, so :class:`ProgressLines` prints one plain line per finished step instead,
with the rate and the time left (``medcl.pretrain.callbacks.PlainTextProgress`` uses it per epoch)::

    [3/26] epoch 3 | 1m12s elapsed, 24.0 s/epoch, ETA 9m12s

``medcl compare`` and ``medcl demo`` print one such line per finished arm and seed.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO


def is_terminal(stream: TextIO | None = None) -> bool:
    """True when ``stream`` (default: stdout) is an interactive terminal."""
    stream = sys.stdout if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # closed or replaced streams
        return False


def format_duration(seconds: float) -> str:
    """``75 -> '1m15s'``, ``3725 -> '1h02m05s'``, ``8.25 -> '8.2s'``; '?' when unknown."""
    if seconds is None or not seconds == seconds or seconds < 0 or seconds == float("inf"):
        return "?"
    if seconds < 60:
        return f"{seconds:.1f}s"
    s = round(seconds)
    h, rest = divmod(s, 3600)
    m, sec = divmod(rest, 60)
    return f"{h}h{m:02d}m{sec:02d}s" if h else f"{m}m{sec:02d}s"


def format_rate(done: float, elapsed: float, unit: str) -> str:
    """``'2.5 step/s'`` for fast work, ``'12.0 s/run'`` for slow work; '?' before anything finished."""
    if done <= 0 or elapsed <= 0:
        return f"? {unit}/s"
    rate = done / elapsed
    return f"{rate:.1f} {unit}/s" if rate >= 1 else f"{1 / rate:.1f} s/{unit}"


class ProgressLines:
    """Print one line per finished step: position, description, elapsed time, rate and ETA.

    Args:
        total: number of steps (can be given later with :meth:`update`).
        stream: where to print (default: stdout); flushed after each line.
        unit: what a step is called in the rate (``step``, ``run``, ``epoch``).
        clock: a monotonic clock in seconds (tests pass a fake one).
    """

    def __init__(self, total: int | None = None, *, stream: TextIO | None = None, unit: str = "step",
                 clock: Callable[[], float] = time.monotonic):
        self.total, self.unit, self.clock = total, unit, clock
        self.stream = stream
        self.start = clock()

    def line(self, done: int, description: str = "", total: int | None = None, extra: str = "") -> str:
        """The line for ``done`` finished steps (ETA from the mean time per finished step)."""
        total = self.total if total is None else total
        self.total = total
        elapsed = self.clock() - self.start
        position = f"[{done}/{total}]" if total else f"[{done}]"
        if total and done >= total:
            eta = "done"
        elif total and done > 0:
            eta = "ETA " + format_duration(elapsed / done * (total - done))
        else:
            eta = "ETA ?"
        parts = [position, description.strip()] if description.strip() else [position]
        tail = f"{format_duration(elapsed)} elapsed, {format_rate(done, elapsed, self.unit)}, {eta}"
        return " ".join(parts) + " | " + tail + (f", {extra}" if extra else "")

    def update(self, done: int, description: str = "", total: int | None = None, extra: str = "") -> str:
        """Print (and return) the line for ``done`` finished steps."""
        text = self.line(done, description, total, extra)
        stream = sys.stdout if self.stream is None else self.stream
        print(text, file=stream, flush=True)
        return text
