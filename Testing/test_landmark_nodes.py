"""A landmark prediction in the scene: the fixed, named, unlocked point list; RAS in the scene and
LPS in files; unplaced and doubtful points; moved-point detection and correction effort on export."""

from __future__ import annotations

import json

import numpy as np
import pytest
import slicer
from SternumLandmarksLib.landmark_nodes import (
    OCCLUDED_OPACITY,
    landmark_confidence,
    landmark_displacements_mm,
    moved_landmarks,
    show_landmark_prediction,
    unedited_prediction,
)
from SternumLandmarksLib.landmark_prediction import LandmarkPrediction, find_duplicates
from SternumSSMLib.anatomy import default_protocol
from SternumSSMLib.dataset import read_manifest
from SternumSSMLib.export_nodes import export_from_scene
from SternumSSMLib.geometry import PointSet, orientation_direction, rotation_matrix
from SternumSSMLib.landmark_files import read_landmarks_csv
from SternumSSMLib.markups import landmark_points
from SternumSSMLib.phantom import PhantomParameters, generate_phantom, with_orientation
from SternumSSMLib.segmentation_nodes import segmentation_from_labelmap
from SternumSSMLib.volume_nodes import volume_node_from_volume


@pytest.fixture(scope="module")
def oblique_phantom():
    direction = rotation_matrix([0.3, 1.0, -0.5], 21.0) @ orientation_direction("AIR")
    return generate_phantom(with_orientation(PhantomParameters(seed=4), direction, spacing=(3.0, 2.5, 3.5)))


def prediction_from(points_lps: np.ndarray, confidence: np.ndarray) -> LandmarkPrediction:
    names = default_protocol().ids
    placed = confidence >= 0.05
    positions = points_lps.copy()
    positions[~placed] = np.nan
    return LandmarkPrediction(
        landmarks_lps=PointSet(names, positions, "LPS"),
        confidence=confidence,
        placed=placed,
        confident=confidence >= 0.5,
        duplicates=tuple(find_duplicates(positions, names, 3.0)),
        record={"model_folder": "demo"},
    )


def test_prediction_becomes_a_fixed_named_unlocked_point_list_in_ras(mrml_scene, oblique_phantom):
    confidence = np.full(34, 0.9)
    confidence[5], confidence[20] = 0.01, 0.3  # L06 hopeless, L21 doubtful
    node = show_landmark_prediction(mrml_scene, prediction_from(oblique_phantom.landmarks.positions, confidence))
    assert node.GetNumberOfControlPoints() == 34 and node.GetFixedNumberOfControlPoints()
    protocol = default_protocol()
    for index, landmark in enumerate(protocol.landmarks):
        assert node.GetNthControlPointLabel(index) == landmark.id
        assert node.GetNthControlPointDescription(index).startswith(f"{landmark.name}: {landmark.description}")
        assert not node.GetNthControlPointLocked(index)
    expected_ras = oblique_phantom.landmarks.positions * [-1, -1, 1]
    np.testing.assert_allclose(node.GetNthControlPointPositionWorld(0), expected_ras[0], atol=1e-6)
    assert node.GetNthControlPointPositionStatus(5) != node.PositionDefined
    # Doubtful points are drawn in the node's second colour ("unselected"), trusted ones are selected.
    assert not node.GetNthControlPointSelected(20) and node.GetNthControlPointSelected(0)
    assert "confidence 0.30" in node.GetNthControlPointDescription(20)
    assert landmark_confidence(node)["L21"] == pytest.approx(0.3)
    positions = landmark_points(node, "LPS").positions
    np.testing.assert_allclose(np.delete(positions, 5, axis=0),
                               np.delete(oblique_phantom.landmarks.positions, 5, axis=0), atol=1e-6)


def test_duplicates_are_marked_for_checking(mrml_scene, oblique_phantom):
    points = oblique_phantom.landmarks.positions.copy()
    points[10] = points[8] + [0.5, 0.0, 0.0]  # L11 predicted onto L09: the study's failure
    node = show_landmark_prediction(mrml_scene, prediction_from(points, np.full(34, 0.9)))
    assert not node.GetNthControlPointSelected(8) and not node.GetNthControlPointSelected(10)
    assert node.GetNthControlPointSelected(9)


def test_moved_points_are_detected_and_a_rerun_replaces_in_place(mrml_scene, oblique_phantom):
    prediction = prediction_from(oblique_phantom.landmarks.positions, np.full(34, 0.9))
    node = show_landmark_prediction(mrml_scene, prediction)
    assert moved_landmarks(node) == []
    position = np.array(node.GetNthControlPointPositionWorld(3))
    node.SetNthControlPointPositionWorld(3, *(position + np.array([3.0, 0.0, 4.0])))
    node.UnsetNthControlPointPosition(7)
    assert moved_landmarks(node) == ["L04", "L08"]
    assert landmark_displacements_mm(node)["L04"] == pytest.approx(5.0)
    hidden = unedited_prediction(node)
    assert hidden.GetHideFromEditors() and hidden.GetLocked()

    again = show_landmark_prediction(mrml_scene, prediction, existing=node)
    assert again is node and moved_landmarks(node) == []
    assert mrml_scene.GetNodesByClass("vtkMRMLMarkupsFiducialNode").GetNumberOfItems() == 2  # node + one hidden copy


def test_export_writes_the_positions_the_scene_shows_and_the_correction_effort(mrml_scene, oblique_phantom, tmp_path):
    volume = volume_node_from_volume(mrml_scene, oblique_phantom.image, "CT")
    segmentation = segmentation_from_labelmap(mrml_scene, oblique_phantom.labels, name="Corrected")
    node = show_landmark_prediction(mrml_scene, prediction_from(oblique_phantom.landmarks.positions, np.full(34, 0.9)))
    position = np.array(node.GetNthControlPointPositionWorld(0))
    node.SetNthControlPointPositionWorld(0, *(position + np.array([0.0, 6.0, 8.0])))

    result = export_from_scene(volume, segmentation, tmp_path / "ds", "case_0001", landmarks_node=node,
                               landmark_coordinate_system="RAS")
    shown_ras = landmark_points(node, "RAS").positions
    written = read_landmarks_csv(result.paths["landmarks_csv"])
    assert written.coordinate_system == "RAS"
    np.testing.assert_allclose(written.positions, shown_ras, atol=1e-6)
    markups = json.loads(result.paths["landmarks_mrk"].read_text())["markups"][0]
    assert markups["coordinateSystem"] == "LPS"
    np.testing.assert_allclose(markups["controlPoints"][0]["position"], shown_ras[0] * [-1, -1, 1], atol=1e-6)
    effort = read_manifest(tmp_path / "ds")[-1]["correction"]["landmarks"]
    assert effort["displacement_mm"]["L01"] == pytest.approx(10.0, abs=1e-6)
    assert effort["moved_over_2mm"] == 1
    assert "landmark displacement: mean" in result.summary()


def test_pseudo_landmarks_go_into_the_same_case_marked_pseudo(mrml_scene, oblique_phantom, tmp_path):
    from SternumLandmarksLib.landmark_training import read_dataset_cases
    from SternumSSMLib.dataset import dataset_problems

    volume = volume_node_from_volume(mrml_scene, oblique_phantom.image, "CT")
    segmentation = segmentation_from_labelmap(mrml_scene, oblique_phantom.labels, name="Corrected")
    node = show_landmark_prediction(mrml_scene, prediction_from(oblique_phantom.landmarks.positions, np.full(34, 0.9)))
    pseudo_points = PointSet(("P01-02_1", "P01-02_2"), oblique_phantom.landmarks.positions[:2] + 1.0, "LPS")
    from SternumLandmarksLib.landmark_observer import create_pseudo_landmarks_node

    pseudo = create_pseudo_landmarks_node(mrml_scene, pseudo_points)
    result = export_from_scene(volume, segmentation, tmp_path / "ds", "case_0001", landmarks_node=node,
                               pseudo_landmarks_node=pseudo)
    written = read_landmarks_csv(result.paths["pseudo_landmarks_csv"])
    assert result.paths["pseudo_landmarks_csv"].parent.name == "pseudo"
    assert written.names == pseudo_points.names
    np.testing.assert_allclose(written.positions, pseudo_points.positions, atol=1e-6)
    assert read_manifest(tmp_path / "ds")[-1]["pseudo_landmarks"] == {"points": 2, "placed": 2, "pseudo": True}
    assert dataset_problems(tmp_path / "ds") == []
    # Training reads only the anatomical landmarks of the case.
    assert [case.case_id for case in read_dataset_cases(tmp_path / "ds")] == ["case_0001"]


def test_landmarks_show_in_3d_with_their_labels_whatever_the_markups_defaults(mrml_scene, oblique_phantom):
    # A user whose markups defaults hide point labels and 3D display (Slicer keeps them as the scene's
    # default display node) still sees the predicted landmarks, labelled, in the 3D view.
    defaults = slicer.vtkMRMLMarkupsFiducialDisplayNode()
    defaults.SetPointLabelsVisibility(False)
    defaults.SetVisibility3D(False)
    defaults.SetPropertiesLabelVisibility(True)
    mrml_scene.AddDefaultNode(defaults)

    node = show_landmark_prediction(mrml_scene, prediction_from(oblique_phantom.landmarks.positions, np.full(34, 0.9)))
    display = node.GetDisplayNode()
    assert display.IsA("vtkMRMLMarkupsFiducialDisplayNode")
    assert display.GetVisibility() and display.GetVisibility2D() and display.GetVisibility3D()
    assert display.GetPointLabelsVisibility() and not display.GetPropertiesLabelVisibility()
    # Points behind the bone's 3D surface stay visible, faded.
    assert display.GetOccludedVisibility() and display.GetOccludedOpacity() == pytest.approx(OCCLUDED_OPACITY)
    # The hidden unedited copy stays hidden.
    assert not unedited_prediction(node).GetDisplayNode().GetVisibility()
