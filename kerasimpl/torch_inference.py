"""Moved to `kerasimpl.backend.torch.inference` (issue 33: backend code in one package).

This old name stays only until docs/ab_fast_path.py imports the new one; it
is the same module object (attributes set through it reach the real one).
"""

import sys

from kerasimpl.backend.torch import inference as _moved

sys.modules[__name__] = _moved
