"""Phantom case files open in Slicer's own readers with the voxels, labels and landmarks they were made from."""

from __future__ import annotations

import numpy as np
import pytest
from SternumSSMLib.case_files import write_case
from SternumSSMLib.geometry import orientation_direction, rotation_matrix
from SternumSSMLib.markups import landmark_points, read_markups
from SternumSSMLib.phantom import PhantomParameters, generate_phantom, with_orientation
from SternumSSMLib.segmentation_nodes import labelmap_from_segmentation, read_segmentation
from SternumSSMLib.volume_nodes import load_volume_node, volume_from_node

COARSE = (3.0, 3.5, 4.0)
ORIENTATIONS = {
    "axis-aligned": np.eye(3),
    "oblique-mirrored": rotation_matrix([0.3, 1.0, 0.2], 17.0) @ orientation_direction("PIL"),
}


@pytest.fixture(scope="module", params=list(ORIENTATIONS), ids=list(ORIENTATIONS))
def phantom(request):
    return generate_phantom(with_orientation(PhantomParameters(seed=3), ORIENTATIONS[request.param], spacing=COARSE))


@pytest.mark.parametrize(("image_format", "tolerance_mm"), [("nrrd", 1e-6), ("nii.gz", 1e-3)])
def test_case_files_load_in_mrml(mrml_scene, phantom, tmp_path, assert_same_image, image_format, tolerance_mm):
    paths = write_case(phantom, tmp_path, "case_001", image_format=image_format)

    # NIfTI stores its geometry in single precision, hence the looser tolerance.
    assert_same_image(volume_from_node(load_volume_node(mrml_scene, paths["image"])), phantom.image, tolerance_mm)

    segmentation = read_segmentation(mrml_scene, paths["labels"])
    labels = labelmap_from_segmentation(segmentation, phantom.labels.geometry)
    np.testing.assert_array_equal(labels.array, phantom.labels.array)

    landmarks = landmark_points(read_markups(mrml_scene, paths["landmarks_mrk"]), "LPS")
    assert landmarks.names == phantom.landmarks.names
    np.testing.assert_array_equal(landmarks.defined, phantom.landmarks.defined)
    np.testing.assert_allclose(landmarks.positions, phantom.landmarks.positions, atol=1e-6)
