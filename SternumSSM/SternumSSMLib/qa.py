"""Plausibility flags for a sternum/cartilage label map, in words an annotator can act on.

Flags: no sternum at all (too little bone, or bone that is not a sternum by its anatomy:
:mod:`sternum_check`), a class missing, a class volume outside its plausible range, a wrong
number of cartilage pieces per side, a structure cut by the scan boundary, and strongly
asymmetric left/right cartilage. Ranges and counts come from ``anatomy.json``.

Left and right are the patient's: LPS x greater than the sternum's (the patient's midline) is
left, whatever the image orientation and wherever the world origin lies. Every flag is
physical, so the same case on any grid gets the same flags.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import ndimage

from .anatomy import label_scheme
from .geometry import Volume
from .postprocess import has_cut_piece
from .sternum_check import STERNUM_CLASSES, no_sternum_message, sternum_problems

Severity = Literal["error", "warning"]
_CONNECTIVITY = np.ones((3, 3, 3), dtype=bool)


@dataclass(frozen=True)
class QAFlag:
    code: str
    severity: Severity
    message: str
    segment: str | None = None


def class_volumes_ml(labels: Volume) -> dict[str, float]:
    voxel_ml = float(np.prod(labels.geometry.spacing)) / 1000.0
    # a comparison per class costs a quarter of the int64 copy a bincount would make of a large label map
    return {c.name: float(np.count_nonzero(labels.array == c.value)) * voxel_ml for c in label_scheme().classes}


def patient_midline_x(labels: Volume) -> float:
    """LPS x (mm) of the patient's midline: the median x of the sternum's voxels (without a sternum, of all labels)."""
    scheme = label_scheme()
    sternum = np.isin(labels.array, [scheme.by_name(name).value for name in STERNUM_CLASSES])
    index = np.argwhere(sternum if sternum.any() else labels.array > 0)[:, ::-1]
    if len(index) == 0:
        raise ValueError("The label map is empty: there is no midline to find.")
    return float(np.median(labels.geometry.index_to_lps(index)[:, 0]))


def cartilage_pieces_per_side(labels: Volume) -> dict[str, int]:
    """Connected cartilage pieces (26-connected), assigned to a side by the LPS x of their centre."""
    value = label_scheme().by_name("Cartilage").value
    components, count = ndimage.label(labels.array == value, structure=_CONNECTIVITY)
    if count == 0:
        return {"right": 0, "left": 0}
    kji = np.nonzero(components)
    ids = components[kji]
    sizes = np.bincount(ids, minlength=count + 1)[1:]
    centres_kji = np.column_stack([np.bincount(ids, weights=axis, minlength=count + 1)[1:] / sizes for axis in kji])
    x_lps = labels.geometry.index_to_lps(centres_kji[:, ::-1])[:, 0] - patient_midline_x(labels)
    return {"right": int(np.sum(x_lps < 0)), "left": int(np.sum(x_lps >= 0))}


def cartilage_volume_per_side_ml(labels: Volume) -> dict[str, float]:
    value = label_scheme().by_name("Cartilage").value
    index = np.argwhere(labels.array == value)[:, ::-1]
    if len(index) == 0:
        return {"right": 0.0, "left": 0.0}
    x_lps = labels.geometry.index_to_lps(index)[:, 0] - patient_midline_x(labels)
    voxel_ml = float(np.prod(labels.geometry.spacing)) / 1000.0
    return {"right": float(np.sum(x_lps < 0)) * voxel_ml, "left": float(np.sum(x_lps >= 0)) * voxel_ml}


def qa_flags(
    labels: Volume, expected_cartilage_pieces_per_side: int | None = None, ct: Volume | None = None
) -> list[QAFlag]:
    """Flags for one label map; an empty list means nothing looked implausible.

    ``ct``: the scan the labels belong to (HU, any grid); with it the sternum is also checked for
    bone-like HU and its place in front of the lungs.
    """
    problems = sternum_problems(labels, ct)
    if problems:
        message = (
            f"{no_sternum_message(problems)} Check that the CT shows the thorax; do not correct this result, "
            "segment by hand or skip the case."
        )
        return [QAFlag("no_sternum", "error", message)]
    scheme = label_scheme()
    volumes = class_volumes_ml(labels)
    flags = []
    for segment_class in scheme.classes:
        name, volume = segment_class.name, volumes[segment_class.name]
        low, high = segment_class.plausible_volume_ml
        if volume == 0:
            flags.append(QAFlag("missing", "error", f"{name} is missing from the segmentation.", name))
            continue
        if not low <= volume <= high:
            flags.append(
                QAFlag(
                    "volume",
                    "warning",
                    f"{name} volume {volume:.1f} ml is outside the plausible {low:g}-{high:g} ml.",
                    name,
                )
            )
        if has_cut_piece(labels.array == segment_class.value, labels.geometry):
            flags.append(
                QAFlag(
                    "cut", "warning", f"{name} is cut by the scan boundary; part of it lies outside the image.", name
                )
            )
    flags += _cartilage_flags(labels, volumes["Cartilage"], expected_cartilage_pieces_per_side)
    return flags


def _cartilage_flags(labels: Volume, total_ml: float, expected: int | None) -> list[QAFlag]:
    if total_ml == 0:
        return []
    expectations = label_scheme().cartilage
    expected = expected if expected is not None else expectations.expected_pieces_per_side
    flags = []
    for side, pieces in cartilage_pieces_per_side(labels).items():
        if pieces != expected:
            flags.append(
                QAFlag(
                    "cartilage_pieces",
                    "warning",
                    f"{side.capitalize()} cartilage has {pieces} pieces, {expected} expected: look for a split, "
                    "a merge or a missing cartilage.",
                    "Cartilage",
                )
            )
    per_side = cartilage_volume_per_side_ml(labels)
    small, large = sorted(per_side.values())
    if large > 0 and (small == 0 or large / small > expectations.max_left_right_volume_ratio):
        flags.append(
            QAFlag(
                "asymmetry",
                "warning",
                f"Cartilage is asymmetric: right {per_side['right']:.1f} ml, left {per_side['left']:.1f} ml "
                f"(ratio above {expectations.max_left_right_volume_ratio:g}).",
                "Cartilage",
            )
        )
    return flags
