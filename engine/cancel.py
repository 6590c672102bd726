"""Cancel: the one place that handles SIGINT/SIGTERM and the run folder's CANCEL file.

The CLI installs one ``CancelFlag`` from the moment a command starts until its last event, so the
contract (docs/ARCHITECTURE.md) holds in every stage: load, train, preview, export, re-export.

Two modes. While nothing has been written (loading a model, which is one long library call), a
signal raises ``Cancelled`` at once: there is nothing to save. Everywhere else a signal only sets
the flag, and the code polls ``requested()`` at points where stopping leaves consistent files (between
steps, between preview renders, while waiting for the export process).
"""

from __future__ import annotations

import contextlib
import signal
from pathlib import Path

from .errors import Cancelled

CANCEL = "CANCEL"
NOTHING_WRITTEN = "cancelled before the run started; nothing was written"


class _Interrupt(BaseException):
    """Raised by the signal handler inside ``interruptible()``: a BaseException, like KeyboardInterrupt,
    so that a library's ``except Exception`` (a loader turning errors into its own) cannot swallow it."""
SIGNALS = tuple(s for s in (getattr(signal, "SIGINT", None), getattr(signal, "SIGTERM", None),
                            getattr(signal, "SIGBREAK", None)) if s is not None)


class CancelFlag:
    """Set by SIGINT/SIGTERM (SIGBREAK on Windows); ``requested(run_dir)`` also sees a CANCEL file."""

    def __init__(self):
        self.set = False
        self._old: dict = {}
        self._depth = 0  # install() nests: the CLI holds it for a whole command, the trainer inside
        self._raise_now = False

    def install(self) -> None:
        self._depth += 1
        if self._depth > 1:
            return
        for sig in SIGNALS:
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (e.g. inside a test runner thread)
                pass

    def restore(self) -> None:
        self._depth = max(0, self._depth - 1)
        if self._depth:
            return
        for sig, handler in self._old.items():
            signal.signal(sig, handler)
        self._old.clear()

    def _handle(self, signum, frame) -> None:
        self.set = True
        if self._raise_now:
            self._raise_now = False  # a second signal must not interrupt the handling of the first
            raise _Interrupt()

    @contextlib.contextmanager
    def interruptible(self):
        """Inside: a signal raises Cancelled immediately (for stages that have written nothing)."""
        if self.set:
            raise Cancelled(NOTHING_WRITTEN)
        self._raise_now = True
        try:
            yield
        except _Interrupt:
            raise Cancelled(NOTHING_WRITTEN) from None
        finally:
            self._raise_now = False

    def requested(self, run_dir: Path | None = None) -> bool:
        if not self.set and run_dir is not None and (Path(run_dir) / CANCEL).exists():
            self.set = True
        return self.set
