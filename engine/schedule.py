"""Settings that change over a run: a constant, or a linear ramp between two points of the run.

A schedule is written ``VALUE`` or ``START->END@FROM:TO``: ``START`` until the fraction ``FROM`` of the
run, a straight line to ``END`` at the fraction ``TO``, then ``END``. ``FROM == TO`` is a jump.
Positions are fractions of the run (0 = first step, 1 = last), not step numbers, so one recipe fits
every preset: threestudio's orientation ramp 10→1000 over the first 5000 of its 10000 steps is
``10->1000@0:0.5``, and that is 750 steps of a 1500-step draft run or 7500 of a 15000-step one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import ConfigError

_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_RAMP = re.compile(rf"^\s*({_NUM})\s*->\s*({_NUM})\s*@\s*({_NUM})\s*:\s*({_NUM})\s*$")
SYNTAX = "a number, or START->END@FROM:TO with FROM <= TO fractions of the run in [0, 1] (e.g. 10->1000@0:0.5)"


@dataclass(frozen=True)
class Schedule:
    start: float
    end: float
    begin: float = 0.0  # fraction of the run where the ramp starts
    finish: float = 0.0  # fraction of the run where it reaches ``end``

    def at_fraction(self, frac: float) -> float:
        if frac <= self.begin:
            return self.start
        if frac >= self.finish:
            return self.end
        return self.start + (self.end - self.start) * (frac - self.begin) / (self.finish - self.begin)

    def at(self, step: int, steps: int) -> float:
        """The value at ``step`` of a ``steps``-step run (step 0 is the first)."""
        return self.at_fraction(step / max(steps - 1, 1))

    @property
    def extremes(self) -> tuple[float, float]:
        """Smallest and largest value over the run (a ramp is monotonic)."""
        return min(self.start, self.end), max(self.start, self.end)

    @property
    def breakpoints(self) -> tuple[float, ...]:
        return (0.0, self.begin, self.finish, 1.0)


def parse(spec, name: str = "setting") -> Schedule:
    """A schedule from a config value (a number or a ramp string); ConfigError naming ``name`` if bad."""
    if isinstance(spec, bool):
        raise ConfigError(f"{name}: expected {SYNTAX}, got {spec!r}")
    if isinstance(spec, (int, float)):
        value = float(spec)
        if value != value or value in (float("inf"), float("-inf")):
            raise ConfigError(f"{name} must be a finite number, got {spec!r}")
        return Schedule(value, value)
    if isinstance(spec, str):
        text = spec.strip()
        try:
            return parse(float(text), name)
        except ValueError:
            pass
        m = _RAMP.match(text)
        if m:
            start, end, begin, finish = (float(g) for g in m.groups())
            if not (0.0 <= begin <= finish <= 1.0):
                raise ConfigError(f"{name}={spec!r}: the ramp's FROM:TO must satisfy 0 <= FROM <= TO <= 1 (fractions of the run)")
            return Schedule(start, end, begin, finish)
    raise ConfigError(f"{name}: expected {SYNTAX}, got {spec!r}")


def value_at(spec, step: int, steps: int) -> float:
    return parse(spec).at(step, steps)


def first_step_above(spec, steps: int, threshold: float = 0.0) -> int | None:
    """The first step of a ``steps``-step run where the schedule exceeds ``threshold`` (None: never).
    A ramp is monotonic, so a binary search over the steps finds it."""
    sched = parse(spec)
    if sched.at(0, steps) > threshold:
        return 0
    if sched.at(steps - 1, steps) <= threshold:
        return None
    lo, hi = 0, steps - 1  # value(lo) <= threshold < value(hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if sched.at(mid, steps) > threshold else (mid, hi)
    return hi


def check_range(spec, name: str, lo: float | None = None, hi: float | None = None, lo_open: bool = False) -> Schedule:
    """Parse and check that every value the schedule takes lies in [lo, hi] (or (lo, hi] with lo_open)."""
    sched = parse(spec, name)
    smallest, largest = sched.extremes
    if lo is not None and (smallest < lo or (lo_open and smallest <= lo)):
        raise ConfigError(f"{name}={spec!r} goes to {smallest}; it must stay {'>' if lo_open else '>='} {lo}")
    if hi is not None and largest > hi:
        raise ConfigError(f"{name}={spec!r} goes to {largest}; it must stay <= {hi}")
    return sched
