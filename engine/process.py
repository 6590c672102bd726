"""Helpers for the engine as a child process of something else (a batch worker, an export subprocess).

``die_with_parent``: on Linux, ask the kernel to send this process SIGTERM when its parent dies
(PR_SET_PDEATHSIG). The engine answers SIGTERM by saving a checkpoint and exiting, so a killed
batch worker's child stops writing its run folder before the retry resumes from it, and an export
subprocess does not outlive the engine that started it. Here, not in engine/batch/, because both
the batch child and export_run need it: in batch/ it made child -> cli -> export_run -> child a loop.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def die_with_parent(expected_parent: int) -> None:
    if not sys.platform.startswith("linux"):
        return  # elsewhere a killed worker's engine finishes or is cancelled on its own
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        return
    if os.getppid() != expected_parent:  # the parent died before prctl took effect
        sys.exit(130)
