"""The add-on's reading of the engine's JSON-lines events (docs/ARCHITECTURE.md): one RunState per job.

No bpy here: the panel, the batch runner and the tests all read the same state. ``apply`` folds one
event into the state; the worker adds a synthetic ``_exit`` event when the process ends, which is
where a crash (non-zero exit with no ``done``/``error``/``cancelled``) is recognised.
"""

from __future__ import annotations

import json
import os
import signal
from dataclasses import dataclass, field

# Engine exit codes (ARCHITECTURE.md) -> what the add-on tells the user when no event explains it.
EXIT_MEANING = {
    1: "unexpected engine error",
    2: "bad input",
    3: "model problem",
    4: "device problem or out of memory",
    5: "mesh export failed",
    6: "disk full",
    7: "training diverged (non-finite steps)",
    130: "cancelled",
}

TERMINAL = ("done", "cancelled", "failed")


@dataclass
class RunState:
    status: str = "starting"  # starting | running | done | cancelled | failed
    stage: str = ""  # load | start shape | train | export
    step: int = 0
    total: int = 0
    loss: float | None = None
    elapsed_s: float | None = None
    eta_s: float | None = None
    run_dir: str | None = None
    engine_version: str | None = None
    device: str | None = None
    config: dict = field(default_factory=dict)
    preview_path: str | None = None
    preview_step: int | None = None
    checkpoint: str | None = None
    asset: dict = field(default_factory=dict)
    error_kind: str | None = None
    message: str = ""
    returncode: int | None = None
    exited: bool = False
    stray_lines: list = field(default_factory=list)  # non-JSON stdout lines (a library printing), kept for the log
    check: dict | None = None  # the payload of a ``check`` event

    @property
    def finished(self) -> bool:
        """True once the process has exited and the outcome is known."""
        return self.exited and self.status in TERMINAL

    @property
    def succeeded(self) -> bool:
        return self.finished and self.status == "done" and self.returncode == 0

    @property
    def fraction(self) -> float:
        return min(1.0, self.step / self.total) if self.total else 0.0

    def summary(self) -> str:
        """One line for the panel / Info log / batch output."""
        if self.status in ("starting", "running"):
            if not self.total:
                return "starting the engine..."
            eta = f", {format_seconds(self.eta_s)} left" if self.eta_s is not None else ""
            return f"{self.stage or 'run'} {self.step}/{self.total}{eta}"
        return self.message


def parse_line(line: str) -> dict:
    """One stdout line -> an event dict. Anything that is not a JSON object becomes a ``_stray`` event."""
    text = line.strip()
    if text.startswith("{"):
        try:
            obj = json.loads(text)
        except json.JSONDecodeError:
            obj = None
        if isinstance(obj, dict) and "event" in obj:
            return obj
    return {"event": "_stray", "text": text}


def describe_exit(returncode: int) -> str:
    if returncode < 0:  # POSIX: killed by a signal
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        hint = " (on Linux, SIGKILL often means the system ran out of memory)" if name == "SIGKILL" else ""
        return f"the engine was killed by {name}{hint}"
    meaning = EXIT_MEANING.get(returncode, "unknown failure")
    return f"the engine exited with code {returncode} ({meaning})"


def apply(state: RunState, ev: dict, stderr_tail: str = "") -> RunState:
    """Fold one event into ``state`` (mutates and returns it)."""
    kind = ev.get("event")
    if kind == "start":
        state.status = "running"
        state.run_dir = ev.get("run_dir") or state.run_dir
        state.engine_version = ev.get("engine_version")
        state.device = ev.get("device")
        state.config = ev.get("config") or {}
    elif kind == "progress":
        state.status = "running" if state.status == "starting" else state.status
        state.stage = ev.get("stage", state.stage)
        state.step = int(ev.get("step") or 0)
        state.total = int(ev.get("total") or 0)
        state.loss = ev.get("loss")
        state.elapsed_s = ev.get("elapsed_s")
        state.eta_s = ev.get("eta_s")
    elif kind == "preview":
        state.preview_path = ev.get("path")
        state.preview_step = ev.get("step")
    elif kind == "checkpoint":
        state.checkpoint = ev.get("path")
    elif kind == "done":
        state.status = "done"
        state.run_dir = ev.get("run_dir") or state.run_dir
        state.asset = ev.get("asset") or {}
        state.checkpoint = ev.get("checkpoint") or state.checkpoint
        state.message = f"done: {state.asset.get('glb') or state.run_dir}"
    elif kind == "cancelled":
        state.status = "cancelled"
        state.run_dir = ev.get("run_dir") or state.run_dir
        state.checkpoint = ev.get("checkpoint") or state.checkpoint
        state.message = (f"cancelled at step {ev.get('step')}; the run folder is kept and can be resumed"
                         if ev.get("run_dir") else "cancelled before the run started; nothing was written")
    elif kind == "error":
        state.error_kind = ev.get("kind", "error")
        state.run_dir = ev.get("run_dir") or state.run_dir
        if state.error_kind == "cancelled":
            state.status, state.message = "cancelled", ev.get("message", "cancelled")
        else:
            state.status = "failed"
            state.message = ev.get("message") or "the engine reported an error"
    elif kind == "check":
        state.check = {k: v for k, v in ev.items() if k not in ("event", "time")}
    elif kind == "_stray":
        state.stray_lines = (state.stray_lines + [ev.get("text", "")])[-20:]
    elif kind == "_start_failed":
        state.status, state.error_kind = "failed", "start"
        state.message = ev.get("message", "the engine could not be started")
        state.exited, state.returncode = True, None
    elif kind == "_exit":
        _apply_exit(state, int(ev.get("returncode", 1)), stderr_tail or ev.get("stderr_tail", ""))
    return state


def _apply_exit(state: RunState, rc: int, stderr_tail: str) -> None:
    state.exited, state.returncode = True, rc
    if state.status == "done" and rc == 0:
        return
    if state.status == "done":  # a done event then a failing exit: do not trust the asset
        state.status = "failed"
        state.message = f"{describe_exit(rc)} after reporting done; nothing was imported"
    elif state.status == "cancelled" or (rc == 130 and state.status not in ("failed",)):
        state.status = "cancelled"
        state.message = state.message or "cancelled before the run started"
    elif state.status != "failed":  # crashed without saying why: the stderr tail is all we have
        state.status, state.error_kind = "failed", state.error_kind or "crash"
        last = _last_lines(stderr_tail, 3)
        state.message = describe_exit(rc) + (f": {last}" if last else "")
    if state.run_dir and state.status == "failed" and os.path.isdir(state.run_dir):
        state.message += f" (run folder kept: {state.run_dir})"


def _last_lines(text: str, n: int) -> str:
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    return " | ".join(lines[-n:])


def format_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = max(0, int(round(seconds)))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")
