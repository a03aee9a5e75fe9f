"""Plausibility flags for a sternum/cartilage label map, in words an annotator can act on.

Flags: no sternum at all, a class missing, a class volume outside its plausible range,
a wrong number of cartilage pieces per side, a structure cut by the scan boundary, and
strongly asymmetric left/right cartilage. Ranges and counts come from ``anatomy.json``.
Left and right are the patient's (LPS x > 0 is left), whatever the image orientation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import ndimage

from .anatomy import label_scheme
from .geometry import Volume

Severity = Literal["error", "warning"]
STERNUM_CLASSES = ("Manubrium", "Sternal_body", "Xiphoid")
# Below this the "sternum" is a few stray voxels, not a bone.
NO_STERNUM_ML = 2.0
# A cut structure shows on the scan face with at least this many voxels (ignores single-voxel grazes).
BOUNDARY_VOXELS = 5


@dataclass(frozen=True)
class QAFlag:
    code: str
    severity: Severity
    message: str
    segment: str | None = None


def class_volumes_ml(labels: Volume) -> dict[str, float]:
    scheme = label_scheme()
    counts = np.bincount(labels.array.ravel().astype(np.int64), minlength=max(scheme.values) + 1)
    voxel_ml = float(np.prod(labels.geometry.spacing)) / 1000.0
    return {c.name: float(counts[c.value]) * voxel_ml for c in scheme.classes}


def _boundary_voxels(mask: np.ndarray) -> int:
    return sum(int(np.take(mask, index, axis=axis).sum()) for axis in range(3) for index in (0, -1))


def cartilage_pieces_per_side(labels: Volume) -> dict[str, int]:
    """Connected cartilage pieces (26-connected), assigned to a side by the LPS x of their centre."""
    value = label_scheme().by_name("Cartilage").value
    components, count = ndimage.label(labels.array == value, structure=np.ones((3, 3, 3)))
    if count == 0:
        return {"right": 0, "left": 0}
    centres = np.array(ndimage.center_of_mass(np.ones_like(components), components, range(1, count + 1)))
    x_lps = labels.geometry.index_to_lps(centres[:, ::-1])[:, 0]
    return {"right": int(np.sum(x_lps < 0)), "left": int(np.sum(x_lps >= 0))}


def cartilage_volume_per_side_ml(labels: Volume) -> dict[str, float]:
    value = label_scheme().by_name("Cartilage").value
    index = np.argwhere(labels.array == value)[:, ::-1]
    x_lps = labels.geometry.index_to_lps(index)[:, 0] if len(index) else np.zeros(0)
    voxel_ml = float(np.prod(labels.geometry.spacing)) / 1000.0
    return {"right": float(np.sum(x_lps < 0)) * voxel_ml, "left": float(np.sum(x_lps >= 0)) * voxel_ml}


def qa_flags(labels: Volume, expected_cartilage_pieces_per_side: int | None = None) -> list[QAFlag]:
    """Flags for one label map; an empty list means nothing looked implausible."""
    scheme = label_scheme()
    volumes = class_volumes_ml(labels)
    if sum(volumes[name] for name in STERNUM_CLASSES) < NO_STERNUM_ML:
        sternum_ml = sum(volumes[name] for name in STERNUM_CLASSES)
        message = (
            f"No sternum found (manubrium, body and xiphoid together {sternum_ml:.1f} ml). Check that the CT shows "
            "the thorax; do not correct this result, segment by hand or skip the case."
        )
        return [QAFlag("no_sternum", "error", message)]
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
        mask = labels.array == segment_class.value
        if _boundary_voxels(mask) >= BOUNDARY_VOXELS:
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
