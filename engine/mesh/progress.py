"""One progress reporter for all export stages: a tqdm bar per stage (optional) and the engine's
``progress_callback(stage, fraction)``, called with fraction 0 at the start and 1 at the end of
each stage so an event stream always sees a stage open and close."""
from __future__ import annotations

import time
from typing import Callable

from tqdm.auto import tqdm

ProgressCallback = Callable[[str, float], None]

#: Every stage export_field reports, in order ("refine" only with adaptive sampling, "smooth" only
#: when on, "decimate" only when the mesh has more faces than target_faces). STAGE_COST is a rough
#: share of the time of a default 256^3 CPU export of a trained hash-grid field (CPU seconds,
#: docs/BENCHMARKS-export.md, 2026-11-30 06:25: the refinement's field queries are about half), for
#: callers that show one overall percentage.
STAGES = ("density", "iso", "refine", "surface", "clean", "smooth", "decimate", "orient", "uv", "rasterize",
          "albedo", "dilate", "write")
STAGE_COST = {"density": 0.09, "iso": 0.04, "refine": 0.45, "surface": 0.04, "clean": 0.005, "smooth": 0.01,
              "decimate": 0.015, "orient": 0.005, "uv": 0.10, "rasterize": 0.05, "albedo": 0.11, "dilate": 0.015,
              "write": 0.07}


class Stage:
    def __init__(self, reporter: "Reporter", name: str, total: int):
        self.reporter, self.name, self.total, self.done = reporter, name, max(int(total), 1), 0
        self.bar = tqdm(total=self.total, desc=f"export:{name}", leave=False) if reporter.show else None
        self.t0, self.c0 = time.perf_counter(), time.process_time()
        reporter.emit(name, 0.0)

    def update(self, n: int = 1) -> None:
        self.done = min(self.done + n, self.total)
        if self.bar is not None:
            self.bar.update(n)
        self.reporter.emit(self.name, self.done / self.total)

    def __enter__(self) -> "Stage":
        return self

    def __exit__(self, exc_type, *_):
        if self.bar is not None:
            self.bar.close()
        if exc_type is None:
            if self.done < self.total:
                self.reporter.emit(self.name, 1.0)
            self.reporter.timings[self.name] = time.perf_counter() - self.t0
            self.reporter.cpu_timings[self.name] = time.process_time() - self.c0
        return False


class Reporter:
    def __init__(self, show: bool, callback: ProgressCallback | None):
        self.show, self.callback = show, callback
        self.timings: dict[str, float] = {}  # wall-clock seconds per stage
        # CPU seconds of this process per stage: on a shared machine the wall clock counts other
        # people's work; for a one-thread export this is close to what an idle machine would take.
        self.cpu_timings: dict[str, float] = {}

    def stage(self, name: str, total: int = 1) -> Stage:
        return Stage(self, name, total)

    def emit(self, name: str, fraction: float) -> None:
        if self.callback is not None:
            self.callback(name, float(fraction))
