"""Put a predicted label map into the scene as the segmentation the annotator will correct.

Two ways to re-run on a volume that already has a result, chosen by the user:
- ``replace``: the old segmentation node is removed and a new one made;
- ``update``: the standard segments of the existing node are swapped for the new
  prediction in place; segments the user added under other names stay untouched.
Neither ever duplicates a standard segment.
"""

from __future__ import annotations

import json
from typing import Literal

import slicer

from .anatomy import label_scheme
from .geometry import Volume
from .mrml import scratch_nodes
from .segmentation_nodes import segmentation_from_labelmap

RECORD_ATTRIBUTE = "SternumSSM.PredictionRecord"
UNEDITED_PREDICTION_ATTRIBUTE = "SternumSSM.PredictionSegmentationID"
RerunMode = Literal["replace", "update"]


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
    node.SetNodeReferenceID("SternumSSM.SourceVolume", reference_volume_node.GetID())
    if record is not None:
        node.SetAttribute(RECORD_ATTRIBUTE, json.dumps(record))
    _keep_unedited_copy(scene, node, labels, name)
    return node


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
    text = node.GetAttribute(RECORD_ATTRIBUTE)
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
