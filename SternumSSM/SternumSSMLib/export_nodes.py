"""Export from the Slicer scene: the CT, segmentation and landmark nodes into a training dataset.

The module's "Export to dataset" buttons use :func:`export_from_scene`; it reads the nodes into
arrays and hands them to ``export.export_case``. The prediction a case started from is found
through the attributes that the segmentation step sets on the nodes it creates
(``scene_contract``); when it is known, the manifest records the correction effort.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import slicer

from .dataset import DatasetError
from .export import (
    PREDICTION_ATTRIBUTES,
    Clock,
    ExportResult,
    Prediction,
    export_case,
    prediction_from_attributes,
    read_prediction_labels,
    record_attributes,
    utc_clock,
)
from .geometry import CoordinateSystem, Volume
from .image_files import file_source
from .markups import landmark_points, write_markups
from .prediction_nodes import prediction_record
from .scene_contract import (
    PREDICTION_FILE,
    PREDICTION_MARKUPS_ID,
    SOURCE_RECORD_ATTRIBUTE,
    UNEDITED_PREDICTION_ATTRIBUTE,
)
from .segmentation_nodes import labelmap_from_segmentation, segment_masks
from .volume_nodes import volume_from_node


def export_from_scene(
    volume_node: slicer.vtkMRMLScalarVolumeNode,
    segmentation_node: slicer.vtkMRMLSegmentationNode,
    dataset_folder: Path | str,
    case_id: str,
    annotator: str = "",
    landmarks_node: slicer.vtkMRMLMarkupsFiducialNode | None = None,
    segment_names: Mapping[str, str] | None = None,
    prediction: Prediction | None = None,
    split: str = "train",
    replace: bool = False,
    landmark_coordinate_system: CoordinateSystem = "LPS",
    file_ending: str | None = None,
    pseudo_landmarks_node: slicer.vtkMRMLMarkupsFiducialNode | None = None,
    allow_empty_segmentation: bool = False,
    clock: Clock = utc_clock,
) -> ExportResult:
    """Export the CT ``volume_node`` with the corrected ``segmentation_node`` (and landmarks,
    and pseudo-landmarks from their own node).

    Label values come from segment names (through ``segment_names`` for other names), on the
    CT's own grid. Unknown names and overlapping segments are errors; empty ones are reported.
    Without ``prediction`` the prediction is looked up through the nodes' attributes.
    """
    image = volume_from_node(volume_node)
    masks = segment_masks(segmentation_node, image.geometry, segment_names)
    check_overlaps(masks)
    labels = labelmap_from_segmentation(segmentation_node, image.geometry, segment_names)
    landmarks = None
    if landmarks_node is not None:
        if landmarks_node.GetParentTransformNode() is not None:
            raise ValueError(f"Landmarks {landmarks_node.GetName()!r} are under a transform; harden it first.")
        landmarks = landmark_points(landmarks_node, "LPS")
    if prediction is None:
        prediction = prediction_from_scene(segmentation_node, landmarks_node, image)
    return export_case(
        dataset_folder,
        case_id,
        image,
        labels,
        landmarks,
        annotator=annotator,
        split=split,
        prediction=prediction,
        source=source_of_node(volume_node),
        replace=replace,
        landmark_coordinate_system=landmark_coordinate_system,
        file_ending=file_ending,
        markups_writer=None if landmarks_node is None else (lambda path: write_markups(landmarks_node, path)),
        pseudo_landmarks=None if pseudo_landmarks_node is None else landmark_points(pseudo_landmarks_node, "LPS"),
        allow_empty_segmentation=allow_empty_segmentation,
        clock=clock,
    )


def check_overlaps(masks: Mapping[str, np.ndarray]) -> None:
    """Refuse segments that share voxels, naming each pair and its voxel count."""
    names = list(masks)
    overlaps = []
    for first_index, first in enumerate(names):
        for second in names[first_index + 1 :]:
            shared = int(np.count_nonzero(masks[first] & masks[second]))
            if shared:
                overlaps.append(f"{first} and {second} share {shared} voxels")
    if overlaps:
        raise ValueError(
            "Overlapping segments: " + "; ".join(overlaps) + ". A label map holds one class per voxel; "
            "remove the overlap in the Segment Editor (e.g. with 'Logical operators' / 'Subtract')."
        )


def source_of_node(volume_node: slicer.vtkMRMLScalarVolumeNode) -> dict:
    """The CT's source as content hashes only: the record it was loaded with, its file, or its DICOM instances;
    never names or paths."""
    recorded = volume_node.GetAttribute(SOURCE_RECORD_ATTRIBUTE)
    if recorded:
        return json.loads(recorded)
    uids = volume_node.GetAttribute("DICOM.instanceUIDs")
    if uids:
        return {"kind": "dicom", "sha256": hashlib.sha256(" ".join(sorted(uids.split())).encode()).hexdigest()}
    storage = volume_node.GetStorageNode()
    file_name = storage.GetFileName() if storage is not None else None
    if file_name and Path(file_name).is_file():
        return file_source(Path(file_name))
    return {"kind": "scene", "sha256": None}


def prediction_from_scene(
    segmentation_node: slicer.vtkMRMLSegmentationNode,
    landmarks_node: slicer.vtkMRMLMarkupsFiducialNode | None,
    image: Volume,
) -> Prediction | None:
    """The prediction recorded on the nodes' ``SternumSSM.*`` attributes, or None when there is none."""
    attribute = segmentation_node.GetAttribute
    scene = segmentation_node.GetScene()
    labels = None
    node_id, file_name = attribute(UNEDITED_PREDICTION_ATTRIBUTE), attribute(PREDICTION_FILE)
    if node_id:
        predicted_node = scene.GetNodeByID(node_id)
        if predicted_node is None:
            raise DatasetError(f"The prediction node {node_id} recorded on {segmentation_node.GetName()!r} is gone.")
        labels = labelmap_from_segmentation(predicted_node, image.geometry)
    elif file_name:
        labels = read_prediction_labels(Path(file_name), image.geometry)
    predicted_landmarks = None
    if landmarks_node is not None and landmarks_node.GetAttribute(PREDICTION_MARKUPS_ID):
        predicted_node = scene.GetNodeByID(landmarks_node.GetAttribute(PREDICTION_MARKUPS_ID))
        if predicted_node is not None:
            predicted_landmarks = landmark_points(predicted_node, "LPS")
    # The segmentation step stores its run record (model hash, preset, ...) as JSON on the node it
    # creates; the single attributes above, where set, take precedence.
    set_attributes = {key: attribute(key) or None for key in PREDICTION_ATTRIBUTES}
    attributes = record_attributes(prediction_record(segmentation_node) or {}, set_attributes)
    return prediction_from_attributes(attributes, labels, predicted_landmarks)
