"""Pseudo-landmarks: evenly spaced points along the sternum outline between the anatomical landmarks.

They densify the 34 anatomical landmarks for shape modelling. Between each pair of
protocol neighbours (L01-L02, ..., L33-L34 and L34-L01, closing the loop) ``per_segment``
points are placed along the rim of manubrium plus body (:class:`SternumOutline`: the
outline of the frontal projection at mid-thickness, lying on the surface), at equal
arclength steps between where the two landmarks meet the rim, then moved onto the voxel
surface. The result depends only on the landmarks and the segmentation (deterministic).

Names say where a point lies: "P01-02_1" is the first of the points from L01 towards L02.
Every pair keeps its points, so all cases have the same names in the same order; a pair
whose landmark is unplaced, or whose landmarks are out of order (the anticlockwise arc
between them is over half the outline), gets NaN rows.
"""

from __future__ import annotations

import numpy as np
from SternumSSMLib.geometry import PointSet

from .landmark_qa import UNION, LandmarkQAContext

PSEUDO_DESCRIPTION = "Pseudo-landmark {index} of {count} between {first} and {second}"


def pseudo_landmark_name(first_id: str, second_id: str, index: int) -> str:
    """The name of pseudo-landmark ``index`` from ``first_id`` towards ``second_id``: "P01-02_1"."""
    return f"P{first_id.lstrip('L')}-{second_id.lstrip('L')}_{index}"


def pseudo_landmarks(anatomical: PointSet, context: LandmarkQAContext, per_segment: int) -> PointSet:
    """``per_segment`` pseudo-landmarks between each pair of neighbouring protocol landmarks.

    ``anatomical``: the protocol's landmarks by name, LPS or RAS (missing names and NaN rows
    count as unplaced). Returns an LPS :class:`PointSet` of ``len(protocol) * per_segment``
    points in protocol order, with descriptions saying that each is a pseudo-landmark.
    """
    if per_segment < 0:
        raise ValueError(f"per_segment must be >= 0, got {per_segment}.")
    protocol = context.protocol
    outline = context.outline
    by_name = dict(zip(anatomical.names, anatomical.to("LPS").positions, strict=True))
    landmarks_lps = np.array([by_name.get(landmark_id, np.full(3, np.nan)) for landmark_id in protocol.ids])
    along, _ = outline.locate(landmarks_lps)
    fractions = np.arange(1, per_segment + 1) / (per_segment + 1)

    names, descriptions, positions = [], [], []
    for n, first in enumerate(protocol.ids):
        following = (n + 1) % len(protocol.ids)
        second = protocol.ids[following]
        arc = outline.forward_arc(along[n], along[following])
        if np.isfinite(arc) and arc <= outline.length_mm / 2.0:
            positions.append(along[n] + fractions * arc)
        else:
            positions.append(np.full(per_segment, np.nan))
        for index in range(1, per_segment + 1):
            names.append(pseudo_landmark_name(first, second, index))
            descriptions.append(PSEUDO_DESCRIPTION.format(index=index, count=per_segment, first=first, second=second))
    along_rim = np.concatenate(positions) if positions else np.empty(0)
    defined = np.isfinite(along_rim)
    on_surface = np.full((len(along_rim), 3), np.nan)
    if defined.any():
        # Onto the surface without sliding along the rim, so the even spacing survives.
        on_surface[defined] = context.surface(UNION).nearest_surface_points(
            outline.points_at(along_rim[defined]), fixed_directions=outline.tangents_at(along_rim[defined])
        )
    return PointSet(
        names=tuple(names),
        positions=on_surface,
        coordinate_system="LPS",
        descriptions=tuple(descriptions),
    )
