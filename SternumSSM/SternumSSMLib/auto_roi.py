"""Automatic region of interest: a coarse localiser finds the structures' box, the fine pass runs inside it.

Index boxes are ``[k, j, i]`` slices of the CT's own grid, so a crop is lossless and pastes back exactly,
for any orientation. The box of a label map is taken over its labelled voxels' corners in LPS millimetres,
then widened by a margin in millimetres, so it means the same on every grid.

The margin is fitted to the fine model's sliding window (:func:`fit_to_tiles`): network time goes by tiles,
and a box one voxel longer than a tile along an axis costs a second row of tiles there. So each axis takes
the fewest tiles that hold the structures with AUTO_ROI_MIN_MARGIN_MM, then as much margin as those tiles
hold, up to AUTO_ROI_MARGIN_MM.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .geometry import ImageGeometry, Volume
from .postprocess import CUT_SECTION_MM2
from .roi import Box, Slices, occupied_slices

if TYPE_CHECKING:
    from .segmentation_inference import TileGrid

# Context around the structures for the fine pass: the localiser works at 6 mm, and the model saw
# crops with 10-40 mm around the structures in training. The margin lies between these two, see fit_to_tiles.
AUTO_ROI_MARGIN_MM = 25.0
AUTO_ROI_MIN_MARGIN_MM = 15.0
# A fine pass whose labels still touch an inner face of its box is repeated on a box grown there.
MAX_GROWTHS = 2
# The localiser was trained on 2 mm scans; a finer CT is block-averaged to about this before it.
LOCALISER_INPUT_MM = 2.0


def block_mean(image: Volume, target_mm: float = LOCALISER_INPUT_MM) -> Volume:
    """``image`` averaged over blocks of whole voxels, each axis by the largest factor that keeps its spacing
    at most ``target_mm``: anti-aliased and exact in geometry (a block's centre is the mean of its voxels'
    centres), and far cheaper than resampling the whole CT with splines. A trailing partial block is dropped."""
    spacing = np.asarray(image.geometry.spacing, float)
    factors = np.maximum(np.floor(target_mm / spacing + 1e-9), 1).astype(int)  # (i, j, k)
    if np.all(factors == 1):
        return image
    f_k, f_j, f_i = factors[::-1]
    n_k, n_j, n_i = (np.array(image.array.shape) // factors[::-1]).tolist()
    blocks = image.array[: n_k * f_k, : n_j * f_j, : n_i * f_i].reshape(n_k, f_k, n_j, f_j, n_i, f_i)
    array = blocks.mean(axis=(1, 3, 5), dtype=np.float32)
    geometry = ImageGeometry(
        origin_lps=image.geometry.index_to_lps(((factors - 1) / 2.0)[None])[0],
        spacing=spacing * factors,
        direction_lps=image.geometry.direction_lps,
        size=(n_i, n_j, n_k),
    )
    return Volume(array, geometry)


def structures_box(labels: Volume, margin_mm: float = 0.0) -> Box | None:
    """LPS box around every labelled voxel of ``labels`` (whole voxels) plus ``margin_mm``; None if none."""
    occupied = occupied_slices(labels.array)
    if occupied is None:
        return None
    lo = np.array([part.start for part in occupied[::-1]], dtype=float) - 0.5  # (i, j, k)
    hi = np.array([part.stop - 1 for part in occupied[::-1]], dtype=float) + 0.5
    corners = np.array([[a, b, c] for a in (lo[0], hi[0]) for b in (lo[1], hi[1]) for c in (lo[2], hi[2])])
    points = labels.geometry.index_to_lps(corners)
    return Box(points.min(axis=0) - margin_mm, points.max(axis=0) + margin_mm)


def fit_to_tiles(inner: Slices, outer: Slices, grid: TileGrid, spacing_kji: np.ndarray) -> Slices:
    """Per axis, ``inner`` (the structures with the least margin) widened towards ``outer`` (the most) as
    far as the tiles that ``inner`` needs reach, split evenly between both sides where there is room."""
    fitted = []
    for axis, (small, large) in enumerate(zip(inner, outer, strict=True)):
        length = small.stop - small.start
        tiles = grid.tiles(axis, length, float(spacing_kji[axis]))
        extra = max(min(grid.longest(axis, tiles, float(spacing_kji[axis])), large.stop - large.start) - length, 0)
        room_low, room_high = small.start - large.start, large.stop - small.stop
        high = min(extra - min(extra // 2, room_low), room_high)
        low = min(extra - high, room_low)
        fitted.append(slice(small.start - low, small.stop + high))
    return tuple(fitted)


def touched_inner_faces(
    labels: np.ndarray, slices: Slices, shape: tuple[int, ...], spacing_kji: np.ndarray
) -> list[tuple[int, int]]:
    """(array axis, -1 low | +1 high) of each face of the crop ``labels`` that lies inside the CT (``shape``)
    and shows a labelled section of at least ``CUT_SECTION_MM2``, so that a structure may go on beyond the
    box. A few stray voxels on a face (a model's guess at the edge of its input) do not count."""
    faces = []
    for axis, part in enumerate(slices):
        pixel_mm2 = float(np.prod(np.delete(spacing_kji, axis)))
        for side, index, inside in ((-1, 0, part.start > 0), (+1, -1, part.stop < shape[axis])):
            if inside and np.count_nonzero(np.take(labels, index, axis=axis)) * pixel_mm2 >= CUT_SECTION_MM2:
                faces.append((axis, side))
    return faces


def grow(slices: Slices, faces: list[tuple[int, int]], spacing_kji: np.ndarray, margin_mm: float,
         shape: tuple[int, ...]) -> Slices:
    """``slices`` widened by ``margin_mm`` on each of ``faces``, within the CT."""
    grown = list(slices)
    for axis, side in faces:
        step = int(np.ceil(margin_mm / spacing_kji[axis]))
        part = grown[axis]
        grown[axis] = slice(max(part.start - step, 0), part.stop) if side < 0 else slice(
            part.start, min(part.stop + step, shape[axis]))
    return tuple(grown)
