import logging
import os
import sys

from .cli import main

if __name__ == "__main__":  # not when a spawned export process imports this module
    code = main(claim_fd=True)
    # Everything the engine writes is closed by now. Python's own teardown of torch, diffusers and
    # transformers takes seconds (10 s measured on a loaded 2-core machine, 0.2 s with os._exit), which
    # a cancelled run would otherwise spend before its exit code reaches the add-on.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
