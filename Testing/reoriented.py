"""The same physical volume stored with its array axes permuted and flipped (test helper)."""

from __future__ import annotations

import numpy as np
from SternumSSMLib.geometry import ImageGeometry, Volume, orientation_direction


def reoriented(volume: Volume, code: str) -> Volume:
    """``volume`` re-indexed so that its new i, j, k axes run along the old ones that ``code`` names.

    ``code`` is read relative to the current index axes, as if they were L, P, S: "LPS" changes
    nothing, "PLS" swaps i and j, "RPS" reverses i. Every voxel keeps its LPS position and
    value, so anything physical computed from the result must equal that of ``volume``.
    """
    signed = orientation_direction(code)
    old_axes = np.argmax(np.abs(signed), axis=0)  # new index axis c runs along old axis old_axes[c]
    signs = signed[old_axes, np.arange(3)]
    # Arrays are [k, j, i]: new axis c sits at array position 2 - c.
    array = np.transpose(volume.array, [2 - old_axes[2 - position] for position in range(3)])
    for axis in np.flatnonzero(signs < 0):
        array = np.flip(array, axis=2 - axis)
    geometry = volume.geometry
    first_voxel = np.zeros(3)
    first_voxel[old_axes] = np.where(signs > 0, 0, np.asarray(geometry.size)[old_axes] - 1)
    return Volume(
        np.ascontiguousarray(array),
        ImageGeometry(
            origin_lps=geometry.index_to_lps(first_voxel[None])[0],
            spacing=geometry.spacing[old_axes],
            direction_lps=geometry.direction_lps[:, old_axes] * signs,
            size=tuple(int(geometry.size[axis]) for axis in old_axes),
        ),
    )
