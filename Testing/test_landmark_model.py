"""The bundled demo landmark model: accuracy on held-out phantoms, physical consistency across scan
orientations, and clear refusals. Floors sit a little below the numbers in its evaluation.json.

Two stages are checked: the network's peaks alone (``first_stage_lps``) and the points after the
refinement along the rim (``landmark_refinement``), which is what users get."""

from __future__ import annotations

import json

import numpy as np
import pytest
from SternumLandmarksLib.landmark_model_evaluation import oblique_direction
from SternumLandmarksLib.landmark_prediction import BUNDLED_LANDMARK_MODEL, LandmarkModel
from SternumLandmarksLib.landmark_preprocessing import EmptyMaskError
from SternumSSMLib.geometry import PointSet, Volume
from SternumSSMLib.metrics import landmark_error_table, landmark_errors
from SternumSSMLib.phantom import generate_phantom, random_parameters, with_orientation

SEEDS = (5000, 5001, 5004)  # long manubrium, long manubrium, ordinary (held out from training)
# The network alone on these three: median 2.07 mm, mean 2.72 mm, 3 of 102 peaks beyond 10 mm; it
# misses the study-level target (median 1.5, mean 2.0), so these floors guard against regressions.
FIRST_STAGE_MEDIAN_FLOOR_MM = 2.5
FIRST_STAGE_MEAN_FLOOR_MM = 3.4
FIRST_STAGE_OUTLIER_FLOOR_PERCENT = 7.0
# After the rim refinement: median 0.84 mm, mean 0.93 mm, worst 2.88 mm.
MEDIAN_FLOOR_MM = 1.0
MEAN_FLOOR_MM = 1.1
WORST_FLOOR_MM = 5.0  # 4.75 mm since the waist is the width profile's corner (model README)


@pytest.fixture(scope="module")
def model():
    return LandmarkModel(BUNDLED_LANDMARK_MODEL)


@pytest.fixture(scope="module")
def cases():
    return {seed: generate_phantom(random_parameters(seed, spacing=(2.0, 2.0, 2.0))) for seed in SEEDS}


def test_held_out_phantoms_are_landmarked_within_the_demo_floors(model, cases):
    errors, peaks, first_stage = [], [], []
    for phantom in cases.values():
        prediction = model.predict(phantom.labels, phantom.image)
        names = prediction.landmarks_lps.names
        errors.append(landmark_errors(prediction.points("LPS"), phantom.landmarks))
        peaks.append(landmark_errors(PointSet(names, prediction.peak_positions_lps, "LPS"), phantom.landmarks))
        first_stage.append(landmark_errors(PointSet(names, prediction.first_stage_lps, "LPS"), phantom.landmarks))
        assert not {"L03", "L04"} <= prediction.duplicate_ids  # the first stage collapses them in 5001 and 5004
    table = landmark_error_table(np.concatenate(errors))
    every_peak = np.concatenate(peaks)
    network = landmark_error_table(np.concatenate(first_stage))
    assert table["points"] >= 0.9 * 34 * len(cases)
    assert table["median_mm"] < MEDIAN_FLOOR_MM and table["mean_mm"] < MEAN_FLOOR_MM
    assert np.nanmax(every_peak) < WORST_FLOOR_MM
    assert network["median_mm"] < FIRST_STAGE_MEDIAN_FLOOR_MM and network["mean_mm"] < FIRST_STAGE_MEAN_FLOOR_MM
    assert network["O_10"] <= FIRST_STAGE_OUTLIER_FLOOR_PERCENT


def test_the_refinement_can_be_switched_off(model, cases):
    phantom = cases[5004]
    network_only = model.predict(phantom.labels, phantom.image, refine=False)
    refined = model.predict(phantom.labels, phantom.image)
    assert network_only.first_stage_lps is None and "refinement" not in network_only.record
    np.testing.assert_allclose(refined.first_stage_lps, network_only.peak_positions_lps)
    np.testing.assert_array_equal(refined.confidence, network_only.confidence)


def test_an_oblique_mirrored_copy_gives_the_same_physical_landmarks(model):
    params = random_parameters(5004, spacing=(2.0, 2.0, 2.0))
    axial_phantom = generate_phantom(params)
    oblique_phantom = generate_phantom(with_orientation(params, oblique_direction(5004), (1.8, 2.2, 2.0)))
    axial = model.predict(axial_phantom.labels, axial_phantom.image)
    oblique = model.predict(oblique_phantom.labels, oblique_phantom.image)
    difference = np.linalg.norm(axial.peak_positions_lps - oblique.peak_positions_lps, axis=1)
    assert np.median(difference) < 1.0 and difference.max() < 2.5  # measured 0.74 and 1.86 mm
    np.testing.assert_allclose(oblique.points("RAS").positions, oblique.points("LPS").positions * [-1, -1, 1])


def test_the_longest_held_out_sternum_fits_the_field_of_view(model):
    """Phantom 5003's manubrium and body span 196 mm head to foot: the first demo grid (189 mm) refused it."""
    phantom = generate_phantom(random_parameters(5003, spacing=(2.0, 2.0, 2.0)))
    prediction = model.predict(phantom.labels, phantom.image)
    peaks = PointSet(prediction.landmarks_lps.names, prediction.peak_positions_lps, "LPS")
    errors = landmark_errors(peaks, phantom.landmarks)
    head_to_foot = np.argsort(phantom.landmarks.positions[:, 2])
    extremes = np.concatenate([head_to_foot[:3], head_to_foot[-3:]])  # the ones a short grid clips
    assert np.all(errors[extremes] < 6.0)


def test_a_segmentation_without_sternum_is_refused(model, cases):
    phantom = cases[5004]
    cartilage_only = Volume(np.where(phantom.labels.array == 4, 4, 0).astype(np.uint8), phantom.labels.geometry)
    with pytest.raises(EmptyMaskError, match="nothing to place landmarks on"):
        model.predict(cartilage_only, phantom.image)


def test_progress_is_reported_in_order_and_cancel_stops(model, cases):
    from SternumLandmarksLib.landmark_prediction import LandmarkPredictionCancelled

    fractions = []
    model.predict(cases[5004].labels, cases[5004].image, progress=lambda fraction, text: fractions.append(fraction))
    assert fractions == sorted(fractions) and fractions[0] == 0.0 and fractions[-1] == 1.0
    with pytest.raises(LandmarkPredictionCancelled):
        model.predict(cases[5004].labels, cases[5004].image, cancel=lambda: True)


def test_place_landmarks_command_writes_markups_csv_and_record_and_keeps_existing_files(model, cases, tmp_path):
    from SternumSSMLib.case_files import write_volume
    from SternumSSMLib.cli import main
    from SternumSSMLib.landmark_files import read_landmarks_csv
    from SternumSSMLib.markups import read_markups
    from SternumSSMLib.mrml import close_scene, new_scene

    phantom = cases[5004]
    segmentation = write_volume(phantom.labels, tmp_path / "case7.nrrd")
    ct = write_volume(phantom.image, tmp_path / "case7_ct.nrrd")
    output = tmp_path / "landmarks"
    assert main(["place-landmarks", str(segmentation), "--ct", str(ct), "--output", str(output)]) == 0

    expected = model.predict(phantom.labels, phantom.image)
    written = read_landmarks_csv(output / "case7.csv")
    assert written.coordinate_system == "LPS" and written.names == expected.landmarks_lps.names
    np.testing.assert_allclose(written.positions, expected.points("LPS").positions, atol=1e-4)
    record = json.loads((output / "case7.json").read_text())
    assert record["flags"] == expected.flags() and record["coordinate_system"] == "LPS"
    assert set(record["confidence"]) == set(expected.landmarks_lps.names)
    scene = new_scene()
    try:
        node = read_markups(scene, output / "case7.mrk.json")
        assert node.GetNumberOfControlPoints() == len(expected.landmarks_lps.names)
    finally:
        close_scene(scene)

    before = {path.name: path.read_bytes() for path in output.iterdir()}
    assert main(["place-landmarks", str(segmentation), "--ct", str(ct), "--output", str(output)]) == 2
    assert main(["place-landmarks", str(segmentation), "--ct", str(ct), str(ct), "--output", str(tmp_path / "x")]) == 2
    assert main(["place-landmarks", str(tmp_path / "missing.nrrd"), "--output", str(tmp_path / "y")]) == 2
    assert {path.name: path.read_bytes() for path in output.iterdir()} == before
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
