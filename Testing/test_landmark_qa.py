"""Live landmark QA, snapping to the bone surface and pseudo-landmarks, on phantoms and in the real MRML.

Every test runs on two 2 mm phantoms: one on an axis-aligned grid and one on an oblique,
mirrored (left-handed) grid with anisotropic spacing, so that any mix-up of LPS/RAS, axis
order or flips shows.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import pytest
import slicer
from SternumLandmarksLib.landmark_observer import (
    OWN_STRUCTURE,
    PSEUDO_ATTRIBUTE,
    LandmarkQAObserver,
    create_pseudo_landmarks_node,
    is_pseudo_landmarks_node,
)
from SternumLandmarksLib.landmark_qa import LandmarkQAContext, QASettings, snap_to_surface
from SternumLandmarksLib.pseudo_landmarks import pseudo_landmarks
from SternumSSMLib.anatomy import default_protocol, label_scheme
from SternumSSMLib.geometry import (
    ImageGeometry,
    PointSet,
    Volume,
    convert_points,
    orientation_direction,
    rotation_matrix,
)
from SternumSSMLib.markups import create_landmarks_node, landmark_points, set_landmark_positions
from SternumSSMLib.phantom import generate_phantom, random_parameters, with_orientation

PROTOCOL = default_protocol()
IDS = PROTOCOL.ids
MANUBRIUM = label_scheme().by_name("Manubrium").value
BODY = label_scheme().by_name("Sternal_body").value
# Landmarks at the widest points of the body's lateral margins (between costal notches), per side.
INTERCOSTAL_RIGHT = ("L07", "L09", "L11", "L13", "L15")
INTERCOSTAL_LEFT = ("L21", "L23", "L25", "L27", "L29")


@dataclass(frozen=True)
class Case:
    labels: Volume
    landmarks: PointSet  # LPS, exactly on the analytic outline
    context: LandmarkQAContext

    @property
    def voxel(self) -> float:
        return float(self.labels.geometry.spacing.max())

    @property
    def half_voxel(self) -> float:
        return 0.5 * float(self.labels.geometry.spacing.min())

    def moved(self, changes: dict[str, np.ndarray | None]) -> PointSet:
        """The ground truth with some landmarks moved to new LPS positions (None: unplaced)."""
        positions = self.landmarks.positions.copy()
        for landmark_id, position in changes.items():
            positions[IDS.index(landmark_id)] = np.nan if position is None else position
        return PointSet(self.landmarks.names, positions, "LPS")

    def gt(self, landmark_id: str) -> np.ndarray:
        return self.landmarks.positions[IDS.index(landmark_id)]


@pytest.fixture(scope="module", params=["axis_aligned", "oblique_mirrored"])
def case(request) -> Case:
    params = random_parameters(3, spacing=(2.0, 2.0, 2.0))
    if request.param == "oblique_mirrored":
        direction = rotation_matrix([1.0, 2.0, 3.0], 23.0) @ orientation_direction("PIL")
        assert np.linalg.det(direction) < 0
        params = with_orientation(params, direction, spacing=(1.8, 2.0, 2.4))
    phantom = generate_phantom(params)
    assert phantom.landmarks.defined.all()
    return Case(phantom.labels, phantom.landmarks, LandmarkQAContext.from_labels(phantom.labels))


def outward(case: Case, landmark_id: str, distance_mm: float) -> np.ndarray:
    """A lateral landmark moved away from the sternum along the patient's left-right axis (LPS x)."""
    sign = -1.0 if IDS.index(landmark_id) < 17 else 1.0  # L02-L17 are on the right, towards -x
    return case.gt(landmark_id) + np.array([sign * distance_mm, 0.0, 0.0])


def ras(point_lps: np.ndarray) -> np.ndarray:
    return convert_points(point_lps, "LPS", "RAS")


# --------------------------------------------------------------------------- QA values and flags


def test_ground_truth_is_on_the_surface_and_has_no_flags(case):
    report = case.context.evaluate(case.landmarks)

    assert report.flagged == ()
    assert report.summary == "34 of 34 landmarks placed; no flags"
    distances = np.array([landmark.distance_mm for landmark in report.landmarks])
    assert distances.max() < 0.75 * case.voxel  # the voxel surface is within a voxel of the analytic one
    assert max(landmark.outline_distance_mm for landmark in report.landmarks) < case.voxel
    ras_report = case.context.evaluate(case.landmarks.to("RAS"))
    np.testing.assert_allclose(
        [lm.signed_distance_mm for lm in ras_report.landmarks], [lm.signed_distance_mm for lm in report.landmarks]
    )


def test_landmarks_run_anticlockwise_along_the_outline(case):
    report = case.context.evaluate(case.landmarks)
    along = np.array([landmark.outline_position_mm for landmark in report.landmarks])
    steps = np.mod(np.diff(np.r_[along, along[0]]), case.context.outline.length_mm)
    # One lap around the outline, in protocol order.
    assert np.sum(steps) == pytest.approx(case.context.outline.length_mm)
    assert case.context.outline.length_mm > 300.0


def test_off_surface_and_wrong_structure_are_flagged(case):
    off = outward(case, "L23", 6.0)
    report = case.context.evaluate(case.moved({"L23": off}))

    assert report["L23"].distance_mm > 4.0
    assert report.flag_codes("L23") == {"surface"}
    assert "outside the bone" in report["L23"].messages[0]
    lenient = dataclasses.replace(case.context, settings=QASettings(surface_tolerance_mm=10.0))
    assert "surface" not in lenient.evaluate(case.moved({"L23": off})).flag_codes("L23")

    # On the bone, but in the middle of the body's anterior face instead of on its outline.
    middle = 0.5 * (case.gt("L10") + case.gt("L26"))
    anterior = case.context.outline.frame_lps[2]
    on_face = case.context.surface().nearest_surface_points(middle + 20.0 * anterior)[0]
    report = case.context.evaluate(case.moved({"L10": on_face}))
    assert report["L10"].distance_mm <= case.half_voxel
    assert report.flag_codes("L10") == {"outline"}

    # L06 belongs on the sternal body; put it on the manubrium above the waist (L05).
    on_manubrium = case.context.surface("manubrium").nearest_surface_points(case.gt("L05") + np.array([0.0, 0.0, 6.0]))[
        0
    ]
    report = case.context.evaluate(case.moved({"L06": on_manubrium}))
    assert "structure" in report.flag_codes("L06")
    assert any("belongs on the sternal body" in message for message in report["L06"].messages)


def test_duplicate_is_flagged_on_both_points(case):
    report = case.context.evaluate(case.moved({"L13": case.gt("L12") + np.array([0.0, 0.0, 1.0])}))

    assert "duplicate" in report.flag_codes("L12")
    assert "duplicate" in report.flag_codes("L13")
    assert "L13" in report["L12"].messages[0]
    assert {landmark.id for landmark in report.flagged} == {"L12", "L13"}


def test_swapped_neighbours_are_both_flagged(case):
    report = case.context.evaluate(case.moved({"L09": case.gt("L10"), "L10": case.gt("L09")}))

    assert {landmark.id for landmark in report.flagged} == {"L09", "L10"}
    assert report.flag_codes("L09") == report.flag_codes("L10") == {"order"}


def test_a_point_dragged_past_its_neighbour_is_the_only_one_flagged(case):
    between_11_and_12 = case.context.surface().nearest_surface_points(0.5 * (case.gt("L11") + case.gt("L12")))[0]
    report = case.context.evaluate(case.moved({"L09": between_11_and_12}))

    assert [landmark.id for landmark in report.flagged] == ["L09"]
    assert report.flag_codes("L09") == {"order"}
    assert report["L09"].messages == [
        "L09 lies between L11 and L12 along the outline; the protocol puts it between L08 and L10."
    ]
    assert "L09 (order)" in report.summary


def test_a_left_right_mix_up_is_flagged(case):
    mirrored = {f"L{n:02d}": case.gt(f"L{36 - n:02d}") for n in range(2, 35)}
    report = case.context.evaluate(case.moved(mirrored))
    assert len([lm for lm in report.flagged if "order" in report.flag_codes(lm.id)]) > 20


def test_unplaced_points_are_skipped(case):
    report = case.context.evaluate(case.moved({"L01": None, "L10": None, "L18": None}))
    assert report.placed_count == 31
    assert report.flagged == ()
    assert not report["L10"].placed and np.isnan(report["L10"].distance_mm) and report["L10"].flags == ()

    # The order check skips to the next placed neighbour: L09 and L11 are now neighbours.
    swapped = case.context.evaluate(case.moved({"L10": None, "L09": case.gt("L11"), "L11": case.gt("L09")}))
    assert {landmark.id for landmark in swapped.flagged} == {"L09", "L11"}

    nothing = case.context.evaluate(case.moved(dict.fromkeys(IDS)))
    assert nothing.summary == "0 of 34 landmarks placed; no flags"


def test_context_from_a_binary_mask_has_no_structure_checks(case):
    mask = np.isin(case.labels.array, (MANUBRIUM, BODY))
    context = LandmarkQAContext.from_mask(mask, case.labels.geometry)
    report = context.evaluate(case.landmarks)

    assert report.flagged == ()
    np.testing.assert_allclose(
        [landmark.signed_distance_mm for landmark in report.landmarks],
        [landmark.signed_distance_mm for landmark in case.context.evaluate(case.landmarks).landmarks],
    )
    assert np.isnan(report["L05"].structure_distance_mm)
    with pytest.raises(KeyError, match="manubrium"):
        context.surface("manubrium")


def test_bad_input_is_refused():
    geometry = ImageGeometry(origin_lps=[0, 0, 0], spacing=[2, 2, 2], direction_lps=np.eye(3), size=(6, 5, 4))
    with pytest.raises(ValueError, match="none of"):
        LandmarkQAContext.from_labels(Volume(np.zeros(geometry.shape_kji, np.uint8), geometry))
    with pytest.raises(ValueError, match="duplicate_distance_mm"):
        QASettings(duplicate_distance_mm=-1.0).validate()


# --------------------------------------------------------------------------- snapping


def test_snapped_points_lie_on_the_voxel_surface(case):
    rng = np.random.default_rng(5)
    surface = case.context.surface()
    for start in case.landmarks.positions + rng.normal(scale=3.0, size=case.landmarks.positions.shape):
        snapped = snap_to_surface(start, case.context, coordinate_system="LPS")
        assert abs(surface.signed_distance(snapped)[0]) <= case.half_voxel
        # The nearest surface point: no surface point (face midpoint) is much closer to the start.
        assert np.linalg.norm(snapped - start) <= surface.tree.query(start)[0] + case.half_voxel


def test_snapping_returns_to_the_analytic_outline(case):
    for landmark_id in INTERCOSTAL_RIGHT + INTERCOSTAL_LEFT:
        snapped = snap_to_surface(outward(case, landmark_id, 2.0), case.context, coordinate_system="LPS")
        assert np.linalg.norm(snapped - case.gt(landmark_id)) < case.voxel, landmark_id
    on_outline = case.context.surface().nearest_surface_points(case.landmarks.positions)
    assert np.linalg.norm(on_outline - case.landmarks.positions, axis=1).max() < case.voxel


def test_snapping_in_ras_matches_lps(case):
    start_lps = outward(case, "L25", 3.0)
    snapped_lps = snap_to_surface(start_lps, case.context, coordinate_system="LPS")
    snapped_ras = snap_to_surface(ras(start_lps), case.context, coordinate_system="RAS")
    np.testing.assert_allclose(snapped_ras, ras(snapped_lps), atol=1e-9)
    assert np.isnan(snap_to_surface(np.full(3, np.nan), case.context, coordinate_system="RAS")).all()


@pytest.mark.parametrize(("segment", "label"), [("manubrium", MANUBRIUM), ("body", BODY)])
def test_snapping_to_a_chosen_segment(case, segment, label):
    """L05, the manubrium's waist, sits next to the body: each segment pulls it onto its own surface."""
    snapped = snap_to_surface(case.gt("L05"), case.context, coordinate_system="LPS", segment=segment)
    assert abs(case.context.surface(segment).signed_distance(snapped)[0]) <= case.half_voxel
    geometry = case.labels.geometry
    corner = np.floor(geometry.lps_to_index(snapped)).astype(int)
    cell = case.labels.array[corner[2] : corner[2] + 2, corner[1] : corner[1] + 2, corner[0] : corner[0] + 2]
    assert label in cell  # a voxel of that segment touches the snapped point


# --------------------------------------------------------------------------- pseudo-landmarks


def test_pseudo_landmarks_are_named_on_the_surface_and_evenly_spaced(case):
    per_segment = 3
    pseudo = pseudo_landmarks(case.landmarks.to("RAS"), case.context, per_segment)

    assert pseudo.coordinate_system == "LPS"
    assert len(pseudo.names) == len(IDS) * per_segment
    assert pseudo.names[:4] == ("P01-02_1", "P01-02_2", "P01-02_3", "P02-03_1")
    assert pseudo.names[-1] == "P34-01_3"
    assert pseudo.descriptions[0] == "Pseudo-landmark 1 of 3 between L01 and L02"
    assert pseudo.defined.all()
    assert np.abs(case.context.surface().signed_distance(pseudo.positions)).max() <= case.half_voxel

    outline = case.context.outline
    along_landmarks, _ = outline.locate(case.landmarks.positions)
    along_pseudo, to_rim = outline.locate(pseudo.positions)
    assert to_rim.max() < 2.0 * case.voxel
    for n in range(len(IDS)):
        group = slice(n * per_segment, (n + 1) * per_segment)
        stations = np.r_[along_landmarks[n], along_pseudo[group], along_landmarks[(n + 1) % len(IDS)]]
        gaps = np.mod(np.diff(stations), outline.length_mm)
        assert np.abs(gaps - gaps.mean()).max() < case.voxel, (IDS[n], gaps)
        chords = np.linalg.norm(np.diff(pseudo.positions[group], axis=0), axis=1)
        assert np.abs(chords - chords.mean()).max() < case.voxel, (IDS[n], chords)


def test_pseudo_landmarks_are_deterministic_and_skip_unplaced_neighbours(case):
    again = pseudo_landmarks(case.landmarks, case.context, 2)
    np.testing.assert_array_equal(pseudo_landmarks(case.landmarks, case.context, 2).positions, again.positions)

    partial = pseudo_landmarks(case.moved({"L10": None}), case.context, 2)
    missing = {name for name, defined in zip(partial.names, partial.defined, strict=True) if not defined}
    assert missing == {"P09-10_1", "P09-10_2", "P10-11_1", "P10-11_2"}
    np.testing.assert_array_equal(partial.positions[partial.defined], again.positions[partial.defined])


# --------------------------------------------------------------------------- MRML: live QA and snapping on drop


@pytest.fixture
def landmarks_node(mrml_scene, case):
    node = create_landmarks_node(mrml_scene)
    set_landmark_positions(node, case.landmarks)
    return node


def test_observer_reports_the_new_distance_while_a_point_moves(case, landmarks_node):
    reports = []
    observer = LandmarkQAObserver(landmarks_node, case.context, reports.append)
    assert len(reports) == 1 and reports[-1].flagged == ()

    index = IDS.index("L23")
    landmarks_node.SetNthControlPointPositionWorld(index, *ras(outward(case, "L23", 6.0)))
    assert len(reports) == 2
    assert reports[-1]["L23"].distance_mm > 4.0
    assert reports[-1].flag_codes("L23") == {"surface"}
    assert observer.report is reports[-1]

    landmarks_node.SetNthControlPointPositionWorld(index, *ras(case.gt("L23")))
    assert reports[-1]["L23"].distance_mm < case.voxel and reports[-1].flagged == ()

    landmarks_node.UnsetNthControlPointPosition(index)
    assert reports[-1].placed_count == 33 and not reports[-1]["L23"].placed

    observer.cleanup()
    count = len(reports)
    landmarks_node.SetNthControlPointPositionWorld(0, 1.0, 2.0, 3.0)
    assert len(reports) == count


def test_drop_snaps_only_the_dropped_point(case, landmarks_node):
    reports = []
    observer = LandmarkQAObserver(landmarks_node, case.context, reports.append, snap_on_drop=True)
    other, dragged = IDS.index("L21"), IDS.index("L25")
    other_ras = ras(outward(case, "L21", 3.0))
    landmarks_node.SetNthControlPointPositionWorld(other, *other_ras)

    # What Slicer's markups widget does: the point under the mouse is active, it moves, then is dropped.
    landmarks_node.GetDisplayNode().SetActiveControlPoint(dragged)
    landmarks_node.SetNthControlPointPositionWorld(dragged, *ras(outward(case, "L25", 5.0)))
    assert "surface" in reports[-1].flag_codes("L25")
    landmarks_node.InvokeEvent(slicer.vtkMRMLMarkupsNode.PointEndInteractionEvent)

    positions = landmark_points(landmarks_node, "LPS").positions
    assert abs(case.context.surface().signed_distance(positions[dragged])[0]) <= case.half_voxel
    assert np.linalg.norm(positions[dragged] - case.gt("L25")) < 2.0 * case.voxel
    np.testing.assert_allclose(landmark_points(landmarks_node, "RAS").positions[other], other_ras, atol=1e-9)
    assert reports[-1]["L25"].flags == () and reports[-1]["L25"].distance_mm <= case.half_voxel
    observer.cleanup()


def test_drop_with_the_index_in_the_event_and_snapping_to_the_own_structure(case, landmarks_node):
    observer = LandmarkQAObserver(
        landmarks_node, case.context, lambda report: None, snap_on_drop=True, snap_segment=OWN_STRUCTURE
    )
    index = IDS.index("L06")  # on the sternal body, at the manubriosternal joint
    landmarks_node.SetNthControlPointPositionWorld(index, *ras(case.gt("L06") + np.array([-3.0, 0.0, 2.0])))
    landmarks_node.InvokeEvent(slicer.vtkMRMLMarkupsNode.PointEndInteractionEvent, index)

    position = landmark_points(landmarks_node, "LPS").positions[index]
    assert abs(case.context.surface("body").signed_distance(position)[0]) <= case.half_voxel
    observer.cleanup()


def test_locked_and_unplaced_points_are_not_snapped(case, landmarks_node):
    observer = LandmarkQAObserver(landmarks_node, case.context, lambda report: None, snap_on_drop=True)
    index = IDS.index("L25")
    away_ras = ras(outward(case, "L25", 3.0))
    landmarks_node.SetNthControlPointPositionWorld(index, *away_ras)
    landmarks_node.SetNthControlPointLocked(index, True)
    landmarks_node.InvokeEvent(slicer.vtkMRMLMarkupsNode.PointEndInteractionEvent, index)
    np.testing.assert_allclose(landmarks_node.GetNthControlPointPositionWorld(index), away_ras, atol=1e-9)

    landmarks_node.UnsetNthControlPointPosition(3)
    landmarks_node.InvokeEvent(slicer.vtkMRMLMarkupsNode.PointEndInteractionEvent, 3)
    assert landmarks_node.GetNthControlPointPositionStatus(3) == landmarks_node.PositionUndefined
    observer.cleanup()


def test_pseudo_landmarks_node(case, mrml_scene):
    pseudo = pseudo_landmarks(case.moved({"L10": None}), case.context, 2)
    node = create_pseudo_landmarks_node(mrml_scene, pseudo)

    assert is_pseudo_landmarks_node(node) and node.GetAttribute(PSEUDO_ATTRIBUTE) == "true"
    assert node.GetLocked() and node.GetFixedNumberOfControlPoints()
    assert node.GetNumberOfControlPoints() == len(pseudo.names) == 68
    assert node.GetNthControlPointLabel(0) == "P01-02_1"
    assert node.GetNthControlPointDescription(0) == "Pseudo-landmark 1 of 2 between L01 and L02"
    stored = landmark_points(node, "LPS")
    np.testing.assert_array_equal(stored.defined, pseudo.defined)
    np.testing.assert_allclose(stored.positions[pseudo.defined], pseudo.positions[pseudo.defined], atol=1e-9)
    assert not is_pseudo_landmarks_node(create_landmarks_node(mrml_scene))
