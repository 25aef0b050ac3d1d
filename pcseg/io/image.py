"""Camera images (KITTI ``image_2/*.png``, 8-bit) for detectors that fuse them with lidar (Focals Conv-F).

Pillow decodes them; it is the optional extra ``render``. Without it, :func:`read_image` raises a one-line
:class:`~pcseg.errors.UsageError` saying how to install it.
"""
from __future__ import annotations

import os

import numpy as np

from ..errors import BadInputError, UsageError

__all__ = ["read_image", "PILLOW_MISSING"]

PILLOW_MISSING = "reading camera images needs Pillow: pip install 'pcseg[render]' (or pip install pillow)"


def read_image(path) -> np.ndarray:
    """(H, W, 3) uint8 RGB pixels of an image file (grey or palette images are converted to RGB)."""
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:
        raise UsageError(PILLOW_MISSING) from None
    where = os.fspath(path)
    if os.path.isdir(where):
        raise BadInputError("is a folder, not an image", where)
    try:
        with Image.open(where) as im:
            if im.mode not in ("RGB", "L", "P", "RGBA", "LA", "PA"):
                # 16-bit or float pixels: converting them to 8 bits would clip; KITTI's colour images are 8-bit
                raise BadInputError(f"pixel mode {im.mode}: expected an 8-bit colour or grey image", where)
            return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    except FileNotFoundError:
        raise BadInputError("no such image file", where) from None
    except UnidentifiedImageError:
        raise BadInputError("not an image Pillow can read", where) from None
    except (OSError, SyntaxError, ValueError) as e:   # truncated or corrupt files
        raise BadInputError(f"cannot decode image: {e}", where) from None
