"""The SternumLandmarks module's scene work, in the real MRML: inputs, re-runs, the QA table, exports.

The prediction is built directly from a 3 mm phantom's landmarks with chosen confidences,
so no trained model is needed; the worker process is tested in test_landmark_worker.py.
"""

from __future__ import annotations

import numpy as np
import pytest
from SternumLandmarksLib.landmark_prediction import LandmarkPrediction
from SternumLandmarksLib.landmark_qa import LandmarkQAContext, QASettings
from SternumLandmarksLib.landmark_session import (
    default_input_segmentation,
    export_landmarks,
    landmark_export_paths,
    landmark_file_stem,
    landmark_labels,
    landmark_rows,
    landmark_table,
    landmarks_node_for,
    pseudo_landmarks_node,
    replaced_points,
    show_landmarks_for_segmentation,
    update_pseudo_landmarks,
)
from SternumSSMLib.anatomy import default_protocol
from SternumSSMLib.geometry import PointSet
from SternumSSMLib.landmark_files import read_landmarks_csv
from SternumSSMLib.markups import create_landmarks_node, landmark_points, read_markups
from SternumSSMLib.phantom import PhantomParameters, generate_phantom
from SternumSSMLib.prediction_nodes import show_prediction
from SternumSSMLib.scene_contract import LANDMARK_RECORD_ATTRIBUTE, SOURCE_SEGMENTATION_REFERENCE
from SternumSSMLib.segmentation_nodes import segmentation_from_labelmap
from SternumSSMLib.volume_nodes import volume_node_from_volume

IDS = default_protocol().ids
LOW, UNPLACED = IDS.index("L05"), IDS.index("L20")


@pytest.fixture(scope="module")
def phantom():
    return generate_phantom(PhantomParameters(spacing=(3.0, 3.0, 3.0)))


@pytest.fixture(scope="module")
def context(phantom):
    # On a 3 mm grid the voxel surface lies up to ~2.2 mm from the analytic outline the landmarks sit on.
    return LandmarkQAContext.from_labels(phantom.labels, settings=QASettings(surface_tolerance_mm=3.0))


def make_prediction(phantom) -> LandmarkPrediction:
    """The phantom's landmarks as a model would give them: L05 placed with low confidence, L20 not placed."""
    confidence = np.full(len(IDS), 0.9)
    confidence[LOW], confidence[UNPLACED] = 0.3, 0.02
    positions = phantom.landmarks.positions.copy()
    positions[UNPLACED] = np.nan
    return LandmarkPrediction(
        landmarks_lps=PointSet(IDS, positions, "LPS"),
        confidence=confidence,
        placed=confidence >= 0.05,
        confident=confidence >= 0.5,
        duplicates=(),
        record={},
    )


@pytest.fixture
def case(mrml_scene, phantom):
    ct = volume_node_from_volume(mrml_scene, phantom.image, "CT")
    segmentation = show_prediction(mrml_scene, phantom.labels, ct, record={"model_sha256": "abc"})
    return ct, segmentation


def move(node, landmark_id: str, offset_lps) -> None:
    index = IDS.index(landmark_id)
    position_ras = np.array(node.GetNthControlPointPositionWorld(index))
    node.SetNthControlPointPositionWorld(index, *(position_ras + np.array(offset_lps) * [-1.0, -1.0, 1.0]))


# --------------------------------------------------------------------------- inputs


def test_default_input_is_the_newest_predicted_segmentation(mrml_scene, phantom):
    assert default_input_segmentation(mrml_scene) is None
    plain = segmentation_from_labelmap(mrml_scene, phantom.labels, name="by hand")
    assert default_input_segmentation(mrml_scene) is plain

    ct = volume_node_from_volume(mrml_scene, phantom.image, "CT")
    first = show_prediction(mrml_scene, phantom.labels, ct, record={})
    second_ct = volume_node_from_volume(mrml_scene, phantom.image, "CT 2")
    newest = show_prediction(mrml_scene, phantom.labels, second_ct, record={})
    assert first is not newest
    # Four visible or hidden nodes besides `plain`: two predictions and their hidden unedited copies.
    assert mrml_scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == 5
    assert default_input_segmentation(mrml_scene) is newest

    mrml_scene.RemoveNode(newest)
    assert default_input_segmentation(mrml_scene) is first


def test_labels_come_from_the_segmentation_on_its_own_ct(case, phantom, mrml_scene):
    ct, segmentation = case
    labels = landmark_labels(segmentation, None)  # the CT the prediction was made on
    assert labels.geometry.same_grid(phantom.image.geometry)
    np.testing.assert_array_equal(labels.array, phantom.labels.array)
    assert landmark_labels(segmentation, ct).geometry.same_grid(phantom.image.geometry)

    plain = segmentation_from_labelmap(mrml_scene, phantom.labels, name="by hand")
    with pytest.raises(ValueError, match="Choose the CT"):
        landmark_labels(plain, None)
    with pytest.raises(ValueError, match="segmentation"):
        landmark_labels(None, ct)


# --------------------------------------------------------------------------- landmarks node and re-runs


def test_prediction_becomes_the_segmentations_landmarks_node(case, phantom, mrml_scene):
    _, segmentation = case
    assert landmarks_node_for(segmentation) is None and replaced_points(segmentation) == []

    node = show_landmarks_for_segmentation(make_prediction(phantom), segmentation, confident_above=0.5)
    assert node.GetNumberOfControlPoints() == 34 and node.GetFixedNumberOfControlPoints()
    assert node.GetNodeReference(SOURCE_SEGMENTATION_REFERENCE) is segmentation
    assert landmarks_node_for(segmentation) is node
    assert node.GetName() == f"{segmentation.GetName()} landmarks"
    assert node.GetNthControlPointPositionStatus(UNPLACED) != node.PositionDefined
    assert not any(node.GetNthControlPointLocked(i) for i in range(34))
    assert '"confident_above": 0.5' in node.GetAttribute(LANDMARK_RECORD_ATTRIBUTE)
    assert replaced_points(segmentation) == []

    move(node, "L10", [0.0, 0.0, 4.0])
    assert replaced_points(segmentation) == ["L10"]
    fiducials = mrml_scene.GetNumberOfNodesByClass("vtkMRMLMarkupsFiducialNode")

    again = show_landmarks_for_segmentation(make_prediction(phantom), segmentation, confident_above=0.5)
    assert again is node
    assert mrml_scene.GetNumberOfNodesByClass("vtkMRMLMarkupsFiducialNode") == fiducials
    np.testing.assert_allclose(landmark_points(node, "LPS").positions[IDS.index("L10")], phantom.landmarks.positions[9])
    assert replaced_points(segmentation) == []


# --------------------------------------------------------------------------- the table


def test_table_shows_confidence_distance_and_qa_state(case, phantom, context):
    _, segmentation = case
    node = show_landmarks_for_segmentation(make_prediction(phantom), segmentation, confident_above=0.5)
    rows = landmark_table(node, context.evaluate(landmark_points(node)))

    assert [row.landmark_id for row in rows] == list(IDS)
    assert rows[0].cells() == ("L01", "0.90", f"{rows[0].distance_mm:.1f}", "ok")
    assert 0.0 <= rows[0].distance_mm < 3.0 and not rows[0].needs_check
    assert rows[0].description.startswith(default_protocol().landmarks[0].name)
    assert rows[LOW].state == "low confidence" and rows[LOW].needs_check
    assert "0.30 is below 0.50" in rows[LOW].details
    assert rows[UNPLACED].cells() == ("L20", "0.02", "", "not placed") and rows[UNPLACED].needs_check
    assert sum(row.needs_check for row in rows) == 2

    # The user drags L10 15 mm anterior, off the bone, and checks L05 (moves it 0.5 mm): the QA follows.
    move(node, "L10", [0.0, -15.0, 0.0])
    move(node, "L05", [0.0, 0.0, 0.5])
    rows = landmark_table(node, context.evaluate(landmark_points(node)))
    l10 = rows[IDS.index("L10")]
    assert l10.state.startswith("moved, surface") and l10.needs_check and l10.distance_mm > 3.0
    assert "outside the bone" in l10.details
    assert rows[LOW].state == "moved" and not rows[LOW].needs_check


def test_table_without_prediction_or_qa(mrml_scene):
    node = create_landmarks_node(mrml_scene)
    rows = landmark_table(node)
    assert {row.cells() for row in rows} == {(i, "", "", "not placed") for i in IDS}

    points = PointSet(("L01", "L02"), [[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]], "RAS")
    rows = landmark_rows(points, {"L01": 0.49, "L02": 0.5}, confident_above=0.5)
    assert [row.state for row in rows] == ["low confidence", "ok"]


# --------------------------------------------------------------------------- pseudo-landmarks


def test_pseudo_landmarks_replace_the_previous_set(case, phantom, context, mrml_scene):
    _, segmentation = case
    node = show_landmarks_for_segmentation(make_prediction(phantom), segmentation)
    first = update_pseudo_landmarks(node, context, per_segment=2)
    assert pseudo_landmarks_node(node) is first and first.GetNumberOfControlPoints() == 68
    assert first.GetNthControlPointLabel(0) == "P01-02_1"
    # L20 is unplaced: the pairs L19-L20 and L20-L21 have no pseudo-landmarks.
    assert int(landmark_points(first).defined.sum()) == 64

    second = update_pseudo_landmarks(node, context, per_segment=3)
    assert pseudo_landmarks_node(node) is second and second.GetNumberOfControlPoints() == 102
    assert not mrml_scene.IsNodePresent(first)
    assert landmarks_node_for(segmentation) is node  # the pseudo node is never taken for the landmarks


# --------------------------------------------------------------------------- landmarks-only export


def test_export_landmarks_in_the_chosen_coordinate_system(case, phantom, context, mrml_scene, tmp_path):
    _, segmentation = case
    node = show_landmarks_for_segmentation(make_prediction(phantom), segmentation)
    written = export_landmarks(node, tmp_path, "case_007", coordinate_system="RAS")
    assert written == [tmp_path / "case_007.csv", tmp_path / "case_007.mrk.json"]

    csv_text = (tmp_path / "case_007.csv").read_text()
    assert csv_text.startswith("# coordinate_system = RAS\nname,X,Y,Z\nL01,")
    assert "\nL20,,,\n" in csv_text
    back = read_landmarks_csv(tmp_path / "case_007.csv")
    assert back.coordinate_system == "RAS" and back.names == IDS
    np.testing.assert_allclose(back.positions, landmark_points(node, "RAS").positions, atol=1e-5)
    markups = read_markups(mrml_scene, tmp_path / "case_007.mrk.json")
    np.testing.assert_allclose(landmark_points(markups).positions, landmark_points(node).positions, atol=1e-5)

    # Nothing is written, nothing half-replaced, when a target exists.
    pseudo = update_pseudo_landmarks(node, context, per_segment=1)
    before = csv_text
    with pytest.raises(FileExistsError, match=r"case_007\.csv, case_007\.mrk\.json"):
        export_landmarks(node, tmp_path, "case_007", pseudo_node=pseudo)
    assert not (tmp_path / "case_007_pseudo.csv").exists()
    assert (tmp_path / "case_007.csv").read_text() == before

    written = export_landmarks(node, tmp_path, "case_007", "LPS", pseudo_node=pseudo, overwrite=True)
    assert written == list(landmark_export_paths(tmp_path, "case_007", with_pseudo=True).values())
    assert read_landmarks_csv(tmp_path / "case_007.csv").coordinate_system == "LPS"
    pseudo_back = read_landmarks_csv(tmp_path / "case_007_pseudo.csv")
    assert pseudo_back.names[0] == "P01-02_1" and len(pseudo_back.names) == 34
    assert (tmp_path / "case_007_pseudo.mrk.json").is_file()
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(path.name for path in written)


def test_export_file_stem():
    assert landmark_file_stem("case_007", "CT sternum landmarks") == "case_007"
    assert landmark_file_stem("", "CT 1/sternum landmarks") == "CT_1_sternum_landmarks"
    assert landmark_file_stem("", "***") == "landmarks"
    with pytest.raises(ValueError, match="letters, digits"):
        landmark_file_stem("../x", "node")
