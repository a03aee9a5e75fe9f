"""Put a prediction in front of the annotator: segments in 3D, a layout with 3D and slice views, and the
views centred on the sternum or on the structure a QA flag names.

Everything here is MRML, so it runs headless and in Slicer alike: Slicer's layout manager follows the
scene's layout node, slice views follow their slice nodes and the 3D view its camera node.
Positions are RAS (the scene's, world coordinates).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import slicer
from vtkmodules.util.numpy_support import vtk_to_numpy
from vtkmodules.vtkCommonMath import vtkMatrix4x4

from .qa import STERNUM_CLASSES

# Slicer's "Show 3D" default; enough to hide the voxel steps of a 1-2 mm label map.
SURFACE_SMOOTHING = 0.5
REVIEW_LAYOUT = slicer.vtkMRMLLayoutNode.SlicerLayoutFourUpView  # 3D view plus the three slice views
SEGMENTATIONS_LOGIC = slicer.vtkSlicerSegmentationsModuleLogic  # its static helpers need no scene


def show_segments_in_3d(
    segmentation_node: slicer.vtkMRMLSegmentationNode, smoothing: float = SURFACE_SMOOTHING
) -> None:
    """Make the smoothed closed-surface representation and show it in the 3D views."""
    segmentation = segmentation_node.GetSegmentation()
    segmentation.SetConversionParameter("Smoothing factor", str(smoothing))
    segmentation_node.RemoveClosedSurfaceRepresentation()  # rebuilt with the smoothing above
    segmentation_node.CreateClosedSurfaceRepresentation()
    display = segmentation_node.GetDisplayNode()
    display.SetPreferredDisplayRepresentationName3D("Closed surface")
    display.SetVisibility3D(True)


def structure_centre_ras(
    segmentation_node: slicer.vtkMRMLSegmentationNode, segment_names: Sequence[str] = STERNUM_CLASSES
) -> np.ndarray | None:
    """Centre of mass (RAS, mm, world) of the named segments' voxels together; None when they have none.

    Each segment is read on its own labelmap extent, so a click on a QA flag costs no copy of the whole CT grid.
    """
    segmentation = segmentation_node.GetSegmentation()
    total, count = np.zeros(3), 0
    for name in segment_names:
        segment_id = segmentation.GetSegmentIdBySegmentName(name)
        image = slicer.vtkOrientedImageData()
        if not segment_id or not SEGMENTATIONS_LOGIC.GetSegmentBinaryLabelmapRepresentation(
            segmentation_node, segment_id, image
        ):
            continue
        extent = np.array(image.GetExtent())
        size = extent[1::2] - extent[0::2] + 1
        if image.GetPointData().GetScalars() is None or np.any(size <= 0):
            continue
        # Segments share labelmap layers: this segment's voxels are those with its label value.
        label_value = segmentation.GetSegment(segment_id).GetLabelValue()
        kji = np.argwhere(vtk_to_numpy(image.GetPointData().GetScalars()).reshape(size[::-1]) == label_value)
        image_to_world = vtkMatrix4x4()
        image.GetImageToWorldMatrix(image_to_world)
        matrix = np.array([[image_to_world.GetElement(r, c) for c in range(4)] for r in range(4)])
        ijk = kji[:, ::-1] + extent[0::2]
        total += (ijk @ matrix[:3, :3].T + matrix[:3, 3]).sum(axis=0)
        count += len(ijk)
    return total / count if count else None


def set_review_layout(scene: slicer.vtkMRMLScene) -> None:
    """Switch to the layout with the 3D view and the three slice views (no-op in a scene without layout)."""
    layout_node = scene.GetFirstNodeByClass("vtkMRMLLayoutNode")
    if layout_node is not None:
        layout_node.SetViewArrangement(REVIEW_LAYOUT)


def show_in_slice_views(scene: slicer.vtkMRMLScene, volume_node: slicer.vtkMRMLScalarVolumeNode) -> None:
    """Make ``volume_node`` the background of every slice view. A node added to the scene in code, as the
    Worklist adds its CT, is not shown by itself: only Slicer's Add Data propagates a loaded volume."""
    for index in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode")):
        scene.GetNthNodeByClass(index, "vtkMRMLSliceCompositeNode").SetBackgroundVolumeID(volume_node.GetID())


def centre_views(scene: slicer.vtkMRMLScene, centre_ras: Sequence[float]) -> None:
    """Centre every slice view on ``centre_ras`` and turn every 3D camera to look at it from where it was."""
    r, a, s = (float(value) for value in centre_ras)
    slicer.vtkMRMLSliceNode.JumpAllSlices(scene, r, a, s, slicer.vtkMRMLSliceNode.CenteredJumpSlice)
    for index in range(scene.GetNumberOfNodesByClass("vtkMRMLCameraNode")):
        camera = scene.GetNthNodeByClass(index, "vtkMRMLCameraNode")
        shift = np.array([r, a, s]) - np.array(camera.GetFocalPoint())
        camera.SetPosition(*(np.array(camera.GetPosition()) + shift))
        camera.SetFocalPoint(r, a, s)
        camera.ResetClippingRange()  # as vtkMRMLCameraNode.h asks after SetPosition, or near parts may be clipped
