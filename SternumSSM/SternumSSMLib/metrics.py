"""Segmentation and landmark metrics as the study reports them (the reference study's tables 4.1-4.5).

Segmentation, per class of ``anatomy.label_scheme()``, with P the predicted and R the reference
voxels of the class on one voxel grid:

- Dice = 2|P∩R| / (|P| + |R|); "Total" is the micro total over the classes
  (2 * sum of overlaps / sum of sizes), as the study's Total column.
- sensitivity = |P∩R| / |R| (recall).
- ASD (mm), the average symmetric surface distance: the mean, over the surface voxels of both
  masks, of the distance from each to the nearest surface voxel of the other mask. Surface
  voxels are mask voxels with a 6-neighbour outside the mask (or at the edge of the grid);
  distances are between voxel centres, in mm through the voxel spacing. "Total" pools the
  surface distances of every class (each against the same class).
- VS = 2(|P| - |R|) / (|P| + |R|), signed volume similarity: positive means over-segmentation.

Empty masks, explicitly: a class absent from both maps has every score NaN (nothing to find,
nothing found) and is left out of means over cases. A class present on one side only scores
Dice 0; its sensitivity is 0 when the prediction is empty and NaN when the reference is; VS is
-2 or +2; its ASD is NaN, because there is no surface to measure against (Dice already
counts the miss, and reports say how many ASDs were undefined).

Landmarks: IPE_i = ||x_i - x̂_i|| in mm between a predicted and a reference point of the same
name, in physical space. A point missing on either side (NaN row) is counted as missing, never
as an error.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .anatomy import label_scheme
from .geometry import PointSet, Volume

SEGMENTATION_METRICS = ("dice", "sensitivity", "asd_mm", "volume_similarity")
OUTLIER_RADII_MM = (2.0, 4.0, 10.0)
_FACE_NEIGHBOURS = ndimage.generate_binary_structure(3, 1)


def _class_masks(prediction: np.ndarray, reference: np.ndarray):
    if prediction.shape != reference.shape:
        raise ValueError(f"Label maps differ in shape: {prediction.shape} vs {reference.shape}.")
    for segment_class in label_scheme().classes:
        yield segment_class.name, prediction == segment_class.value, reference == segment_class.value


def _counts(predicted: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """(|P∩R|, |P|, |R|) of two boolean masks."""
    return np.array([np.count_nonzero(predicted & reference), np.count_nonzero(predicted), np.count_nonzero(reference)])


def _dice(counts: np.ndarray) -> float:
    overlap, predicted, reference = (int(c) for c in counts)
    return 2.0 * overlap / (predicted + reference) if predicted + reference else float("nan")


def dice_per_class(prediction: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """Dice per class, plus 'Total': 2 * sum of per-class overlaps / sum of both sizes over all classes.

    A class absent from both maps scores NaN (nothing to find, nothing found).
    """
    counts = {name: _counts(a, b) for name, a, b in _class_masks(prediction, reference)}
    scores = {name: _dice(c) for name, c in counts.items()}
    scores["Total"] = _dice(np.sum(list(counts.values()), axis=0))
    return scores


def _bounding_slices(mask: np.ndarray, margin: int = 1) -> tuple[slice, ...]:
    slices = []
    for axis, size in enumerate(mask.shape):
        other_axes = tuple(a for a in range(mask.ndim) if a != axis)
        filled = np.flatnonzero(np.any(mask, axis=other_axes))
        slices.append(slice(max(int(filled[0]) - margin, 0), min(int(filled[-1]) + 1 + margin, size)))
    return tuple(slices)


def _surface(mask: np.ndarray) -> np.ndarray:
    # border_value 0 (the default) makes voxels at the grid's edge surface voxels, so cropping
    # with a one-voxel margin below gives the same surface as the whole grid.
    return mask & ~ndimage.binary_erosion(mask, structure=_FACE_NEIGHBOURS)


def surface_distances(predicted: np.ndarray, reference: np.ndarray, spacing_kji: np.ndarray) -> np.ndarray:
    """Distances (mm) from every surface voxel of each boolean mask to the other mask's surface.

    The masks are indexed [k, j, i], so ``spacing_kji`` is the voxel spacing in that order
    (``geometry.spacing[::-1]``). Empty when either mask is empty. The mean is the ASD.
    """
    if predicted.shape != reference.shape:
        raise ValueError(f"Masks differ in shape: {predicted.shape} vs {reference.shape}.")
    if not predicted.any() or not reference.any():
        return np.zeros(0)
    # Distances between surface voxels do not depend on voxels outside both masks' box.
    box = _bounding_slices(predicted | reference)
    surface_p, surface_r = _surface(predicted[box]), _surface(reference[box])
    sampling = np.asarray(spacing_kji, dtype=float)
    to_reference = ndimage.distance_transform_edt(~surface_r, sampling=sampling)[surface_p]
    to_prediction = ndimage.distance_transform_edt(~surface_p, sampling=sampling)[surface_r]
    return np.concatenate([to_reference, to_prediction])


def _scores(counts: np.ndarray, distances: np.ndarray) -> dict[str, float]:
    overlap, predicted, reference = (int(c) for c in counts)
    size = predicted + reference
    return {
        "dice": _dice(counts),
        "sensitivity": overlap / reference if reference else float("nan"),
        "asd_mm": float(distances.mean()) if distances.size else float("nan"),
        "volume_similarity": 2.0 * (predicted - reference) / size if size else float("nan"),
        "predicted_voxels": float(predicted),
        "reference_voxels": float(reference),
    }


def segmentation_scores(predicted: Volume, reference: Volume) -> dict[str, dict[str, float]]:
    """Scores per class name and 'Total' (see the module docstring for definitions and empty masks).

    Each value is a dict with ``dice``, ``sensitivity``, ``asd_mm``, ``volume_similarity``,
    ``predicted_voxels`` and ``reference_voxels``. Both volumes hold standard label values and
    must lie on the same voxel grid; distances use its spacing (mm).
    """
    if not predicted.geometry.same_grid(reference.geometry):
        raise ValueError(
            "The prediction and the reference lie on different voxel grids "
            f"(sizes {predicted.geometry.size} and {reference.geometry.size}, spacings "
            f"{predicted.geometry.spacing.tolist()} and {reference.geometry.spacing.tolist()}); "
            "resample the prediction onto the reference grid (nearest neighbour) first."
        )
    spacing_kji = reference.geometry.spacing[::-1]
    scores, total_counts, pooled = {}, np.zeros(3, dtype=np.int64), []
    for name, a, b in _class_masks(predicted.array, reference.array):
        counts, distances = _counts(a, b), surface_distances(a, b, spacing_kji)
        scores[name] = _scores(counts, distances)
        total_counts += counts
        pooled.append(distances)
    scores["Total"] = _scores(total_counts, np.concatenate(pooled))
    return scores


def landmark_errors(predicted: PointSet, reference: PointSet) -> np.ndarray:
    """IPE (mm) of each reference landmark, in the reference's order; NaN where either point is missing.

    Points are matched by name, not by row. The predicted points are converted into the
    reference's coordinate system (LPS or RAS) first, so files in different systems compare
    correctly. Both sets must hold the same names (one landmark protocol), each once.
    """
    for label, points in (("predicted", predicted), ("reference", reference)):
        doubled = sorted({name for name in points.names if points.names.count(name) > 1})
        if doubled:
            raise ValueError(f"The {label} landmarks name {doubled} more than once; each name must appear once.")
    only_predicted = sorted(set(predicted.names) - set(reference.names))
    only_reference = sorted(set(reference.names) - set(predicted.names))
    if only_predicted or only_reference:
        raise ValueError(
            f"The predicted and reference landmarks do not follow the same protocol: only predicted "
            f"{only_predicted or 'none'}, only in the reference {only_reference or 'none'}. "
            "Name the points alike in both files (e.g. the protocol ids L01..L34)."
        )
    order = [predicted.names.index(name) for name in reference.names]
    positions = predicted.to(reference.coordinate_system).positions[order]
    return np.linalg.norm(positions - reference.positions, axis=1)


def landmark_error_table(errors_mm: np.ndarray, exclude_beyond_mm: float | None = None) -> dict[str, float]:
    """The study's landmark table for pooled IPEs (mm); NaN entries are missing points.

    Returns ``points`` (measured points in the table), ``missing`` (NaN entries), ``excluded``
    (points dropped by ``exclude_beyond_mm``), ``median_mm``, ``mean_mm``, ``sd_mm`` (sample SD,
    ddof 1; NaN below two points) and ``O_2``, ``O_4``, ``O_10``: the percentage of the table's
    points with IPE strictly greater than 2, 4 and 10 mm. With ``exclude_beyond_mm=10`` it is
    the study's second table, "without points beyond 10 mm". Statistics of an empty table are NaN.
    """
    errors = np.asarray(errors_mm, dtype=float).ravel()
    missing = np.isnan(errors)
    measured = errors[~missing]
    if np.any(measured < 0) or not np.all(np.isfinite(measured)):
        raise ValueError("Landmark errors must be finite distances (>= 0 mm); mark a missing point with NaN.")
    excluded = 0
    if exclude_beyond_mm is not None:
        kept = measured <= exclude_beyond_mm
        excluded, measured = int(np.count_nonzero(~kept)), measured[kept]
    count = len(measured)
    table = {
        "points": count,
        "missing": int(np.count_nonzero(missing)),
        "excluded": excluded,
        "median_mm": float(np.median(measured)) if count else float("nan"),
        "mean_mm": float(np.mean(measured)) if count else float("nan"),
        "sd_mm": float(np.std(measured, ddof=1)) if count > 1 else float("nan"),
    }
    for radius in OUTLIER_RADII_MM:
        table[f"O_{radius:g}"] = 100.0 * np.count_nonzero(measured > radius) / count if count else float("nan")
    return table
