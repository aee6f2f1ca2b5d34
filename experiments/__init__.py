"""Runnable experiments: `python -m experiments.<name> --help`.

Keras picks its backend at import time; these scripts default to torch
(the toolkit's default) unless KERAS_BACKEND is already set. The library
itself (`kerasimpl`) never sets it.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "torch")


def log_to_stdout():
    """Show the `kerasimpl` logger's lines (stages, progress) on standard output."""
    import logging
    import sys

    class _Stdout(logging.StreamHandler):
        @property
        def stream(self):  # whatever sys.stdout is now (tests swap it)
            return sys.stdout

        @stream.setter
        def stream(self, value):
            pass

    logger = logging.getLogger("kerasimpl")
    if not any(getattr(h, "_kerasimpl", False) for h in logger.handlers):
        handler = _Stdout()
        handler._kerasimpl = True
        handler.setFormatter(logging.Formatter("[%(asctime)s] %(message)s", "%H:%M:%S"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
