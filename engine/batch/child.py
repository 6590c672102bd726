"""``python -m engine.batch.child ARGS``: the engine CLI, but it dies with the process that started it.

A batch worker (a Ray worker process or the local driver) runs each prompt's engine as a child. If
the worker is killed, its child must not go on writing the run folder while the retry starts: on
Linux the kernel sends the child SIGTERM when its parent dies (engine/process.py), and the engine
answers SIGTERM by saving a checkpoint and exiting, which is what the retry resumes from.
"""

from __future__ import annotations

import os
import sys

from ..process import die_with_parent

if __name__ == "__main__":
    parent = int(os.environ.get("DREAMFUSION_BATCH_PARENT", "0") or 0)
    if parent:
        die_with_parent(parent)
    from ..cli import main

    sys.exit(main(sys.argv[1:], claim_fd=True))  # as `python -m engine`: fd 1 carries events only
