"""The run's progress line: partition results gathered out of how many; and the stage a
run is at, which a submitted run's status shows."""

from __future__ import annotations

import sys
import time


class ProgressBar:
    """Per-partition results gathered out of ``total`` (a partition of the kept rows and of each
    stage being accounted for is one each), on one terminal line.

    Into a file (a batch job's log, CI) a redrawn line is one long line of carriage
    returns; there it prints a line every ``LOG_EVERY`` seconds and one when done."""

    LOG_EVERY = 30.0

    def __init__(self, total: int, what: str, width: int = 30):
        self.total, self.what, self.width, self.done = total, what, width, 0
        self.start = self.said = time.perf_counter()
        self.terminal = sys.stderr.isatty()
        if self.terminal:
            self._draw()

    def update(self) -> None:
        self.done += 1
        now = time.perf_counter()
        if self.terminal:
            self._draw()
        elif self.done == self.total or now - self.said >= self.LOG_EVERY:
            self.said = now
            print(self._line(), file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.terminal and self in _OPEN:
            print(file=sys.stderr, flush=True)
        _OPEN.discard(self)

    def _line(self) -> str:
        filled = self.width * self.done // max(self.total, 1)
        return (f"[{'#' * filled}{' ' * (self.width - filled)}] {self.done}/{self.total} partition results "
                f"| {time.perf_counter() - self.start:.1f} s | {self.what}")

    def _draw(self) -> None:
        _OPEN.add(self)
        print(f"\r{self._line()}", end="", file=sys.stderr, flush=True)


_OPEN: set[ProgressBar] = set()  # bars drawn on a terminal line not yet ended


def end_line() -> None:
    """End the line a bar cut short holds (an interrupt, an error), so that what is said
    next starts a line of its own rather than after the bar's "| split, augment"."""
    for bar in list(_OPEN):
        bar.close()


# The stage this process's run is at: (its number, the job's stages, its name). A run's
# passes are known only as it goes (label_issues alone computes a dozen), so a submitted
# run's status said "pass 11" with no total; the stage has one.
_AT: dict = {}


def at_stage(number: int, total: int, name: str) -> None:
    _AT.update(stage=number, stages=total, stage_name=name)


def current_stage() -> dict:
    return dict(_AT)
