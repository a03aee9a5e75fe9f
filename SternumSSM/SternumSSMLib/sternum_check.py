"""Is the bone labelled as sternum a sternum? The anatomy a radiologist looks at, not volumes alone.

A segmentation model run on a head, an abdomen or a limb labels some bone as manubrium and
sternal body, often within the plausible volume ranges. What tells a sternum apart:

- shape: an elongated bone running head to foot, the manubrium above the body;
- costal cartilage, where any is labelled, joining it;
- with the CT: bone-like HU, at the front of the body, on its midline, in front of the lungs.

Everything is measured in LPS millimetres about the labelled bone itself and the CT is sampled
at physical points, so the answer depends neither on the world origin nor on the array's axis
order or direction. A check that cannot be made (no CT, a sternum cut by the scan, no cartilage
labelled) is skipped, not failed.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from .anatomy import label_scheme
from .geometry import Volume
from .postprocess import has_cut_piece

STERNUM_CLASSES = ("Manubrium", "Sternal_body", "Xiphoid")
# Below this the "sternum" is a few stray voxels, not a bone.
NO_STERNUM_ML = 2.0
# A sternum is ~15-19 cm long and 2.5-6 cm wide; anything less elongated than this is another bone.
MIN_ELONGATION = 1.5
# Supine, the sternum tilts ~15-30 degrees from the head-foot axis.
MAX_TILT_DEG = 50.0
# Costal cartilage joins the sternum; a piece within this distance reaches it.
CARTILAGE_REACH_MM = 10.0
# The brightest tenth of a bone is cortex, far above soft tissue (40 HU) and cartilage (80-150 HU).
BONE_HU = 250.0
# Air and lung are below this; soft tissue, cartilage and bone above.
AIR_HU = -500.0
# The sternum lies in the front part of the body's depth behind it...
MAX_ANTERIOR_FRACTION = 0.3
# ...within this fraction of the body's width from its midline...
MAX_MIDLINE_OFFSET = 0.15
# ...with at least this much lung (air enclosed by the body) behind it on each side.
MIN_LUNG_ML = 100.0
_SAMPLE_MM = 5.0


class NoSternumError(ValueError):
    """The labels called manubrium and sternal body are not a sternum."""


def no_sternum_message(problems: list[str]) -> str:
    """One sentence for :func:`sternum_problems`' answer: "No sternum found: the bone labelled as sternum ..."."""
    return f"No sternum found: the bone labelled as sternum {'; '.join(problems)}."


def require_sternum(labels: Volume, ct: Volume | None, consequence: str) -> None:
    """Raise :class:`NoSternumError` (the problems, then ``consequence``) unless the labels show a sternum."""
    problems = sternum_problems(labels, ct)
    if problems:
        raise NoSternumError(f"{no_sternum_message(problems)} {consequence}")


def sternum_problems(labels: Volume, ct: Volume | None = None) -> list[str]:
    """Why the labelled manubrium/body/xiphoid is not a sternum; an empty list when it looks like one.

    ``ct`` (HU, any grid) enables the HU and position checks. Each problem is a phrase that
    completes "the bone labelled as sternum ...".
    """
    scheme = label_scheme()
    values = [scheme.by_name(name).value for name in STERNUM_CLASSES]
    bone = np.isin(labels.array, values)
    voxel_ml = float(np.prod(labels.geometry.spacing)) / 1000.0
    bone_ml = float(bone.sum()) * voxel_ml
    if bone_ml < NO_STERNUM_ML:
        return [
            f"is only {bone_ml:.1f} ml (manubrium, body and xiphoid together; "
            f"under {NO_STERNUM_ML:g} ml is stray voxels, not a bone)"
        ]
    points = labels.geometry.index_to_lps(np.argwhere(bone)[:, ::-1])
    problems = _shape_problems(points, labels, bone) + _order_problems(labels) + _cartilage_problems(labels, points)
    if ct is not None:
        problems += _ct_problems(ct, points)
    return problems


def _shape_problems(points: np.ndarray, labels: Volume, bone: np.ndarray) -> list[str]:
    centred = points - points.mean(axis=0)
    axes = np.linalg.eigh(centred.T @ centred)[1][:, ::-1]  # columns: longest axis first
    length, width = (np.subtract(*np.percentile(centred @ axes[:, n], [98, 2])) for n in (0, 1))
    if length < MIN_ELONGATION * width:
        # A sternum cut short by the scan may look stubby; its shape cannot be judged.
        if has_cut_piece(bone, labels.geometry):
            return []
        return [f"is not elongated ({length:.0f} mm long, {width:.0f} mm wide; a sternum is 3-5 times longer)"]
    tilt = float(np.degrees(np.arccos(min(1.0, abs(axes[2, 0])))))
    if tilt > MAX_TILT_DEG:
        return [f"runs {tilt:.0f} degrees off the head-foot axis (a sternum runs within ~30 degrees of it)"]
    return []


def _order_problems(labels: Volume) -> list[str]:
    scheme = label_scheme()
    heights = {}
    for name in ("Manubrium", "Sternal_body"):
        index = np.argwhere(labels.array == scheme.by_name(name).value)
        if len(index) == 0:
            return []
        heights[name] = float(labels.geometry.index_to_lps(index[:, ::-1].mean(axis=0)[None])[0, 2])
    if heights["Manubrium"] <= heights["Sternal_body"]:
        return [
            f"has its manubrium {heights['Sternal_body'] - heights['Manubrium']:.0f} mm below the body "
            "(the manubrium is the top part)"
        ]
    return []


def _cartilage_problems(labels: Volume, bone_points: np.ndarray) -> list[str]:
    """Labelled cartilage must join the bone. One side is enough: a segmentation that misses one
    side's cartilage is still a sternum (the asymmetry flag reports it)."""
    index = np.argwhere(labels.array == label_scheme().by_name("Cartilage").value)
    if len(index) == 0:
        return []
    cartilage = labels.geometry.index_to_lps(index[:, ::-1])
    lo, hi = bone_points.min(axis=0) - CARTILAGE_REACH_MM, bone_points.max(axis=0) + CARTILAGE_REACH_MM
    near_box = cartilage[np.all((cartilage >= lo) & (cartilage <= hi), axis=1)]
    distances = cKDTree(bone_points).query(near_box, distance_upper_bound=CARTILAGE_REACH_MM)[0]
    if not np.any(distances <= CARTILAGE_REACH_MM):
        return [
            f"has no costal cartilage joining it (cartilage is labelled, but none within {CARTILAGE_REACH_MM:.0f} mm; "
            "cartilages 1-7 join the sternum on both sides)"
        ]
    return []


def _ct_problems(ct: Volume, bone_points: np.ndarray) -> list[str]:
    problems = []
    hu = _sample(ct, bone_points)
    hu = hu[np.isfinite(hu)]
    bright = float(np.percentile(hu, 90)) if len(hu) else -1000.0
    if bright < BONE_HU:
        problems.append(
            f"is not bone on the CT (its brightest tenth reaches only {bright:.0f} HU; bone exceeds {BONE_HU:.0f} HU)"
        )
    centre = np.median(bone_points, axis=0)
    top, bottom = np.percentile(bone_points[:, 2], [90, 10])
    depth = _body_depth(ct, centre)
    if depth is None:
        return [*problems, "has no body around it on the CT"]
    front, back = depth
    if front > MAX_ANTERIOR_FRACTION * (front + back):
        problems.append(
            f"is not at the front of the body ({front:.0f} mm of body in front of it, {back:.0f} mm behind)"
        )
    offset, width = _midline_offset(ct, centre + np.array([0.0, 0.5 * back, 0.0]))
    if offset > MAX_MIDLINE_OFFSET * width:
        problems.append(f"lies {offset:.0f} mm off the body's midline")
    lungs = _lung_ml(ct, centre, back, bottom, top)
    if min(lungs.values()) < MIN_LUNG_ML:
        problems.append(
            f"has no lungs behind it (right {lungs['right']:.0f} ml, left {lungs['left']:.0f} ml of air "
            f"inside the body behind it; at least {MIN_LUNG_ML:.0f} ml expected on each side)"
        )
    return problems


def _sample(ct: Volume, points_lps: np.ndarray) -> np.ndarray:
    """HU at LPS points (trilinear); NaN outside the scan."""
    kji = ct.geometry.lps_to_index(points_lps)[:, ::-1].T
    return ndimage.map_coordinates(ct.array, kji, output=np.float32, order=1, mode="constant", cval=np.nan)


def _tissue_span(hu: np.ndarray, positions: np.ndarray) -> tuple[float, float] | None:
    """First and last position along a ray where there is tissue (above ``AIR_HU``)."""
    tissue = np.flatnonzero(hu > AIR_HU)
    return None if len(tissue) == 0 else (float(positions[tissue[0]]), float(positions[tissue[-1]]))


def _body_depth(ct: Volume, centre: np.ndarray) -> tuple[float, float] | None:
    """Body in front of and behind ``centre`` (mm, along LPS y), the median of nine parallel rays."""
    steps = np.arange(-300.0, 500.0, 2.0)
    fronts, backs = [], []
    for dx in (-10.0, 0.0, 10.0):
        for dz in (-20.0, 0.0, 20.0):
            ray = centre + np.array([dx, 0.0, dz]) + steps[:, None] * np.array([0.0, 1.0, 0.0])
            span = _tissue_span(_sample(ct, ray), steps)
            if span is not None:
                fronts.append(-span[0])
                backs.append(span[1])
    if not fronts:
        return None
    return max(0.0, float(np.median(fronts))), max(0.0, float(np.median(backs)))


def _midline_offset(ct: Volume, point: np.ndarray) -> tuple[float, float]:
    """Distance (mm) from ``point`` to the body's midline along LPS x, and the body's width there."""
    steps = np.arange(-400.0, 400.0, 2.0)
    offsets, widths = [], []
    for dz in (-20.0, 0.0, 20.0):
        ray = point + np.array([0.0, 0.0, dz]) + steps[:, None] * np.array([1.0, 0.0, 0.0])
        span = _tissue_span(_sample(ct, ray), steps)
        if span is not None:
            offsets.append(abs(0.5 * (span[0] + span[1])))
            widths.append(span[1] - span[0])
    if not offsets:
        return np.inf, 0.0
    return float(np.median(offsets)), float(np.median(widths))


def _lung_ml(ct: Volume, centre: np.ndarray, back: float, bottom: float, top: float) -> dict[str, float]:
    """Air enclosed by the body (tissue before and after it along LPS y) behind ``centre``, per side."""
    x = np.arange(-150.0, 150.0 + 0.1, _SAMPLE_MM)
    y = np.arange(-100.0, max(back, 0.0) + _SAMPLE_MM, _SAMPLE_MM)
    z = np.arange(bottom, top + 0.1, _SAMPLE_MM) - centre[2]
    grid = np.stack(np.meshgrid(x, y, z, indexing="ij"), axis=-1)  # [x, y, z, 3]
    hu = _sample(ct, (grid + centre).reshape(-1, 3)).reshape(grid.shape[:3])
    tissue = hu > AIR_HU
    # Along y (axis 1): tissue somewhere in front and somewhere behind.
    in_front = np.maximum.accumulate(tissue, axis=1)
    behind = np.maximum.accumulate(tissue[:, ::-1], axis=1)[:, ::-1]
    lung = (hu <= AIR_HU) & in_front & behind & (y >= 0.0)[None, :, None]
    sample_ml = _SAMPLE_MM**3 / 1000.0
    return {
        "right": float(lung[x < 0].sum()) * sample_ml,
        "left": float(lung[x > 0].sum()) * sample_ml,
    }
