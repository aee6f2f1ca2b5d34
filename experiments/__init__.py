"""Runnable experiments: `python -m experiments.<name> --help`.

Keras picks its backend at import time; these scripts default to torch
(the toolkit's default) unless KERAS_BACKEND is already set. The library
itself (`kerasimpl`) never sets it.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "torch")
