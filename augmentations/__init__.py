"""Batched multi-view augmentation pipelines built from kornia ops, on the device of the batch.

    import augmentations
    pipeline = augmentations.build("simclr", image_size=32, mean=(0.49, 0.48, 0.45), std=(0.25, 0.24, 0.26))
    view1, view2 = pipeline(images_uint8)   # (B, 3, H, W) uint8 -> two (B, 3, 32, 32) float32

Named pipelines (see :mod:`augmentations.pipelines`): simclr, mocov2, byol, supcon, simaug,
crop-flip, eval.
"""

from augmentations.pipeline import Pipeline
from augmentations.pipelines import available, build, options

__all__ = ["Pipeline", "available", "build", "options"]
