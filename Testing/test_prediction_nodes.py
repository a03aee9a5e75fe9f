"""A prediction becomes the segmentation node to correct: names, colours, values, geometry, re-runs;
its uncertainty becomes one overlay volume per CT."""

from __future__ import annotations

import numpy as np
import pytest
from slicer_harness import add_view_nodes
from SternumSSMLib.anatomy import label_scheme
from SternumSSMLib.geometry import Volume, orientation_direction, rotation_matrix
from SternumSSMLib.phantom import PhantomParameters, generate_phantom, with_orientation
from SternumSSMLib.prediction_nodes import (
    SOURCE_VOLUME_REFERENCE,
    UNCERTAINTY_WINDOW,
    UNEDITED_PREDICTION_ATTRIBUTE,
    prediction_for,
    prediction_record,
    set_uncertainty_visible,
    show_prediction,
    show_uncertainty,
    uncertainty_node,
)
from SternumSSMLib.segmentation_nodes import labelmap_from_segmentation
from SternumSSMLib.volume_nodes import volume_from_node, volume_node_from_volume

SCHEME = label_scheme()


@pytest.fixture(scope="module")
def oblique_flipped():
    direction = rotation_matrix([1.0, 0.3, 0.2], 15.0) @ orientation_direction("ARS")
    return generate_phantom(with_orientation(PhantomParameters(spacing=(3.0, 2.5, 3.5)), direction))


def standard_segments(node) -> dict[str, tuple[float, float, float]]:
    segmentation = node.GetSegmentation()
    segments = [segmentation.GetNthSegment(i) for i in range(segmentation.GetNumberOfSegments())]
    return {s.GetName(): tuple(round(c, 3) for c in s.GetColor()) for s in segments}


def test_prediction_node_has_standard_segments_on_the_ct_grid(mrml_scene, oblique_flipped):
    ct = volume_node_from_volume(mrml_scene, oblique_flipped.image, "CT")
    node = show_prediction(mrml_scene, oblique_flipped.labels, ct, record={"model_sha256": "abc"})
    assert standard_segments(node) == {c.name: tuple(round(v, 3) for v in c.color) for c in SCHEME.classes}
    segmentation = node.GetSegmentation()
    for name in SCHEME.names:
        segment = segmentation.GetSegment(segmentation.GetSegmentIdBySegmentName(name))
        assert segment.GetTerminology() == SCHEME.terminology(name)
    back = labelmap_from_segmentation(node, oblique_flipped.image.geometry)
    np.testing.assert_array_equal(back.array, oblique_flipped.labels.array)
    assert prediction_record(node) == {"model_sha256": "abc"}
    assert node.GetNodeReference(SOURCE_VOLUME_REFERENCE) is ct


def test_rerun_replace_and_update_never_duplicate(mrml_scene, oblique_flipped):
    ct = volume_node_from_volume(mrml_scene, oblique_flipped.image, "CT")
    first = show_prediction(mrml_scene, oblique_flipped.labels, ct)
    notes_id = first.GetSegmentation().AddEmptySegment("", "Reviewer notes")
    smaller = oblique_flipped.labels.array.copy()
    smaller[smaller == SCHEME.by_name("Xiphoid").value] = 0
    updated = show_prediction(
        mrml_scene, Volume(smaller, oblique_flipped.labels.geometry), ct, existing=first, mode="update"
    )
    assert updated is first
    names = sorted(standard_segments(updated))
    assert names == sorted(["Manubrium", "Sternal_body", "Cartilage", "Reviewer notes"])
    assert updated.GetSegmentation().GetSegment(notes_id) is not None
    updated.GetSegmentation().RemoveSegment(notes_id)  # export accepts standard names only
    np.testing.assert_array_equal(labelmap_from_segmentation(updated, oblique_flipped.image.geometry).array, smaller)

    replaced = show_prediction(mrml_scene, oblique_flipped.labels, ct, existing=updated, mode="replace")
    assert replaced is not first and not mrml_scene.IsNodePresent(first)
    assert sorted(standard_segments(replaced)) == sorted(SCHEME.names)
    unedited = mrml_scene.GetNodeByID(replaced.GetAttribute(UNEDITED_PREDICTION_ATTRIBUTE))
    np.testing.assert_array_equal(
        labelmap_from_segmentation(unedited, oblique_flipped.image.geometry).array, oblique_flipped.labels.array
    )
    # The result and its hidden unedited copy: nothing left over from the first two runs.
    assert mrml_scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == 2
    with pytest.raises(ValueError, match="update"):
        show_prediction(mrml_scene, oblique_flipped.labels, ct, existing=replaced, mode="merge")


def test_uncertainty_is_one_node_per_ct_on_its_grid(mrml_scene, oblique_geometry):
    ct_volume = Volume(np.zeros(oblique_geometry.shape_kji, np.int16), oblique_geometry)
    ct = volume_node_from_volume(mrml_scene, ct_volume, "CT")
    rng = np.random.default_rng(0)
    first = Volume(rng.uniform(0.0, 0.8, oblique_geometry.shape_kji).astype(np.float32), oblique_geometry)
    node = show_uncertainty(mrml_scene, first, ct)
    assert node.GetName() == "CT uncertainty" and uncertainty_node(ct) is node
    shown = volume_from_node(node)
    assert shown.geometry.same_grid(oblique_geometry)
    np.testing.assert_array_equal(shown.array, first.array)
    display = node.GetDisplayNode()
    assert (display.GetWindowLevelMin(), display.GetWindowLevelMax()) == pytest.approx(UNCERTAINTY_WINDOW)
    assert display.GetColorNodeID() == "vtkMRMLPETProceduralColorNodePET-Heat"  # present in headless scenes too

    second = Volume(np.full(oblique_geometry.shape_kji, 0.25, np.float32), oblique_geometry)
    assert show_uncertainty(mrml_scene, second, ct) is node
    np.testing.assert_array_equal(volume_from_node(node).array, second.array)
    volumes = range(mrml_scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode"))
    names = [mrml_scene.GetNthNodeByClass(i, "vtkMRMLScalarVolumeNode").GetName() for i in volumes]
    assert names == ["CT", "CT uncertainty"]


def test_prediction_for_finds_the_ct_s_result_not_its_hidden_copy(mrml_scene, oblique_flipped):
    ct = volume_node_from_volume(mrml_scene, oblique_flipped.image, "CT")
    other = volume_node_from_volume(mrml_scene, oblique_flipped.image, "other CT")
    assert prediction_for(mrml_scene, ct) is None
    node = show_prediction(mrml_scene, oblique_flipped.labels, ct)
    assert prediction_for(mrml_scene, ct) is node and prediction_for(mrml_scene, other) is None


def test_uncertainty_overlay_toggles_in_every_slice_view(mrml_scene, oblique_geometry):
    add_view_nodes(mrml_scene)
    ct = volume_node_from_volume(
        mrml_scene, Volume(np.zeros(oblique_geometry.shape_kji, np.int16), oblique_geometry), "CT"
    )
    set_uncertainty_visible(mrml_scene, ct, True)  # nothing to show yet: no error, nothing shown
    composites = [mrml_scene.GetNthNodeByClass(i, "vtkMRMLSliceCompositeNode") for i in range(3)]
    assert {c.GetForegroundVolumeID() for c in composites} == {None}
    uncertainty = Volume(np.full(oblique_geometry.shape_kji, 0.2, np.float32), oblique_geometry)
    node = show_uncertainty(mrml_scene, uncertainty, ct)
    set_uncertainty_visible(mrml_scene, ct, True)
    assert {(c.GetForegroundVolumeID(), c.GetForegroundOpacity()) for c in composites} == {(node.GetID(), 0.4)}
    set_uncertainty_visible(mrml_scene, ct, False)
    assert {c.GetForegroundVolumeID() for c in composites} == {None}
