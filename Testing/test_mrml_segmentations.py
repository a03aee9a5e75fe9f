"""Segmentation nodes with standard names and label values, in the real MRML."""

from __future__ import annotations

import numpy as np
import pytest
import slicer
import slicerio
from SternumSSMLib.anatomy import label_scheme
from SternumSSMLib.geometry import Volume
from SternumSSMLib.segmentation_nodes import (
    labelmap_from_segmentation,
    read_segmentation,
    segmentation_from_labelmap,
    write_segmentation,
)
from SternumSSMLib.volume_nodes import volume_node_from_volume

SCHEME = label_scheme()


@pytest.fixture
def labels(oblique_geometry) -> Volume:
    """Manubrium (1), sternal body (2) and cartilage (4) blocks, no xiphoid (3), and
    background all around, so that a file cropped to the segments shows."""
    array = np.zeros(oblique_geometry.shape_kji, dtype=np.uint8)
    array[1:2, 1:2, 1:3] = 1
    array[1:3, 2:4, 2:5] = 2
    array[2, 1:4, 4:6] = 4
    return Volume(array=array, geometry=oblique_geometry)


def segments_by_name(segmentation_node) -> dict:
    segmentation = segmentation_node.GetSegmentation()
    return {
        segmentation.GetNthSegment(i).GetName(): segmentation.GetNthSegment(i)
        for i in range(segmentation.GetNumberOfSegments())
    }


def node_ids(scene) -> set[str]:
    return {scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())}


def test_import_gives_standard_names_colours_terminology_and_values(mrml_scene, labels):
    segments = segments_by_name(segmentation_from_labelmap(mrml_scene, labels))

    assert set(segments) == {"Manubrium", "Sternal_body", "Cartilage"}, "empty Xiphoid must be absent"
    for name, segment in segments.items():
        standard = SCHEME.by_name(name)
        assert segment.GetLabelValue() == standard.value
        np.testing.assert_allclose(segment.GetColor(), standard.color, atol=1e-6)
        assert segment.GetTerminology() == SCHEME.terminology(name)
    assert "SCT^52509009^Body of sternum" in segments["Sternal_body"].GetTerminology()


def test_imported_segments_hold_the_voxels_of_their_value(slicer_globals, labels):
    segmentation_node = segmentation_from_labelmap(slicer_globals, labels)
    reference_node = volume_node_from_volume(slicer_globals, labels, "reference")
    segmentation = segmentation_node.GetSegmentation()
    for name in ("Manubrium", "Sternal_body", "Cartilage"):
        segment_id = segmentation.GetSegmentIdBySegmentName(name)
        mask = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation_node, segment_id, reference_node)
        np.testing.assert_array_equal(mask > 0, labels.array == SCHEME.by_name(name).value)


def test_import_leaves_only_the_segmentation_in_the_scene(mrml_scene, labels):
    before = node_ids(mrml_scene)
    segmentation_node = segmentation_from_labelmap(mrml_scene, labels, name="Case 7")
    added = node_ids(mrml_scene) - before
    assert added == {segmentation_node.GetID(), segmentation_node.GetDisplayNode().GetID()}
    assert segmentation_node.GetName() == "Case 7"


def test_unknown_label_values_are_named_and_nothing_is_added(mrml_scene, labels):
    array = labels.array.copy()
    array[0, 0, 0] = 9
    array[3, 4, 6] = 7
    before = node_ids(mrml_scene)
    with pytest.raises(ValueError, match=r"Label values \[7, 9\] are not in the label scheme"):
        segmentation_from_labelmap(mrml_scene, Volume(array=array, geometry=labels.geometry))
    assert node_ids(mrml_scene) == before


def test_export_values_follow_names_after_reordering_and_recolouring(mrml_scene, labels):
    segmentation_node = segmentation_from_labelmap(mrml_scene, labels)
    segmentation = segmentation_node.GetSegmentation()
    cartilage_id = segmentation.GetSegmentIdBySegmentName("Cartilage")
    segmentation.SetSegmentIndex(cartilage_id, 0)
    for index in range(segmentation.GetNumberOfSegments()):
        segmentation.GetNthSegment(index).SetColor(0.1 * index, 0.5, 0.9)
    plain = mrml_scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
    slicer.vtkSlicerSegmentationsModuleLogic.ExportAllSegmentsToLabelmapNode(
        segmentation_node, plain, slicer.vtkSegmentation.EXTENT_REFERENCE_GEOMETRY
    )
    assert np.any(slicer.util.arrayFromVolume(plain)[labels.array == 4] != 4), "plain export numbers by order"

    exported = labelmap_from_segmentation(segmentation_node, labels.geometry)

    np.testing.assert_array_equal(exported.array, labels.array)
    assert exported.array.dtype == np.uint8
    assert exported.geometry.same_grid(labels.geometry, tolerance_mm=1e-6)


def test_export_gives_a_segment_created_from_scratch_its_standard_value(slicer_globals, labels):
    segmentation_node = segmentation_from_labelmap(slicer_globals, labels)
    reference_node = volume_node_from_volume(slicer_globals, labels, "reference")
    xiphoid = np.zeros_like(labels.array)
    xiphoid[2, 3, 1] = 1
    segment_id = segmentation_node.GetSegmentation().AddEmptySegment("", "Xiphoid")
    slicer.util.updateSegmentBinaryLabelmapFromArray(xiphoid, segmentation_node, segment_id, reference_node)

    exported = labelmap_from_segmentation(segmentation_node, labels.geometry)

    np.testing.assert_array_equal(exported.array, np.where(xiphoid > 0, 3, labels.array))


def test_export_leaves_no_nodes_behind(mrml_scene, labels):
    segmentation_node = segmentation_from_labelmap(mrml_scene, labels)
    before = node_ids(mrml_scene)
    labelmap_from_segmentation(segmentation_node, labels.geometry)
    assert node_ids(mrml_scene) == before


def test_unknown_segment_name_is_a_clear_error(mrml_scene, labels):
    segmentation_node = segmentation_from_labelmap(mrml_scene, labels)
    segments_by_name(segmentation_node)["Manubrium"].SetName("Sternum")
    with pytest.raises(ValueError, match=r"\['Sternum'\].*Manubrium, Sternal_body, Xiphoid, Cartilage"):
        labelmap_from_segmentation(segmentation_node, labels.geometry)


def test_all_background_gives_an_empty_segmentation_that_exports_zeros_but_is_not_written(mrml_scene, labels, tmp_path):
    background = Volume(array=np.zeros_like(labels.array), geometry=labels.geometry)
    segmentation_node = segmentation_from_labelmap(mrml_scene, background)
    assert segmentation_node.GetSegmentation().GetNumberOfSegments() == 0
    np.testing.assert_array_equal(labelmap_from_segmentation(segmentation_node, labels.geometry).array, 0)
    with pytest.raises(ValueError, match="no segments"):
        write_segmentation(segmentation_node, tmp_path / "empty.seg.nrrd")
    assert not (tmp_path / "empty.seg.nrrd").exists()


def test_seg_nrrd_carries_standard_values_for_mrml_and_slicerio(slicer_globals, labels, tmp_path):
    segmentation_node = segmentation_from_labelmap(slicer_globals, labels)
    reference_node = volume_node_from_volume(slicer_globals, labels, "reference")
    # A segment made in Slicer sits in its own layer with value 1 unless the writer normalises it.
    xiphoid = np.zeros_like(labels.array)
    xiphoid[2, 3, 1] = 1
    segment_id = segmentation_node.GetSegmentation().AddEmptySegment("", "Xiphoid")
    slicer.util.updateSegmentBinaryLabelmapFromArray(xiphoid, segmentation_node, segment_id, reference_node)
    segmentation_node.GetSegmentation().SetSegmentIndex(segment_id, 0)
    expected = np.where(xiphoid > 0, 3, labels.array)
    path = write_segmentation(segmentation_node, tmp_path / "case.seg.nrrd")

    read_back = read_segmentation(slicer_globals, path)
    assert read_back.GetName() == "case"
    np.testing.assert_array_equal(labelmap_from_segmentation(read_back, labels.geometry).array, expected)

    file = slicerio.read_segmentation(str(path))
    assert {s["name"]: s["labelValue"] for s in file["segments"]} == {c.name: c.value for c in SCHEME.classes}
    assert {s["layer"] for s in file["segments"]} == {0}
    assert {s["name"]: s["terminology"]["type"][1] for s in file["segments"]} == {
        c.name: c.type.code for c in SCHEME.classes
    }
    np.testing.assert_allclose(file["ijkToLPS"], labels.geometry.ijk_to_lps(), atol=1e-6)
    np.testing.assert_array_equal(file["voxels"].transpose(2, 1, 0), expected)  # slicerio indexes [i, j, k]


def test_writing_onto_an_existing_file_raises_and_keeps_it(mrml_scene, labels, tmp_path):
    path = write_segmentation(segmentation_from_labelmap(mrml_scene, labels), tmp_path / "case.seg.nrrd")
    original = path.read_bytes()
    other = segmentation_from_labelmap(
        mrml_scene, Volume(array=(labels.array > 0).astype(np.uint8), geometry=labels.geometry)
    )
    before = node_ids(mrml_scene)

    with pytest.raises(FileExistsError, match=r"case\.seg\.nrrd"):
        write_segmentation(other, path)

    assert path.read_bytes() == original
    assert [p.name for p in tmp_path.iterdir()] == ["case.seg.nrrd"]
    assert node_ids(mrml_scene) == before
    write_segmentation(other, path, overwrite=True)
    assert path.read_bytes() != original


def test_write_refuses_other_extensions(mrml_scene, labels, tmp_path):
    with pytest.raises(ValueError, match=r"\.seg\.nrrd"):
        write_segmentation(segmentation_from_labelmap(mrml_scene, labels), tmp_path / "case.nrrd")
    assert not (tmp_path / "case.nrrd").exists()


def test_read_missing_or_unreadable_segmentation_raises(mrml_scene, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"missing\.seg\.nrrd"):
        read_segmentation(mrml_scene, tmp_path / "missing.seg.nrrd")
    (tmp_path / "broken.seg.nrrd").write_text("not a segmentation")
    with pytest.raises(OSError, match=r"broken\.seg\.nrrd"):
        read_segmentation(mrml_scene, tmp_path / "broken.seg.nrrd")
