"""Volume nodes against SimpleITK on an oblique, mirrored grid, in the real MRML."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import SimpleITK as sitk
import slicer
from SternumSSMLib.geometry import LPS_RAS_FLIP, Volume
from SternumSSMLib.volume_nodes import load_volume_node, volume_from_node, volume_node_from_volume
from vtkmodules.vtkCommonTransforms import vtkThinPlateSplineTransform

TOLERANCE_MM = 1e-6


@pytest.fixture
def volume(oblique_geometry) -> Volume:
    array = np.arange(np.prod(oblique_geometry.shape_kji), dtype=np.int16).reshape(oblique_geometry.shape_kji)
    return Volume(array=array - 50, geometry=oblique_geometry)


def ijk_to_ras_of(node) -> np.ndarray:
    matrix = slicer.util.vtkMatrixFromArray(np.eye(4))
    node.GetIJKToRASMatrix(matrix)
    return slicer.util.arrayFromVTKMatrix(matrix)


def corner_and_fractional_indices(size) -> np.ndarray:
    corners = [[i, j, k] for i, j, k in itertools.product(*[(0, n - 1) for n in size])]
    return np.array([*corners, [0.5, 1.25, 2.75], [3.3, 0.1, 1.9]], dtype=float)


def test_the_test_grid_is_oblique_and_mirrored(oblique_geometry):
    direction = oblique_geometry.direction_lps
    assert np.linalg.det(direction) == pytest.approx(-1.0)
    assert np.all(np.abs(direction) < 0.99), "every axis must be off the patient axes"


def test_voxel_centres_from_mrml_match_simpleitk_after_the_lps_ras_flip(mrml_scene, volume):
    node = volume_node_from_volume(mrml_scene, volume, "ct")
    image = volume.to_sitk()
    ijk_to_ras = ijk_to_ras_of(node)
    for ijk in corner_and_fractional_indices(volume.geometry.size):
        ras = (ijk_to_ras @ [*ijk, 1.0])[:3]
        lps = np.array(image.TransformContinuousIndexToPhysicalPoint(ijk.tolist()))
        np.testing.assert_allclose(ras, LPS_RAS_FLIP @ lps, atol=TOLERANCE_MM)
        assert not np.allclose(ras, lps, atol=1.0), "RAS and LPS must differ for this grid"


def test_node_voxels_are_in_kji_order_like_simpleitk(mrml_scene, volume):
    node = volume_node_from_volume(mrml_scene, volume, "ct")
    image = volume.to_sitk()
    node_array = slicer.util.arrayFromVolume(node)
    for i, j, k in [(0, 0, 0), (6, 0, 0), (0, 4, 0), (0, 0, 3), (5, 3, 2)]:
        assert node_array[k, j, i] == image.GetPixel(i, j, k)


def test_round_trip_node_volume_node_keeps_voxels_and_geometry(mrml_scene, volume):
    node = volume_node_from_volume(mrml_scene, volume, "ct")
    back = volume_from_node(node)
    np.testing.assert_array_equal(back.array, volume.array)
    np.testing.assert_allclose(back.geometry.origin_lps, volume.geometry.origin_lps, atol=TOLERANCE_MM)
    np.testing.assert_allclose(back.geometry.spacing, volume.geometry.spacing, atol=TOLERANCE_MM)
    np.testing.assert_allclose(back.geometry.direction_lps, volume.geometry.direction_lps, atol=1e-9)
    again = volume_node_from_volume(mrml_scene, back, "ct again", labelmap=True)
    np.testing.assert_allclose(ijk_to_ras_of(again), ijk_to_ras_of(node), atol=TOLERANCE_MM)
    assert again.IsA("vtkMRMLLabelMapVolumeNode") and not node.IsA("vtkMRMLLabelMapVolumeNode")


def test_load_nrrd_written_by_simpleitk(mrml_scene, volume, tmp_path, assert_same_image):
    sitk.WriteImage(volume.to_sitk(), str(tmp_path / "case_001.nrrd"))
    node = load_volume_node(mrml_scene, tmp_path / "case_001.nrrd")
    assert node.GetName() == "case_001"
    # Slicer's reader makes mirrored grids right-handed by reversing k, so compare by position.
    assert_same_image(volume_from_node(node), volume)


def test_load_as_labelmap_gives_a_labelmap_node(mrml_scene, volume, tmp_path, assert_same_image):
    sitk.WriteImage(volume.to_sitk(), str(tmp_path / "labels.nrrd"))
    node = load_volume_node(mrml_scene, tmp_path / "labels.nrrd", labelmap=True)
    assert node.IsA("vtkMRMLLabelMapVolumeNode")
    assert_same_image(volume_from_node(node), volume)


def test_load_strips_compound_extension_from_the_name(mrml_scene, volume, tmp_path):
    sitk.WriteImage(volume.to_sitk(), str(tmp_path / "case.001.nii.gz"))
    assert load_volume_node(mrml_scene, tmp_path / "case.001.nii.gz").GetName() == "case.001"


def test_load_missing_or_unreadable_file_raises_and_adds_nothing(mrml_scene, tmp_path):
    volumes_before = mrml_scene.GetNumberOfNodesByClass("vtkMRMLVolumeNode")
    with pytest.raises(FileNotFoundError, match=r"missing\.nrrd"):
        load_volume_node(mrml_scene, tmp_path / "missing.nrrd")
    (tmp_path / "broken.nrrd").write_text("not an image")
    with pytest.raises(OSError, match=r"broken\.nrrd"):
        load_volume_node(mrml_scene, tmp_path / "broken.nrrd")
    assert mrml_scene.GetNumberOfNodesByClass("vtkMRMLVolumeNode") == volumes_before


def test_linear_parent_transform_gives_world_geometry(mrml_scene, volume):
    node = volume_node_from_volume(mrml_scene, volume, "ct")
    to_parent_ras = np.array([[0.0, -1.0, 0.0, 5.0], [1.0, 0.0, 0.0, -7.0], [0.0, 0.0, 1.0, 2.5], [0.0, 0.0, 0.0, 1.0]])
    transform = mrml_scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    transform.SetMatrixTransformToParent(slicer.util.vtkMatrixFromArray(to_parent_ras))
    node.SetAndObserveTransformNodeID(transform.GetID())

    world = volume_from_node(node)

    indices = corner_and_fractional_indices(volume.geometry.size)
    local_ras = volume.geometry.index_to_lps(indices) @ LPS_RAS_FLIP
    world_ras = local_ras @ to_parent_ras[:3, :3].T + to_parent_ras[:3, 3]
    np.testing.assert_allclose(world.geometry.index_to_lps(indices) @ LPS_RAS_FLIP, world_ras, atol=TOLERANCE_MM)


def test_non_linear_parent_transform_is_refused(mrml_scene, volume):
    node = volume_node_from_volume(mrml_scene, volume, "ct")
    transform = mrml_scene.AddNewNodeByClass("vtkMRMLTransformNode", "warp")
    transform.SetAndObserveTransformToParent(vtkThinPlateSplineTransform())
    node.SetAndObserveTransformNodeID(transform.GetID())
    with pytest.raises(ValueError, match="non-linear transform 'warp'"):
        volume_from_node(node)
