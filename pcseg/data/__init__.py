"""Datasets, augmentation and the stacked batch format."""
from .batch import PyramidSpec, StackedBatch, build_batch

__all__ = ["PyramidSpec", "StackedBatch", "build_batch"]
