"""Surface and outline geometry must not hinge on floating-point noise, and snapping must not slide along the rim.

Two causes made pseudo-landmarks depend on the CPU's BLAS kernel: voxel centres fell exactly
on the outline raster's cell edges (so last-bit noise in the frontal frame moved them to the
neighbouring cell), and the snap fell back to a 2 mm grid of face midpoints at the
manubriosternal joint space, dragging points 1-2.4 mm along the rim.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from SternumLandmarksLib.landmark_qa import LandmarkQAContext
from SternumLandmarksLib.pseudo_landmarks import pseudo_landmarks
from SternumSSMLib.geometry import PointSet, Volume, all_orientation_codes, orientation_direction, rotation_matrix
from SternumSSMLib.geometry import reindexed as reoriented
from SternumSSMLib.phantom import Phantom, generate_phantom, random_parameters, with_orientation

PER_SEGMENT = 3
OBLIQUE = rotation_matrix([1.0, 2.0, 3.0], 23.0) @ orientation_direction("PIL")


def phantom_case(seed: int, oblique: bool) -> Phantom:
    params = random_parameters(seed, spacing=(2.0, 2.0, 2.0))
    if oblique:
        params = with_orientation(params, OBLIQUE, spacing=(1.8, 2.0, 2.4))
    return generate_phantom(params)


@pytest.fixture(scope="module", params=["axis_aligned", "oblique_mirrored"])
def phantom(request) -> Phantom:
    # Seed 3 slid at the joint in both orientations before the fix (L05 by 1.5 mm, L30 by 1.1 mm).
    return phantom_case(3, request.param == "oblique_mirrored")


def pseudo_positions(labels: Volume, landmarks: PointSet) -> np.ndarray:
    return pseudo_landmarks(landmarks, LandmarkQAContext.from_labels(labels), PER_SEGMENT).positions


def rim_slide_mm(labels: Volume, landmarks: PointSet) -> np.ndarray:
    """Per pseudo-landmark: how far snapping moved it along the rim (mm), away from its even station."""
    context = LandmarkQAContext.from_labels(labels)
    outline = context.outline
    along, _ = outline.locate(landmarks.positions)
    following = np.roll(along, -1)
    fractions = np.arange(1, PER_SEGMENT + 1) / (PER_SEGMENT + 1)
    stations = (along[:, None] + fractions[None] * outline.forward_arc(along, following)[:, None]).ravel()
    snapped = pseudo_landmarks(landmarks, context, PER_SEGMENT).positions
    return np.abs(np.sum((snapped - outline.points_at(stations)) * outline.tangents_at(stations), axis=1))


@pytest.mark.parametrize("shift_mm", [1e-12, -1e-12, 1e-9, -1e-9])
def test_an_origin_shift_by_rounding_noise_does_not_move_pseudo_landmarks(phantom, shift_mm):
    reference = pseudo_positions(phantom.labels, phantom.landmarks)
    shift = shift_mm * np.array([1.0, -1.0, 1.0])
    geometry = phantom.labels.geometry
    moved = Volume(phantom.labels.array, dataclasses.replace(geometry, origin_lps=geometry.origin_lps + shift))
    landmarks = dataclasses.replace(phantom.landmarks, positions=phantom.landmarks.positions + shift)

    shifted_back = pseudo_positions(moved, landmarks) - shift
    assert np.all(np.isfinite(reference))
    assert np.abs(shifted_back - reference).max() < 1e-6


def test_pseudo_landmarks_are_the_same_in_all_48_axis_orientations(phantom):
    reference = pseudo_positions(phantom.labels, phantom.landmarks)
    for code in all_orientation_codes():
        positions = pseudo_positions(reoriented(phantom.labels, code), phantom.landmarks)
        assert np.abs(positions - reference).max() < 1e-6, code


def test_pseudo_landmarks_do_not_slide_along_the_rim(phantom):
    slide = rim_slide_mm(phantom.labels, phantom.landmarks)
    assert slide.max() < 0.01, slide.max()


@pytest.mark.slow
def test_no_pseudo_landmark_slides_at_the_joint_in_a_seed_survey():
    """Seeds 0-11 on both grids: before the fix 7 of 24 cases slid 1.0-2.35 mm at L05/L30."""
    worst = {}
    for seed in range(12):
        for oblique in (False, True):
            phantom = phantom_case(seed, oblique)
            worst[seed, oblique] = float(rim_slide_mm(phantom.labels, phantom.landmarks).max())
    assert max(worst.values()) < 0.01, worst
