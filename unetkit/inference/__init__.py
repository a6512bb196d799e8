"""Prediction at any size: overlap-tile and blended tiling, TTA, and streaming of big files.

* :class:`Predictor`: ``predict`` / ``predict_proba`` on in-memory arrays, ``predict_file``
  for files (big TIFFs are read and written tile by tile).
* :mod:`.tiling`: tile plans, mirrored reads, blending windows.
* :class:`DiffusionSampler` (:mod:`.generate`): samples of a generation run; :func:`generate_cascade`.
"""

from ..activation import expand_binary
from .generate import DiffusionSampler, generate_cascade
from .predictor import Predictor
from .tiling import TilePlan, plan_tiles

__all__ = ["DiffusionSampler", "Predictor", "TilePlan", "expand_binary", "generate_cascade", "plan_tiles"]
