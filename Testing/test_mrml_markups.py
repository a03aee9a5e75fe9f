"""Fixed-count landmark point lists and .mrk.json files, in the real MRML."""

from __future__ import annotations

import json

import numpy as np
import pytest
import slicer
from SternumSSMLib.anatomy import default_protocol
from SternumSSMLib.geometry import LPS_RAS_FLIP, PointSet
from SternumSSMLib.markups import (
    create_landmarks_node,
    landmark_points,
    read_markups,
    set_landmark_positions,
    write_markups,
)

PROTOCOL = default_protocol()
UNPLACED = (3, 10, 33)
FIDUCIAL = slicer.vtkMRMLMarkupsFiducialNode


@pytest.fixture
def points_lps() -> PointSet:
    positions = np.random.default_rng(7).uniform(-150.0, 150.0, size=(len(PROTOCOL), 3))
    positions[list(UNPLACED)] = np.nan
    return PointSet(names=PROTOCOL.ids, positions=positions, coordinate_system="LPS")


def statuses(node) -> list[int]:
    return [node.GetNthControlPointPositionStatus(i) for i in range(node.GetNumberOfControlPoints())]


def test_new_node_has_one_unplaced_unlocked_point_per_landmark(mrml_scene):
    node = create_landmarks_node(mrml_scene, name="Case 1 landmarks")

    assert node.GetName() == "Case 1 landmarks"
    assert node.GetNumberOfControlPoints() == len(PROTOCOL) == 34
    assert [node.GetNthControlPointLabel(i) for i in range(34)] == list(PROTOCOL.ids)
    first = PROTOCOL.landmarks[0]
    assert node.GetNthControlPointDescription(0) == f"{first.name}: {first.description}"
    assert statuses(node) == [FIDUCIAL.PositionUndefined] * 34
    assert not any(node.GetNthControlPointLocked(i) for i in range(34))
    assert node.GetFixedNumberOfControlPoints()
    assert node.AddControlPoint(1.0, 2.0, 3.0, "extra") == -1
    assert node.GetNumberOfControlPoints() == 34
    assert not landmark_points(node).defined.any()


def test_positions_from_lps_are_ras_in_the_scene_and_nan_stays_unplaced(mrml_scene, points_lps):
    node = create_landmarks_node(mrml_scene)
    set_landmark_positions(node, points_lps)

    for index in range(len(PROTOCOL)):
        if index in UNPLACED:
            assert node.GetNthControlPointPositionStatus(index) == FIDUCIAL.PositionUndefined
        else:
            assert node.GetNthControlPointPositionStatus(index) == FIDUCIAL.PositionDefined
            np.testing.assert_allclose(
                node.GetNthControlPointPosition(index), LPS_RAS_FLIP @ points_lps.positions[index], atol=1e-9
            )
    np.testing.assert_allclose(landmark_points(node, "LPS").positions, points_lps.positions, atol=1e-9)
    np.testing.assert_allclose(landmark_points(node, "RAS").positions, points_lps.to("RAS").positions, atol=1e-9)
    assert landmark_points(node).coordinate_system == "LPS"


def test_positions_are_matched_by_id_not_order_and_ras_input_is_accepted(mrml_scene, points_lps):
    node = create_landmarks_node(mrml_scene)
    order = np.random.default_rng(3).permutation(len(PROTOCOL))
    shuffled_ras = PointSet(
        names=[points_lps.names[i] for i in order],
        positions=points_lps.to("RAS").positions[order],
        coordinate_system="RAS",
    )
    set_landmark_positions(node, shuffled_ras)
    np.testing.assert_allclose(landmark_points(node).positions, points_lps.positions, atol=1e-9)


def test_nan_row_unplaces_a_point_that_was_placed(mrml_scene, points_lps):
    node = create_landmarks_node(mrml_scene)
    set_landmark_positions(node, PointSet(PROTOCOL.ids, np.zeros((34, 3)), "LPS"))
    set_landmark_positions(node, points_lps)
    assert [i for i, status in enumerate(statuses(node)) if status != FIDUCIAL.PositionDefined] == list(UNPLACED)


def test_names_must_be_the_protocol_ids(mrml_scene, points_lps):
    node = create_landmarks_node(mrml_scene)
    renamed = PointSet(names=("L99", *points_lps.names[1:]), positions=points_lps.positions, coordinate_system="LPS")
    with pytest.raises(ValueError, match=r"Missing: \['L01'\]; not in the node: \['L99'\]"):
        set_landmark_positions(node, renamed)
    with pytest.raises(ValueError, match="33 names for 34 landmarks"):
        set_landmark_positions(node, PointSet(points_lps.names[:-1], points_lps.positions[:-1], "LPS"))
    assert statuses(node) == [FIDUCIAL.PositionUndefined] * 34


def test_a_row_with_only_some_coordinates_is_refused(mrml_scene, points_lps):
    node = create_landmarks_node(mrml_scene)
    positions = points_lps.positions.copy()
    positions[5, 1] = np.nan
    with pytest.raises(ValueError, match=r"\['L06'\] have only some coordinates"):
        set_landmark_positions(node, PointSet(points_lps.names, positions, "LPS"))


def test_landmark_points_are_in_world_coordinates(mrml_scene, points_lps):
    node = create_landmarks_node(mrml_scene)
    set_landmark_positions(node, points_lps)
    transform = mrml_scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    shift_ras = np.array([10.0, -20.0, 5.0])
    matrix = np.eye(4)
    matrix[:3, 3] = shift_ras
    transform.SetMatrixTransformToParent(slicer.util.vtkMatrixFromArray(matrix))
    node.SetAndObserveTransformNodeID(transform.GetID())

    expected_ras = points_lps.to("RAS").positions + shift_ras
    np.testing.assert_allclose(landmark_points(node, "RAS").positions, expected_ras, atol=1e-9)


def test_mrk_json_is_written_in_lps_and_read_back_in_ras(mrml_scene, points_lps, tmp_path):
    node = create_landmarks_node(mrml_scene)
    set_landmark_positions(node, points_lps)
    path = write_markups(node, tmp_path / "case_001.mrk.json")

    markups = json.loads(path.read_text())["markups"][0]
    assert markups["coordinateSystem"] == "LPS"
    assert markups["fixedNumberOfControlPoints"] is True
    written = markups["controlPoints"]
    assert [point["label"] for point in written] == list(PROTOCOL.ids)
    for index, point in enumerate(written):
        if index in UNPLACED:
            assert point["positionStatus"] == "undefined"
        else:
            assert point["positionStatus"] == "defined"
            np.testing.assert_allclose(point["position"], points_lps.positions[index], atol=1e-6)

    read_back = read_markups(mrml_scene, path)
    assert read_back.GetName() == "case_001"
    assert read_back.IsA("vtkMRMLMarkupsFiducialNode") and read_back.GetFixedNumberOfControlPoints()
    assert statuses(read_back) == statuses(node)
    for index in set(range(34)) - set(UNPLACED):
        np.testing.assert_allclose(
            read_back.GetNthControlPointPosition(index), node.GetNthControlPointPosition(index), atol=1e-6
        )
    back = landmark_points(read_back)
    assert back.names == PROTOCOL.ids
    np.testing.assert_allclose(back.positions, points_lps.positions, atol=1e-6)


def test_writing_onto_an_existing_file_raises_and_keeps_it(mrml_scene, points_lps, tmp_path):
    node = create_landmarks_node(mrml_scene)
    path = write_markups(node, tmp_path / "case.mrk.json")
    original = path.read_bytes()
    set_landmark_positions(node, points_lps)

    with pytest.raises(FileExistsError, match=r"case\.mrk\.json"):
        write_markups(node, path)

    assert path.read_bytes() == original
    assert [p.name for p in tmp_path.iterdir()] == ["case.mrk.json"]
    write_markups(node, path, overwrite=True)
    assert path.read_bytes() != original


def test_write_refuses_transformed_nodes_and_other_extensions(mrml_scene, tmp_path):
    node = create_landmarks_node(mrml_scene)
    with pytest.raises(ValueError, match=r"\.mrk\.json"):
        write_markups(node, tmp_path / "case.json")
    node.SetAndObserveTransformNodeID(mrml_scene.AddNewNodeByClass("vtkMRMLLinearTransformNode").GetID())
    with pytest.raises(ValueError, match="harden"):
        write_markups(node, tmp_path / "case.mrk.json")
    assert list(tmp_path.iterdir()) == []


def test_read_missing_or_unreadable_markups_raises(mrml_scene, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"missing\.mrk\.json"):
        read_markups(mrml_scene, tmp_path / "missing.mrk.json")
    (tmp_path / "broken.mrk.json").write_text("{}")
    with pytest.raises(OSError, match=r"broken\.mrk\.json"):
        read_markups(mrml_scene, tmp_path / "broken.mrk.json")
