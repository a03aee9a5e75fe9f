"""The SternumSSM panel's Qt-free workflow and view helpers on real MRML: why Segment is (not) possible, the
inputs a run captures (ROI in LPS), no run folder left by a failed start, segments in 3D, views centred."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from slicer_harness import add_view_nodes
from SternumSSMLib.geometry import convert_points, orientation_direction, rotation_matrix
from SternumSSMLib.phantom import PhantomParameters, generate_phantom, with_orientation
from SternumSSMLib.prediction_nodes import show_prediction
from SternumSSMLib.segmentation_inference import BUNDLED_MODEL
from SternumSSMLib.segmentation_panel import RunInputs, SegmentationPanel, present_prediction
from SternumSSMLib.segmentation_worker import SegmentationWorker
from SternumSSMLib.views import (
    REVIEW_LAYOUT,
    centre_views,
    set_review_layout,
    show_segments_in_3d,
    structure_centre_ras,
)
from SternumSSMLib.volume_nodes import volume_node_from_volume


@pytest.fixture(scope="module")
def phantom():
    """Mirrored, rotated and anisotropic, so a centre in the wrong coordinate system or axis order shows."""
    direction = rotation_matrix([1.0, 0.3, 0.2], 15.0) @ orientation_direction("ARS")
    return generate_phantom(with_orientation(PhantomParameters(spacing=(4.0, 3.5, 4.5)), direction))


def parameters(volume_node=None, **changes) -> SimpleNamespace:
    """The fields of SternumSSMParameterNode at their defaults."""
    fields = dict(
        inputVolume=volume_node, modelFolder=Path(), preset="fast", device="auto", roi=None,
        findSternumFirst=True, rerunMode="update", showUncertainty=False,
    )  # fmt: skip
    return SimpleNamespace(**(fields | changes))


def test_segment_readiness_says_what_is_missing(mrml_scene, phantom, tmp_path):
    panel = SegmentationPanel(mrml_scene, tmp_path)
    assert panel.readiness(parameters()) == (False, "Choose the CT volume to segment.")
    ct = volume_node_from_volume(mrml_scene, phantom.image, "CT")
    can, why = panel.readiness(parameters(ct, modelFolder=tmp_path))
    assert not can and "no dataset.json" in why and str(tmp_path) in why
    assert panel.readiness(parameters(ct)) == (True, "Ready to segment CT.")
    state = panel.state(parameters(ct))
    assert state.can_segment and not state.can_cancel and state.status == "Ready to segment CT."


def test_run_inputs_capture_the_roi_in_lps(mrml_scene, phantom):
    ct = volume_node_from_volume(mrml_scene, phantom.image, "CT")
    roi = mrml_scene.AddNewNodeByClass("vtkMRMLMarkupsROINode")
    roi.SetCenter(10.0, -20.0, 30.0)  # RAS
    roi.SetSize(40.0, 50.0, 60.0)
    inputs = RunInputs.capture(parameters(ct, roi=roi, preset="accurate", showUncertainty=True))
    # RAS box [-10, 30] x [-45, 5] x [0, 60] is LPS [-30, 10] x [-5, 45] x [0, 60].
    np.testing.assert_allclose(inputs.roi_lps, [-30.0, -5.0, 0.0, 10.0, 45.0, 60.0])
    assert inputs.model_folder == BUNDLED_MODEL and inputs.preset == "accurate" and inputs.with_uncertainty
    assert inputs.volume_node is ct and inputs.auto_roi
    assert not RunInputs.capture(parameters(ct, findSternumFirst=False)).auto_roi
    with pytest.raises(ValueError, match="Choose the CT"):
        RunInputs.capture(parameters())


def test_a_start_that_fails_leaves_no_run_folder(mrml_scene, phantom, tmp_path):
    ct = volume_node_from_volume(mrml_scene, phantom.image, "CT")

    def no_python(model_folder, preset, device):
        return SegmentationWorker(model_folder, preset, device, python=str(tmp_path / "no-python"))

    panel = SegmentationPanel(mrml_scene, tmp_path, start_worker=no_python)
    with pytest.raises(FileNotFoundError):
        panel.start(RunInputs.capture(parameters(ct)))
    assert list(tmp_path.iterdir()) == [] and not panel.running


def test_segments_show_as_smoothed_surfaces_in_the_review_layout(mrml_scene, phantom):
    add_view_nodes(mrml_scene)
    ct = volume_node_from_volume(mrml_scene, phantom.image, "CT")
    node = show_prediction(mrml_scene, phantom.labels, ct)
    show_segments_in_3d(node, smoothing=0.3)
    segmentation = node.GetSegmentation()
    assert segmentation.ContainsRepresentation("Closed surface")
    assert segmentation.GetConversionParameter("Smoothing factor") == "0.3"
    assert node.GetDisplayNode().GetPreferredDisplayRepresentationName3D() == "Closed surface"
    surface = node.GetClosedSurfaceInternalRepresentation(segmentation.GetSegmentIdBySegmentName("Sternal_body"))
    assert surface.GetNumberOfPoints() > 100
    set_review_layout(mrml_scene)
    assert mrml_scene.GetFirstNodeByClass("vtkMRMLLayoutNode").GetViewArrangement() == REVIEW_LAYOUT


def test_a_presented_prediction_is_shown_over_its_ct(mrml_scene, phantom):
    """A CT the Worklist adds in code is in no slice view until something puts it there; Add Data would."""
    add_view_nodes(mrml_scene)
    ct = volume_node_from_volume(mrml_scene, phantom.image, "CT")
    present_prediction(mrml_scene, show_prediction(mrml_scene, phantom.labels, ct))
    for name in ("Red", "Yellow", "Green"):
        assert mrml_scene.GetSingletonNode(name, "vtkMRMLSliceCompositeNode").GetBackgroundVolumeID() == ct.GetID()


def test_views_centre_on_the_named_structure(mrml_scene, phantom):
    add_view_nodes(mrml_scene)
    ct = volume_node_from_volume(mrml_scene, phantom.image, "CT")
    node = show_prediction(mrml_scene, phantom.labels, ct)
    labels = phantom.labels
    for names, values in ((("Manubrium", "Sternal_body", "Xiphoid"), (1, 2, 3)), (("Cartilage",), (4,))):
        expected_lps = labels.geometry.index_to_lps(np.argwhere(np.isin(labels.array, values))[:, ::-1]).mean(axis=0)
        centre = structure_centre_ras(node, names)
        np.testing.assert_allclose(centre, convert_points(expected_lps[None], "LPS", "RAS")[0], atol=1e-6)
        camera = mrml_scene.GetFirstNodeByClass("vtkMRMLCameraNode")
        direction = np.subtract(camera.GetFocalPoint(), camera.GetPosition())
        centre_views(mrml_scene, centre)
        np.testing.assert_allclose(camera.GetFocalPoint(), centre, atol=1e-9)
        np.testing.assert_allclose(np.subtract(camera.GetFocalPoint(), camera.GetPosition()), direction, atol=1e-9)
        for name in ("Red", "Yellow", "Green"):
            slice_to_ras = mrml_scene.GetSingletonNode(name, "vtkMRMLSliceNode").GetSliceToRAS()
            np.testing.assert_allclose([slice_to_ras.GetElement(i, 3) for i in range(3)], centre, atol=1e-6)
    node.GetSegmentation().RemoveSegment(node.GetSegmentation().GetSegmentIdBySegmentName("Cartilage"))
    assert structure_centre_ras(node, ["Cartilage"]) is None
