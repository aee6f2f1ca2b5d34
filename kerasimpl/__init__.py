"""kerasimpl: transfer learning and saliency with Keras 3 on any backend.

Importing kerasimpl never sets the backend, downloads, prints or plots.
"""

__version__ = "0.1.0"
