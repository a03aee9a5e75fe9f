"""One segmentation run: ROI crop (given, or found by the model's localiser), nnU-Net prediction,
post-processing, QA flags.

The same function serves the Slicer module, the worker process, the batch and the command line.
All geometry is the input volume's (LPS); results are on the input grid.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone

import numpy as np

from .auto_roi import (
    AUTO_ROI_MARGIN_MM,
    AUTO_ROI_MIN_MARGIN_MM,
    MAX_GROWTHS,
    block_mean,
    fit_to_tiles,
    grow,
    structures_box,
    touched_inner_faces,
)
from .geometry import Volume, lps_order_code, reindexed, slices_before_reindexing
from .postprocess import PostprocessSettings, postprocess
from .qa import QAFlag, class_volumes_ml, qa_flags
from .roi import Box, crop, index_slices, paste, with_border
from .segmentation_inference import ProgressCallback, SegmentationModel, SegmentationResult
from .sternum_check import NO_STERNUM_ML, STERNUM_CLASSES

NO_STRUCTURES_FOUND = (
    "No sternum found: the localiser found no sternum or costal cartilage in this CT, so the full-resolution "
    "pass did not run. Check that the CT shows the thorax, or segment the whole volume without the automatic "
    "ROI (--no-auto-roi; in the module untick 'Find the sternum first')."
)


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
    auto_roi: bool = True,
) -> SegmentationOutcome:
    """Segment ``image``; with an ROI only voxels inside it change (``previous_labels`` keeps the rest).

    Without an ROI and with ``auto_roi``, a model that has a localiser finds the structures' box first
    (record ``auto_roi``); if it finds nothing, the result is empty with a ``no_sternum`` flag and the
    model itself does not run."""
    started = time.perf_counter()
    if previous_labels is not None and not previous_labels.geometry.same_grid(image.geometry):
        raise ValueError("The previous segmentation is on another grid than the CT; resample it first.")
    located: dict | None = None
    if roi is None and auto_roi and model.localiser is not None:
        slices, located = _locate(model, image, cancel)
        if slices is None:
            return _nothing_found(image, located, started)
        prediction, slices = _predict_growing(model, image, slices, located, progress, cancel, with_uncertainty)
    else:
        slices = index_slices(image.geometry, roi) if roi is not None else None
        target = crop(image, slices) if slices is not None else image
        prediction = model.predict(target, progress=progress, cancel=cancel, return_uncertainty=with_uncertainty)
    clock = time.perf_counter()
    cleaned, postprocessing = postprocess(prediction.labels, postprocess_settings)
    steps = {"postprocessing": time.perf_counter() - clock}
    uncertainty = prediction.uncertainty
    qa_labels = cleaned
    if slices is not None:
        base = previous_labels or Volume(np.zeros(image.geometry.shape_kji, np.uint8), image.geometry)
        cleaned = paste(base, cleaned, slices)
        if uncertainty is not None:
            uncertainty = paste(
                Volume(np.zeros(image.geometry.shape_kji, np.float32), image.geometry), uncertainty, slices
            )
        # Outside the box everything is background unless earlier labels were kept there: QA looks at the
        # box with a one-voxel border, the same answer as the whole grid at a fraction of the voxels.
        qa_labels = cleaned if previous_labels is not None else crop(cleaned, with_border(slices, cleaned.array.shape))
    clock = time.perf_counter()
    flags = qa_flags(qa_labels, ct=image)
    steps["qa"] = time.perf_counter() - clock
    record = prediction.record | {
        "predicted_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "roi_lps": None if roi is None else {"lo": roi.lo_lps.tolist(), "hi": roi.hi_lps.tolist()},
        "auto_roi": located,
        "postprocessing": postprocessing,
        "volumes_ml": {name: round(value, 3) for name, value in class_volumes_ml(qa_labels).items()},
        "qa_flags": [asdict(flag) for flag in flags],
        "step_seconds": prediction.record["step_seconds"] | {name: round(value, 3) for name, value in steps.items()},
        "total_seconds": round(time.perf_counter() - started, 3),
    }
    return SegmentationOutcome(labels=cleaned, flags=flags, record=record, uncertainty=uncertainty)


def _locate(model: SegmentationModel, image: Volume, cancel) -> tuple[tuple[slice, ...] | None, dict]:
    """The localiser's box around the structures as the CT's index slices (None if it found nothing), its
    margin fitted to the fine model's tiles.

    The search runs on the CT re-indexed in LPS order, so that the block averaging and the split of the
    margin between a box's two sides do not depend on how the CT stores its axes: the same voxels, stored
    with axes swapped or reversed, get the same box and so the same segmentation."""
    code = lps_order_code(image.geometry)
    ordered = reindexed(image, code)
    coarse = model.localiser.predict(block_mean(ordered), cancel=cancel)
    sternum_ml = sum(class_volumes_ml(coarse.labels)[name] for name in STERNUM_CLASSES)
    # A few coarse voxels are the localiser's noise, not a sternum (sternum_check's own lower bound).
    box = structures_box(coarse.labels) if sternum_ml >= NO_STERNUM_ML else None
    located = {
        "localiser_seconds": coarse.record["seconds"],
        "localiser_sternum_ml": round(sternum_ml, 2),
        "margin_mm": [AUTO_ROI_MIN_MARGIN_MM, AUTO_ROI_MARGIN_MM],
        "found": box is not None,
    }
    if box is None:
        return None, located
    inner, outer = (index_slices(ordered.geometry, Box(box.lo_lps - margin, box.hi_lps + margin))
                    for margin in (AUTO_ROI_MIN_MARGIN_MM, AUTO_ROI_MARGIN_MM))
    spacing_kji = np.asarray(ordered.geometry.spacing, float)[::-1]
    fitted = fit_to_tiles(inner, outer, model.tile_grid(ordered.geometry), spacing_kji)
    return slices_before_reindexing(fitted, code, image.array.shape), located


def _predict_growing(
    model: SegmentationModel, image: Volume, slices, located: dict, progress, cancel, with_uncertainty: bool
) -> tuple[SegmentationResult, tuple[slice, ...]]:
    """The model inside ``slices``; while its labels touch an inner face of the box, again on a grown box."""
    shape = image.array.shape
    spacing_kji = np.asarray(image.geometry.spacing, float)[::-1]
    located["growths"] = 0
    while True:
        prediction = model.predict(crop(image, slices), progress=progress, cancel=cancel,
                                   return_uncertainty=with_uncertainty)
        faces = touched_inner_faces(prediction.labels.array, slices, shape, spacing_kji)
        if not faces or located["growths"] == MAX_GROWTHS:
            break
        slices = grow(slices, faces, spacing_kji, AUTO_ROI_MARGIN_MM, shape)
        located["growths"] += 1
    located["box_index_kji"] = [[part.start, part.stop] for part in slices]
    located["share_of_voxels"] = round(float(np.prod([p.stop - p.start for p in slices]) / np.prod(shape)), 4)
    return prediction, slices


def _nothing_found(image: Volume, located: dict, started: float) -> SegmentationOutcome:
    labels = Volume(np.zeros(image.geometry.shape_kji, np.uint8), image.geometry)
    flags = [QAFlag("no_sternum", "error", NO_STRUCTURES_FOUND)]
    record = {
        "predicted_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "roi_lps": None,
        "auto_roi": located,
        "volumes_ml": {name: 0.0 for name in class_volumes_ml(labels)},
        "qa_flags": [asdict(flag) for flag in flags],
        "total_seconds": round(time.perf_counter() - started, 3),
    }
    return SegmentationOutcome(labels=labels, flags=flags, record=record)
