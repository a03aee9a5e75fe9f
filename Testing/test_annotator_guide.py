"""The annotator's guide: the logic behind its pictures, on phantom truth, without nnU-Net or the landmark network."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from annotator_guide import (
    PICTURES,
    choose_drag,
    correction_step,
    dataset_tree,
    drag_candidates,
    drag_step,
    export_step,
    focus_of_changes,
    landmark_lines,
    make_guide_pictures,
    outward_direction,
)
from SternumLandmarksLib.landmark_prediction import LandmarkPrediction
from SternumLandmarksLib.landmark_qa import LandmarkQAContext
from SternumSSMLib.anatomy import label_scheme
from SternumSSMLib.export import Prediction
from SternumSSMLib.geometry import PointSet, Volume
from SternumSSMLib.phantom import generate_phantom, random_parameters
from SternumSSMLib.provenance import segmentation_effort
from SternumSSMLib.qa import QAFlag

XIPHOID = label_scheme().by_name("Xiphoid").value
CARTILAGE = label_scheme().by_name("Cartilage").value


@pytest.fixture(scope="module")
def phantom():
    return generate_phantom(random_parameters(5004, spacing=(2.0,) * 3))


@pytest.fixture(scope="module")
def context(phantom):
    return LandmarkQAContext.from_labels(phantom.labels)


def flawed_prediction(phantom) -> Volume:
    """What the demo model does: misses the xiphoid; plus a few cartilage voxels painted into background."""
    array = phantom.labels.array.copy()
    array[array == XIPHOID] = 0
    background = np.argwhere(array == 0)[:25]
    array[tuple(background.T)] = CARTILAGE
    return Volume(array, phantom.labels.geometry)


def fake_prediction(points: PointSet, low: tuple[int, ...] = ()) -> LandmarkPrediction:
    confident = np.ones(len(points.names), bool)
    confident[list(low)] = False
    return LandmarkPrediction(
        landmarks_lps=points,
        confidence=np.where(confident, 0.9, 0.3),
        placed=points.defined.copy(),
        confident=confident,
        duplicates=(),
    )


def test_correction_counts_equal_a_direct_count(phantom) -> None:
    predicted = flawed_prediction(phantom)
    step = correction_step(predicted, phantom.labels)
    before, after = predicted.array, phantom.labels.array
    assert step.changed_total == int(np.count_nonzero(before != after))
    assert step.painted["Xiphoid"] == int(np.count_nonzero(after == XIPHOID)) > 0
    assert step.erased["Cartilage"] == 25 and step.painted["Cartilage"] == 0
    for segment_class in label_scheme().classes:
        was, now = before == segment_class.value, after == segment_class.value
        assert step.painted[segment_class.name] == int(np.sum(now & ~was))
        assert step.erased[segment_class.name] == int(np.sum(was & ~now))
    # Entered plus left is what the export records as the class's changed voxels.
    effort = segmentation_effort(predicted, phantom.labels)
    assert {name: step.painted[name] + step.erased[name] for name in step.painted} == effort["changed_voxels"]
    lines = step.lines(0.008)
    assert lines[0].startswith(f"The correction changed {step.changed_total} voxels")
    assert step.missed == ("Xiphoid",)
    assert f"  Xiphoid: {step.painted['Xiphoid']} painted, 0 erased (missed by the model, painted in full)" in lines
    assert "  Cartilage: 0 painted, 25 erased" in lines
    assert not any(line.strip().startswith("Manubrium") for line in lines)  # unchanged classes are left out
    # The slices pass through the class that changed most: the xiphoid.
    focus = focus_of_changes(step, phantom.labels, predicted)
    ijk = np.rint(phantom.labels.geometry.lps_to_index(focus.reshape(1, 3))[0]).astype(int)
    assert phantom.labels.array[ijk[2], ijk[1], ijk[0]] == XIPHOID


def test_correction_refuses_another_grid_and_reports_no_change(phantom) -> None:
    assert correction_step(phantom.labels, phantom.labels).lines(0.008) == ["The correction changed no voxels."]
    assert focus_of_changes(correction_step(phantom.labels, phantom.labels), phantom.labels, phantom.labels) is None
    shifted = Volume(phantom.labels.array, phantom.labels.geometry.__class__(
        origin_lps=phantom.labels.geometry.origin_lps + 1.0,
        spacing=phantom.labels.geometry.spacing,
        direction_lps=phantom.labels.geometry.direction_lps,
        size=phantom.labels.geometry.size,
    ))
    with pytest.raises(ValueError, match="one voxel grid"):
        correction_step(phantom.labels, shifted)


@pytest.mark.parametrize("landmark_id", ["L25", "L05", "L01", "L18"])
def test_drag_is_flagged_and_snapping_clears_it(phantom, context, landmark_id: str) -> None:
    step = drag_step(phantom.landmarks, context, landmark_id, distance_mm=8.0)
    assert np.linalg.norm(step.dragged_lps - step.original_lps) == pytest.approx(8.0)
    # Dragged outwards: off the bone, not into it.
    assert context.surface().signed_distance(step.dragged_lps)[0] > 5.0
    # An independent QA of the two point sets agrees with the step's own.
    while_dragged = context.evaluate(step.dragged_points)
    after_snap = context.evaluate(step.snapped_points)
    assert while_dragged.flag_codes(landmark_id) >= {"surface"}
    assert step.while_dragged.flagged and "outside the bone" in step.while_dragged.messages[0]
    assert not after_snap[landmark_id].flagged and not step.after_snap.flagged
    assert abs(after_snap[landmark_id].signed_distance_mm) < 0.5
    # Only the dragged landmark moved.
    row = phantom.landmarks.names.index(landmark_id)
    others = np.delete(np.arange(len(phantom.landmarks.names)), row)
    np.testing.assert_array_equal(step.snapped_points.positions[others], phantom.landmarks.positions[others])
    lines = step.lines()
    assert lines[0] == f"Live QA while {landmark_id} is dragged 8.0 mm off the rim:"
    assert lines[1].startswith("  [surface]") and lines[-1] == f"  {landmark_id}: no flags"


def test_outward_direction_points_away_from_the_sternum(phantom, context) -> None:
    right = phantom.landmarks.positions[phantom.landmarks.names.index("L09")]  # patient right: -x in LPS
    left = phantom.landmarks.positions[phantom.landmarks.names.index("L27")]
    assert outward_direction(context, right)[0] < -0.8
    assert outward_direction(context, left)[0] > 0.8
    assert np.linalg.norm(outward_direction(context, left)) == pytest.approx(1.0)


def test_drag_needs_a_placed_landmark(phantom, context) -> None:
    positions = phantom.landmarks.positions.copy()
    positions[24] = np.nan  # L25
    points = PointSet(names=phantom.landmarks.names, positions=positions, coordinate_system="LPS")
    with pytest.raises(ValueError, match="not placed"):
        drag_step(points, context, "L25")
    with pytest.raises(ValueError, match="No landmark 'X1'"):
        drag_step(points, context, "X1")



def test_drag_candidates_skip_unplaced_doubtful_and_flagged_landmarks(phantom, context) -> None:
    assert drag_candidates(phantom.landmarks, context)[0] == "L25"
    positions = phantom.landmarks.positions.copy()
    positions[24] = np.nan  # L25 not placed
    positions[25] = positions[26] + [0.5, 0.0, 0.0]  # L26 placed on top of L27: both flagged duplicates
    points = PointSet(names=phantom.landmarks.names, positions=positions, coordinate_system="LPS")
    confident = np.ones(34, bool)
    confident[8] = False  # L09
    candidates = drag_candidates(points, context, confident)
    assert not {"L25", "L26", "L27", "L09"} & set(candidates)
    assert len(candidates) == 30
    assert candidates[:3] == ["L11", "L23", "L07"]  # the preferred intercostal margins that are left, in order
    # Sideways drags first: the midline landmarks (drag along the sternum) come last.
    assert set(candidates[-2:]) == {"L01", "L18"}
    step = choose_drag(points, context, confident)
    assert step.landmark_id == candidates[0]
    assert step.while_dragged.flagged and not step.after_snap.flagged
    nowhere = PointSet(names=points.names, positions=np.full((34, 3), np.nan), coordinate_system="LPS")
    with pytest.raises(ValueError, match="No landmark is placed"):
        choose_drag(nowhere, context)


def test_landmark_caption_counts_and_truncates(phantom) -> None:
    lines = landmark_lines(fake_prediction(phantom.landmarks, low=(2, 4, 6, 8)), "34 of 34 placed", limit=3)
    assert lines[0].startswith("34 of 34 landmarks placed; 4 low confidence")
    assert lines[1:4] == ["  L03 low confidence (0.30); check its position.",
                          "  L05 low confidence (0.30); check its position.",
                          "  L07 low confidence (0.30); check its position."]
    assert lines[4] == "  ... and 1 more in the table"
    assert lines[-1] == "Landmark QA: 34 of 34 placed"


def test_export_step_records_the_correction(phantom, tmp_path: Path) -> None:
    # A small crop keeps the files small; the correction is the same on it.
    crop = (slice(40, 110), slice(None), slice(None))
    geometry = phantom.labels.geometry
    origin = geometry.index_to_lps(np.array([[0.0, 0.0, 40.0]]))[0]
    small = geometry.__class__(origin_lps=origin, spacing=geometry.spacing, direction_lps=geometry.direction_lps,
                               size=(geometry.size[0], geometry.size[1], 70))
    image = Volume(phantom.image.array[crop], small)
    labels = Volume(phantom.labels.array[crop], small)
    predicted = Volume(flawed_prediction(phantom).array[crop], small)
    landmarks = phantom.landmarks
    moved = landmarks.positions.copy()
    moved[0] += [0.0, 0.0, 3.0]
    final = PointSet(names=landmarks.names, positions=moved, coordinate_system="LPS")
    step = export_step(tmp_path / "Dataset900_Sternum", image, labels, final,
                       Prediction(labels=predicted, landmarks=landmarks))
    changed = int(np.count_nonzero(predicted.array != labels.array))
    assert f"  changed voxels: {changed}" in step.summary.splitlines()
    assert "landmark displacement: mean" in step.summary and "max 3.00 mm" in step.summary
    assert str(tmp_path) not in step.summary
    assert step.summary.startswith("Case guide_0001 version 1 (train) written to Dataset900_Sternum:")
    assert step.tree[0] == "Dataset900_Sternum/"
    assert "manifest.jsonl" in {line.strip() for line in step.tree}
    files = {line.strip() for line in step.tree if not line.endswith("/")}
    for entry in step.record["files"].values():
        assert Path(entry["path"]).name in files


def test_dataset_tree_lists_folders_first_and_hides_dot_files(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "x.csv").write_text("")
    (tmp_path / "a.json").write_text("")
    (tmp_path / ".lock").write_text("")
    assert dataset_tree(tmp_path) == [f"{tmp_path.name}/", "    b/", "        x.csv", "    a.json"]


def test_pictures_with_fake_models(phantom, tmp_path: Path) -> None:
    """All five pictures from stand-ins for the models: small PNGs with the expected names."""
    predicted = flawed_prediction(phantom)
    flags = [QAFlag("missing", "warning", "Xiphoid is empty.", segment="Xiphoid")]

    def segment(image):
        return SimpleNamespace(labels=predicted, flags=flags, record={"predicted_at": None})

    paths = make_guide_pictures(tmp_path, phantom=phantom, segment=segment,
                                place_landmarks=lambda labels: fake_prediction(phantom.landmarks, low=(3,)),
                                render_spacing_mm=2.0)
    assert [path.name for path in paths] == list(PICTURES)
    for path in paths:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert 5_000 < path.stat().st_size < 250_000
