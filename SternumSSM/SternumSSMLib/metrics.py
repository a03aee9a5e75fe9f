"""Segmentation overlap metrics on label maps with our standard values."""

from __future__ import annotations

import numpy as np

from .anatomy import label_scheme


def dice_per_class(prediction: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """Dice per class, plus 'Total': 2 * sum of per-class overlaps / sum of both sizes over all classes.

    A class absent from both maps scores NaN (nothing to find, nothing found).
    """
    if prediction.shape != reference.shape:
        raise ValueError(f"Label maps differ in shape: {prediction.shape} vs {reference.shape}.")
    scores, overlap_sum, size_sum = {}, 0, 0
    for segment_class in label_scheme().classes:
        a, b = prediction == segment_class.value, reference == segment_class.value
        overlap, size = int(np.sum(a & b)), int(a.sum() + b.sum())
        scores[segment_class.name] = 2.0 * overlap / size if size else float("nan")
        overlap_sum, size_sum = overlap_sum + overlap, size_sum + size
    scores["Total"] = 2.0 * overlap_sum / size_sum if size_sum else float("nan")
    return scores
