"""The second landmark stage: estimates moved along the rim onto their protocol features.

No network here: the estimates are a phantom's true landmarks slid along the rim, as the network's
errors mostly are. Floors sit a little below the measured numbers (seed 5004: median 0.94 mm,
mean 1.01 mm, worst 1.87 mm, the same from the truth itself and from estimates slid up to 4 mm).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from SternumLandmarksLib.landmark_refinement import Rim, refine_landmarks
from SternumSSMLib.anatomy import default_protocol
from SternumSSMLib.geometry import Volume, all_orientation_codes
from SternumSSMLib.geometry import reindexed as reoriented
from SternumSSMLib.phantom import Phantom, generate_phantom, random_parameters, sternum_label_map

PROTOCOL = default_protocol()


@pytest.fixture(scope="module")
def phantom() -> Phantom:
    return generate_phantom(random_parameters(5004, spacing=(2.0, 2.0, 2.0)))


@pytest.fixture(scope="module")
def rim(phantom) -> Rim:
    return Rim.from_labels(phantom.labels)


def slid_along_rim(rim: Rim, points_lps: np.ndarray, largest_mm: float, seed: int = 0) -> np.ndarray:
    along, _ = rim.outline.locate(points_lps)
    return rim.outline.points_at(along + np.random.default_rng(seed).uniform(-largest_mm, largest_mm, len(along)))


@pytest.mark.parametrize("largest_mm", [0.0, 4.0])
def test_estimates_slid_along_the_rim_come_back_to_their_features(phantom, rim, largest_mm):
    truth = phantom.landmarks.positions
    refined = refine_landmarks(slid_along_rim(rim, truth, largest_mm), rim, PROTOCOL)
    errors = np.linalg.norm(refined - truth, axis=1)
    assert np.median(errors) < 1.1 and errors.mean() < 1.2 and errors.max() < 2.5


def test_a_finer_mask_gives_finer_landmarks():
    """At 1 mm the rim holds more of the outline: measured median 0.61 mm, mean 0.72 mm, worst 2.37 mm."""
    phantom = sternum_label_map(random_parameters(5004, spacing=(1.0, 1.0, 1.0)))
    rim = Rim.from_labels(phantom.labels)
    truth = phantom.landmarks.positions
    errors = np.linalg.norm(refine_landmarks(slid_along_rim(rim, truth, 4.0), rim, PROTOCOL) - truth, axis=1)
    assert np.median(errors) < 0.75 and errors.mean() < 0.85 and errors.max() < 3.0


def test_two_estimates_on_one_spot_are_pulled_apart_in_protocol_order(phantom, rim):
    """The first demo network put L03 and L04 onto one point in 8 of 10 held-out phantoms."""
    truth = phantom.landmarks.positions
    estimates = truth.copy()
    estimates[3] = truth[2]  # L04 on L03
    refined = refine_landmarks(estimates, rim, PROTOCOL)
    assert np.linalg.norm(refined[2] - refined[3]) > 3.0
    assert np.all(np.linalg.norm(refined[2:4] - truth[2:4], axis=1) < 2.5)
    along, _ = rim.outline.locate(refined)
    assert rim.outline.forward_arc(along[2], along[3]) < rim.outline.length_mm / 2  # L04 after L03


def test_refined_points_lie_on_the_surface_and_missing_estimates_stay_missing(phantom, rim):
    estimates = phantom.landmarks.positions.copy()
    estimates[[0, 9]] = np.nan  # the jugular notch and a costal notch
    refined = refine_landmarks(estimates, rim, PROTOCOL)
    assert np.all(np.isnan(refined[[0, 9]]))
    placed = np.all(np.isfinite(refined), axis=1)
    assert placed.sum() == 32
    assert np.abs(rim.surface.signed_distance(refined[placed])).max() < 0.3


@pytest.mark.parametrize("shift_mm", [1e-9, -1e-9])
def test_an_origin_shift_by_rounding_noise_does_not_move_refined_landmarks(phantom, rim, shift_mm):
    estimates = slid_along_rim(rim, phantom.landmarks.positions, 4.0)
    reference = refine_landmarks(estimates, rim, PROTOCOL)
    shift = shift_mm * np.array([1.0, -1.0, 1.0])
    geometry = phantom.labels.geometry
    moved = Volume(phantom.labels.array, dataclasses.replace(geometry, origin_lps=geometry.origin_lps + shift))
    shifted_back = refine_landmarks(estimates + shift, Rim.from_labels(moved), PROTOCOL) - shift
    assert np.abs(shifted_back - reference).max() < 1e-6


def test_refined_landmarks_are_the_same_in_all_48_axis_orientations(phantom, rim):
    estimates = slid_along_rim(rim, phantom.landmarks.positions, 4.0)
    reference = refine_landmarks(estimates, rim, PROTOCOL)
    for code in all_orientation_codes():
        refined = refine_landmarks(estimates, Rim.from_labels(reoriented(phantom.labels, code)), PROTOCOL)
        assert np.abs(refined - reference).max() < 1e-6, code


@pytest.mark.parametrize("phase_mm", [0.0, 0.5, 1.0, 1.5])
def test_the_waist_stays_at_the_narrowest_level_whatever_the_voxel_phase(phase_mm):
    """Near its waist the phantom's manubrium (a smooth width profile, faster narrowing from above than
    widening below) changes width by less than a voxel: 2 mm voxels turn that into a flat stretch whose
    lowest samples depend on where the voxel steps fall. The middle of the near-narrowest stretch stays put."""
    from SternumLandmarksLib.landmark_refinement import _narrowest_level

    waist = -12.0
    levels = np.arange(-30.0, 10.0, 0.25)[::-1]  # superior coordinate, top down along the margin
    half_width = 14.5 + 0.02 * (levels - waist) ** 2 * np.where(levels > waist, 2.0, 1.0)
    quantised = 2.0 * np.floor((half_width + phase_mm) / 2.0) + 1.0 - phase_mm  # the voxel columns' edges
    margins = [np.column_stack([side * quantised, levels]) for side in (-1.0, 1.0)]
    assert abs(_narrowest_level(margins, 0.25) - waist) < 1.5  # the flat stretch's ends: 5-9 mm off


def test_a_costal_notch_lands_in_the_middle_of_its_deepest_stretch_not_on_its_deepest_sample(rim):
    """A notch's bend has a flat top whose deepest sample moves with the voxel steps (scan direction):
    the refinement takes the bend-weighted middle of the samples at least half as deep."""
    from SternumLandmarksLib.landmark_refinement import RefinementSettings, _Refinement

    refinement = _Refinement(rim, PROTOCOL, RefinementSettings())
    middle = int(np.flatnonzero(rim.structure == rim.structure[0])[0]) + 20
    refinement.bend = np.zeros(rim.count)
    top = np.array([0.2, 0.6, 0.9, 0.95, 0.96, 0.96, 0.96, 0.97, 0.9, 0.6, 0.2])
    refinement.bend[(middle + np.arange(-5, 6)) % rim.count] = top
    deepest = (middle + 2) % rim.count
    assert refinement._notch_centre(deepest) == middle
    refinement.bend[(middle - 1) % rim.count] = 0.0  # a break: only the stretch on the deepest sample's side counts
    assert refinement._notch_centre(deepest) == (middle + 2) % rim.count
