"""Prediction at any size: overlap-tile and blended tiling, TTA, and streaming of big files.

* :class:`Predictor`: ``predict`` / ``predict_proba`` on in-memory arrays, ``predict_file``
  for files (big TIFFs are read and written tile by tile).
* :mod:`.tiling`: tile plans, mirrored reads, blending windows.
"""

from ..activation import expand_binary
from .predictor import Predictor
from .tiling import TilePlan, plan_tiles

__all__ = ["Predictor", "TilePlan", "expand_binary", "plan_tiles"]
