"""One segmentation run: optional ROI crop, nnU-Net prediction, post-processing, QA flags.

The same function serves the Slicer module, the worker process and the command line.
All geometry is the input volume's (LPS); results are on the input grid.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone

import numpy as np

from .geometry import Volume
from .postprocess import PostprocessSettings, postprocess
from .qa import QAFlag, class_volumes_ml, qa_flags
from .roi import Box, crop, index_slices, paste
from .segmentation_inference import ProgressCallback, SegmentationModel


@dataclass
class SegmentationOutcome:
    labels: Volume
    flags: list[QAFlag]
    record: dict
    uncertainty: Volume | None = field(default=None)


def segment_ct(
    model: SegmentationModel,
    image: Volume,
    roi: Box | None = None,
    previous_labels: Volume | None = None,
    postprocess_settings: PostprocessSettings | None = None,
    progress: ProgressCallback | None = None,
    cancel: Callable[[], bool] | None = None,
    with_uncertainty: bool = False,
) -> SegmentationOutcome:
    """Segment ``image``; with an ROI only voxels inside it change (``previous_labels`` keeps the rest)."""
    started = time.perf_counter()
    if previous_labels is not None and not previous_labels.geometry.same_grid(image.geometry):
        raise ValueError("The previous segmentation is on another grid than the CT; resample it first.")
    slices = index_slices(image.geometry, roi) if roi is not None else None
    target = crop(image, slices) if slices is not None else image
    prediction = model.predict(target, progress=progress, cancel=cancel, return_uncertainty=with_uncertainty)
    cleaned, postprocessing = postprocess(prediction.labels, postprocess_settings)
    uncertainty = prediction.uncertainty
    if slices is not None:
        base = previous_labels or Volume(np.zeros(image.geometry.shape_kji, np.uint8), image.geometry)
        cleaned = paste(base, cleaned, slices)
        if uncertainty is not None:
            uncertainty = paste(
                Volume(np.zeros(image.geometry.shape_kji, np.float32), image.geometry), uncertainty, slices
            )
    flags = qa_flags(cleaned, ct=image)
    record = prediction.record | {
        "predicted_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "roi_lps": None if roi is None else {"lo": roi.lo_lps.tolist(), "hi": roi.hi_lps.tolist()},
        "postprocessing": postprocessing,
        "volumes_ml": {name: round(value, 3) for name, value in class_volumes_ml(cleaned).items()},
        "qa_flags": [asdict(flag) for flag in flags],
        "total_seconds": round(time.perf_counter() - started, 3),
    }
    return SegmentationOutcome(labels=cleaned, flags=flags, record=record, uncertainty=uncertainty)
