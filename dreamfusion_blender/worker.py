"""One engine process: start it, read its events without blocking, cancel it, notice when it dies.

No bpy here. A background thread reads stdout line by line into a queue (JSON events); another keeps
the tail of stderr (tracebacks, for crash messages). The UI drains the queue from a bpy.app.timers
callback on the main thread (``poll``); the batch runner blocks on it (``wait``). When the process
ends, a synthetic ``_exit`` event carrying the return code is queued after the last real event.
"""

from __future__ import annotations

import atexit
import collections
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import weakref
from pathlib import Path

from . import events as ev_mod

CANCEL_GRACE_S = 60.0  # how long a cancelled engine may take to save its checkpoint before it is terminated

_LIVE: "weakref.WeakSet[Worker]" = weakref.WeakSet()


class Worker:
    def __init__(self, argv: list[str], env: dict | None = None, cwd: str | None = None):
        self.argv = [str(a) for a in argv]
        self.env = env
        self.cwd = cwd
        self.state = ev_mod.RunState()
        self.proc: subprocess.Popen | None = None
        self._queue: queue.Queue = queue.Queue()
        self._stderr = collections.deque(maxlen=40)
        self._cancel_at: float | None = None
        self._threads: list[threading.Thread] = []

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> "Worker":
        kwargs = {}
        if sys.platform == "win32":  # lets cancel send CTRL_BREAK to the engine alone
            kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP
        try:
            self.proc = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                env=self.env, cwd=self.cwd, text=True, encoding="utf-8", errors="replace", bufsize=1, **kwargs,
            )
        except OSError as exc:
            msg = (f"cannot start the engine with {self.argv[0]!r}: {exc.strerror or exc}. "
                   "Set the Python interpreter in the add-on preferences or press 'Set up engine'")
            self._queue.put({"event": "_start_failed", "message": msg})
            return self
        _LIVE.add(self)
        err = threading.Thread(target=self._read_stderr, name="dreamfusion-stderr", daemon=True)
        out = threading.Thread(target=self._read_stdout, args=(err,), name="dreamfusion-stdout", daemon=True)
        self._threads = [err, out]
        err.start()
        out.start()
        return self

    def _read_stdout(self, stderr_thread: threading.Thread) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.strip():
                self._queue.put(ev_mod.parse_line(line))
        rc = self.proc.wait()
        stderr_thread.join(timeout=5)  # so the crash message has the whole traceback
        self._queue.put({"event": "_exit", "returncode": rc, "stderr_tail": self.stderr_tail()})

    def _read_stderr(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for line in self.proc.stderr:
            self._stderr.append(line.rstrip("\n"))

    def stderr_tail(self) -> str:
        return "\n".join(self._stderr)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def running(self) -> bool:
        return not self.state.exited

    # -- reading events --------------------------------------------------------------------------
    def poll(self) -> list[dict]:
        """Apply every queued event to ``state`` without blocking; returns them (main-thread safe)."""
        out = []
        while True:
            try:
                ev = self._queue.get_nowait()
            except queue.Empty:
                break
            out.append(self._apply(ev))
        self._enforce_cancel_deadline()
        return out

    def next_event(self, timeout: float) -> dict | None:
        """Block up to ``timeout`` seconds for one event (batch mode)."""
        try:
            ev = self._queue.get(timeout=timeout)
        except queue.Empty:
            self._enforce_cancel_deadline()
            return None
        return self._apply(ev)

    def wait(self, timeout: float | None = None, on_event=None) -> ev_mod.RunState:
        """Block until the process has exited and its events are read (or ``timeout``)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.state.exited:
            left = 0.5 if deadline is None else min(0.5, deadline - time.monotonic())
            if left <= 0:
                break
            ev = self.next_event(left)
            if ev is not None and on_event is not None:
                on_event(ev, self.state)
        return self.state

    def _apply(self, ev: dict) -> dict:
        ev_mod.apply(self.state, ev, stderr_tail=ev.get("stderr_tail", ""))
        if ev.get("event") == "_exit":
            _LIVE.discard(self)
        return ev

    # -- cancel ----------------------------------------------------------------------------------
    def cancel(self) -> None:
        """Ask the engine to stop: a CANCEL file in its run folder (checked every step) and SIGINT.

        The engine then saves a checkpoint, emits ``cancelled`` and exits 130. If it has not exited
        after CANCEL_GRACE_S it is terminated (``poll``/``wait`` enforce this).
        """
        if self.proc is None or self.state.exited:
            return
        self.poll()  # a queued `start` event may carry the run folder the CANCEL file belongs in
        if self.state.run_dir and not self.state.exited:
            try:
                (Path(self.state.run_dir) / "CANCEL").touch()
            except OSError:
                pass
        self._signal_interrupt()
        if self._cancel_at is None:
            self._cancel_at = time.monotonic()

    def _signal_interrupt(self) -> None:
        try:
            if sys.platform == "win32":
                self.proc.send_signal(signal.CTRL_BREAK_EVENT)
            else:
                self.proc.send_signal(signal.SIGINT)
        except (OSError, ValueError):
            pass

    def _enforce_cancel_deadline(self) -> None:
        if self._cancel_at is not None and self.proc is not None and self.proc.poll() is None:
            if time.monotonic() - self._cancel_at > CANCEL_GRACE_S:
                self.kill()

    def kill(self) -> None:
        """Stop the process now (no checkpoint). Used on exit and when a cancel is ignored."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.proc.terminate()
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            except OSError:
                pass


@atexit.register
def _stop_orphans() -> None:
    """Blender quitting must not leave an engine running on the GPU."""
    for worker in list(_LIVE):
        if worker.proc is not None and worker.proc.poll() is None:
            worker.cancel()
            try:
                worker.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                worker.kill()
