"""The bundled demo landmark model: accuracy on held-out phantoms, physical consistency across scan
orientations, and clear refusals. Floors sit a little below the numbers in its evaluation.json."""

from __future__ import annotations

import numpy as np
import pytest
from SternumLandmarksLib.landmark_model_evaluation import oblique_direction
from SternumLandmarksLib.landmark_prediction import BUNDLED_LANDMARK_MODEL, LandmarkModel
from SternumLandmarksLib.landmark_preprocessing import EmptyMaskError
from SternumSSMLib.geometry import PointSet, Volume
from SternumSSMLib.metrics import landmark_error_table, landmark_errors
from SternumSSMLib.phantom import generate_phantom, random_parameters, with_orientation

SEEDS = (5000, 5001, 5004)  # long manubrium, long manubrium, ordinary (held out from training)
# evaluation.json on these three: median 1.8-2.3 mm, mean 2.3-4.0 mm per case; the demo misses the
# study-level target (median 1.5, mean 2.0), so these floors guard against regressions, not the target.
MEDIAN_FLOOR_MM = 2.8
MEAN_FLOOR_MM = 4.2
OUTLIER_FLOOR_PERCENT = 12.0


@pytest.fixture(scope="module")
def model():
    return LandmarkModel(BUNDLED_LANDMARK_MODEL)


@pytest.fixture(scope="module")
def cases():
    return {seed: generate_phantom(random_parameters(seed, spacing=(2.0, 2.0, 2.0))) for seed in SEEDS}


def test_held_out_phantoms_are_landmarked_within_the_demo_floors(model, cases):
    errors, peaks = [], []
    for phantom in cases.values():
        prediction = model.predict(phantom.labels)
        errors.append(landmark_errors(prediction.points("LPS"), phantom.landmarks))
        every = PointSet(prediction.landmarks_lps.names, prediction.peak_positions_lps, "LPS")
        peaks.append(landmark_errors(every, phantom.landmarks))
    table = landmark_error_table(np.concatenate(errors))
    every_peak = landmark_error_table(np.concatenate(peaks))
    assert table["points"] >= 0.9 * 34 * len(cases)
    assert table["median_mm"] < MEDIAN_FLOOR_MM and table["mean_mm"] < MEAN_FLOOR_MM
    assert every_peak["O_10"] <= OUTLIER_FLOOR_PERCENT


def test_an_oblique_mirrored_copy_gives_the_same_physical_landmarks(model):
    params = random_parameters(5004, spacing=(2.0, 2.0, 2.0))
    axial = model.predict(generate_phantom(params).labels)
    oblique = model.predict(generate_phantom(with_orientation(params, oblique_direction(5004), (1.8, 2.2, 2.0))).labels)
    difference = np.linalg.norm(axial.peak_positions_lps - oblique.peak_positions_lps, axis=1)
    assert np.median(difference) < 1.0
    np.testing.assert_allclose(oblique.points("RAS").positions, oblique.points("LPS").positions * [-1, -1, 1])


def test_a_segmentation_without_sternum_is_refused(model, cases):
    phantom = cases[5004]
    cartilage_only = Volume(np.where(phantom.labels.array == 4, 4, 0).astype(np.uint8), phantom.labels.geometry)
    with pytest.raises(EmptyMaskError, match="nothing to place landmarks on"):
        model.predict(cartilage_only)


def test_progress_is_reported_in_order_and_cancel_stops(model, cases):
    from SternumLandmarksLib.landmark_prediction import LandmarkPredictionCancelled

    fractions = []
    model.predict(cases[5004].labels, progress=lambda fraction, text: fractions.append(fraction))
    assert fractions == sorted(fractions) and fractions[0] == 0.0 and fractions[-1] == 1.0
    with pytest.raises(LandmarkPredictionCancelled):
        model.predict(cases[5004].labels, cancel=lambda: True)
