"""invdiff: imaging inverse problems with a diffusion prior.

Importing the package is cheap: astra, h5py and the CLI load only where they are used.
"""

from __future__ import annotations

__version__ = "0.1.0"
