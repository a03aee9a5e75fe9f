"""Regions of interest: crop a volume to an LPS box and paste a result back into the full grid."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .geometry import ImageGeometry, Volume

Slices = tuple[slice, slice, slice]  # [k, j, i]


@dataclass(frozen=True)
class Box:
    """An axis-aligned box in LPS millimetres."""

    lo_lps: np.ndarray
    hi_lps: np.ndarray

    def __post_init__(self) -> None:
        lo, hi = np.asarray(self.lo_lps, float), np.asarray(self.hi_lps, float)
        if lo.shape != (3,) or hi.shape != (3,) or not np.all(np.isfinite(np.r_[lo, hi])) or np.any(hi <= lo):
            raise ValueError(f"A box needs finite lower and upper LPS corners with lower < upper, got {lo} and {hi}.")
        object.__setattr__(self, "lo_lps", lo)
        object.__setattr__(self, "hi_lps", hi)

    @classmethod
    def from_ras_bounds(cls, bounds: list[float]) -> Box:
        """From Slicer's [r_min, r_max, a_min, a_max, s_min, s_max] (e.g. an ROI node's GetRASBounds)."""
        r0, r1, a0, a1, s0, s1 = bounds
        return cls(np.array([-r1, -a1, s0]), np.array([-r0, -a0, s1]))


def index_slices(geometry: ImageGeometry, box: Box) -> tuple[slice, slice, slice]:
    """[k, j, i] slices of the voxels whose centres the box covers (any orientation: the index bounding box)."""
    lo, hi = box.lo_lps, box.hi_lps
    corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    index = geometry.lps_to_index(corners)
    start = np.maximum(np.ceil(index.min(axis=0) - 1e-6).astype(int), 0)
    stop = np.minimum(np.floor(index.max(axis=0) + 1e-6).astype(int) + 1, np.array(geometry.size))
    if np.any(stop - start < 2):
        raise ValueError(
            "The region of interest lies outside the volume (or covers less than two voxels along an axis); "
            "move it over the sternum."
        )
    return tuple(slice(int(start[axis]), int(stop[axis])) for axis in (2, 1, 0))


def crop(volume: Volume, slices: tuple[slice, slice, slice]) -> Volume:
    start_ijk = np.array([slices[2].start, slices[1].start, slices[0].start], dtype=float)
    array = volume.array[slices]
    geometry = ImageGeometry(
        origin_lps=volume.geometry.index_to_lps(start_ijk[None])[0],
        spacing=volume.geometry.spacing,
        direction_lps=volume.geometry.direction_lps,
        size=array.shape[::-1],
    )
    return Volume(np.ascontiguousarray(array), geometry)


def paste(into: Volume, part: Volume, slices: tuple[slice, slice, slice]) -> Volume:
    """A copy of ``into`` with ``part`` written at ``slices``; everything outside is unchanged."""
    array = into.array.copy()
    array[slices] = part.array
    return Volume(array, into.geometry)


def occupied_slices(array: np.ndarray) -> tuple[slice, ...] | None:
    """The smallest index box (slices per array axis) around the nonzero voxels; None if there are none."""
    slices = []
    for axis in range(array.ndim):
        filled = np.flatnonzero(np.any(array, axis=tuple(a for a in range(array.ndim) if a != axis)))
        if not filled.size:
            return None
        slices.append(slice(int(filled[0]), int(filled[-1]) + 1))
    return tuple(slices)


def with_border(slices: Slices, shape: tuple[int, ...]) -> Slices:
    """``slices`` one voxel wider on every side that lies inside the volume (``shape``): a crop of labels with that
    border shows the box's inner faces as unlabelled, so only the volume's own faces count as the scan boundary."""
    return tuple(slice(max(part.start - 1, 0), min(part.stop + 1, size))
                 for part, size in zip(slices, shape, strict=True))
