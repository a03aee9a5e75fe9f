"""Put a predicted label map into the scene as the segmentation the annotator will correct.

Two ways to re-run on a volume that already has a result, chosen by the user:
- ``replace``: the old segmentation node is removed and a new one made;
- ``update``: the standard segments of the existing node are swapped for the new
  prediction in place; segments the user added under other names stay untouched.
Neither ever duplicates a standard segment.

The prediction's uncertainty (1 - top class probability) goes into one scalar volume node per
CT, which the CT references and every re-run refills.
"""

from __future__ import annotations

import json
from typing import Literal

import slicer

from .anatomy import label_scheme
from .geometry import Volume
from .mrml import scratch_nodes
from .scene_contract import (
    SEGMENTATION_RECORD_ATTRIBUTE,
    SOURCE_VOLUME_REFERENCE,
    UNCERTAINTY_REFERENCE,
    UNEDITED_PREDICTION_ATTRIBUTE,
)
from .segmentation_nodes import segmentation_from_labelmap
from .volume_nodes import update_volume_node, volume_node_from_volume

RerunMode = Literal["replace", "update"]
# Uncertainty is 1 - top probability: 0 for a sure voxel, at most 0.8 with five classes. The window
# saturates at 0.5 (a two-way tie), and voxels below the threshold are transparent in the slice views.
UNCERTAINTY_WINDOW = (0.0, 0.5)
UNCERTAINTY_THRESHOLD = 0.05
UNCERTAINTY_OPACITY = 0.4  # the CT stays readable under the overlay
# Warm colour tables, best first; a scene without any keeps the volume's default grey.
UNCERTAINTY_COLOR_NODE_IDS = ("vtkMRMLPETProceduralColorNodePET-Heat", "vtkMRMLColorTableNodeIron")


def show_prediction(
    scene: slicer.vtkMRMLScene,
    labels: Volume,
    reference_volume_node: slicer.vtkMRMLScalarVolumeNode,
    record: dict | None = None,
    existing: slicer.vtkMRMLSegmentationNode | None = None,
    mode: RerunMode = "replace",
) -> slicer.vtkMRMLSegmentationNode:
    """The segmentation node holding ``labels`` (LPS geometry) with the CT as its reference geometry."""
    if mode not in ("replace", "update"):
        raise ValueError(f"Re-run mode {mode!r} must be 'replace' or 'update'.")
    name = f"{reference_volume_node.GetName()} sternum"
    if existing is not None and mode == "update":
        node = existing
        with scratch_nodes(scene):
            _swap_standard_segments(node, segmentation_from_labelmap(scene, labels, name=name))
    else:
        if existing is not None:
            unedited = scene.GetNodeByID(existing.GetAttribute(UNEDITED_PREDICTION_ATTRIBUTE) or "")
            for stale in (unedited, existing):
                if stale is not None:
                    scene.RemoveNode(stale)
        node = segmentation_from_labelmap(scene, labels, name=name)
    node.SetReferenceImageGeometryParameterFromVolumeNode(reference_volume_node)
    node.SetNodeReferenceID(SOURCE_VOLUME_REFERENCE, reference_volume_node.GetID())
    if record is not None:
        node.SetAttribute(SEGMENTATION_RECORD_ATTRIBUTE, json.dumps(record))
    _keep_unedited_copy(scene, node, labels, name)
    return node


def show_uncertainty(
    scene: slicer.vtkMRMLScene,
    uncertainty: Volume,
    reference_volume_node: slicer.vtkMRMLScalarVolumeNode,
    existing: slicer.vtkMRMLScalarVolumeNode | None = None,
) -> slicer.vtkMRMLScalarVolumeNode:
    """The CT's uncertainty volume node holding ``uncertainty`` (LPS geometry), refilled if it exists.

    ``existing`` defaults to the node the CT references; the CT references the result.
    """
    node = existing if existing is not None else uncertainty_node(reference_volume_node)
    if node is None:
        node = volume_node_from_volume(scene, uncertainty, f"{reference_volume_node.GetName()} uncertainty")
    else:
        update_volume_node(node, uncertainty)
        node.CreateDefaultDisplayNodes()
    reference_volume_node.SetNodeReferenceID(UNCERTAINTY_REFERENCE, node.GetID())
    display = node.GetDisplayNode()
    display.AutoWindowLevelOff()
    display.SetWindowLevelMinMax(*UNCERTAINTY_WINDOW)
    display.SetThreshold(UNCERTAINTY_THRESHOLD, 1.0)
    display.ApplyThresholdOn()
    color_id = next((i for i in UNCERTAINTY_COLOR_NODE_IDS if scene.GetNodeByID(i) is not None), None)
    if color_id is not None:
        display.SetAndObserveColorNodeID(color_id)
    return node


def prediction_for(
    scene: slicer.vtkMRMLScene, reference_volume_node: slicer.vtkMRMLScalarVolumeNode
) -> slicer.vtkMRMLSegmentationNode | None:
    """The predicted segmentation (not its hidden unedited copy) of this CT, if the scene has one."""
    for index in range(scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode")):
        node = scene.GetNthNodeByClass(index, "vtkMRMLSegmentationNode")
        if node.GetNodeReference(SOURCE_VOLUME_REFERENCE) is reference_volume_node:
            return node
    return None


def set_uncertainty_visible(
    scene: slicer.vtkMRMLScene, reference_volume_node: slicer.vtkMRMLScalarVolumeNode, visible: bool
) -> None:
    """Show the CT's uncertainty volume as every slice view's foreground, or take it out of them."""
    node = uncertainty_node(reference_volume_node)
    if node is None:
        return
    for index in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode")):
        composite = scene.GetNthNodeByClass(index, "vtkMRMLSliceCompositeNode")
        if visible:
            composite.SetForegroundVolumeID(node.GetID())
            composite.SetForegroundOpacity(UNCERTAINTY_OPACITY)
        elif composite.GetForegroundVolumeID() == node.GetID():
            composite.SetForegroundVolumeID(None)


def uncertainty_node(reference_volume_node: slicer.vtkMRMLScalarVolumeNode) -> slicer.vtkMRMLScalarVolumeNode | None:
    """The uncertainty volume node of the CT's last prediction, if any."""
    return reference_volume_node.GetNodeReference(UNCERTAINTY_REFERENCE)


def _keep_unedited_copy(scene, node, labels: Volume, name: str) -> None:
    """A hidden copy of the prediction, so the export can measure how much the annotator changed."""
    previous = scene.GetNodeByID(node.GetAttribute(UNEDITED_PREDICTION_ATTRIBUTE) or "")
    if previous is not None:
        scene.RemoveNode(previous)
    copy = segmentation_from_labelmap(scene, labels, name=f"{name} (unedited prediction)")
    copy.SetHideFromEditors(True)
    if copy.GetDisplayNode() is not None:
        copy.GetDisplayNode().SetVisibility(False)
    node.SetAttribute(UNEDITED_PREDICTION_ATTRIBUTE, copy.GetID())


def prediction_record(node: slicer.vtkMRMLSegmentationNode) -> dict | None:
    """The record stored with a predicted segmentation (model hash, preset, flags, ...), if any."""
    text = node.GetAttribute(SEGMENTATION_RECORD_ATTRIBUTE)
    return json.loads(text) if text else None


def _swap_standard_segments(target: slicer.vtkMRMLSegmentationNode, source: slicer.vtkMRMLSegmentationNode) -> None:
    target_segmentation, source_segmentation = target.GetSegmentation(), source.GetSegmentation()
    for name in label_scheme().names:
        old_id = target_segmentation.GetSegmentIdBySegmentName(name)
        if old_id:
            target_segmentation.RemoveSegment(old_id)
        new_id = source_segmentation.GetSegmentIdBySegmentName(name)
        if new_id:
            target_segmentation.CopySegmentFromSegmentation(source_segmentation, new_id)
