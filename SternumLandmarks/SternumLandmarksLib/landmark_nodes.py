"""Put a landmark prediction into the scene as the point list the annotator corrects.

The result is one fiducial node with the protocol's fixed number of named, unlocked points
(see ``markups.create_landmarks_node``); points the model could not place stay unplaced.
Low-confidence and duplicate points are shown "unselected", which Slicer draws in the
node's second colour (orange here), so they stand out in slice and 3D views. A hidden,
locked copy of the unedited prediction is kept and referenced from the node, so the
export can measure how far the annotator moved each point, and a re-run can tell which
points the user moved before it replaces them.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import numpy as np
import slicer
from SternumSSMLib.anatomy import LandmarkProtocol, default_protocol
from SternumSSMLib.markups import create_landmarks_node, keep_unedited_copy, landmark_points, set_landmark_positions
from SternumSSMLib.scene_contract import CONFIDENCE_ATTRIBUTE, LANDMARK_RECORD_ATTRIBUTE, PREDICTION_MARKUPS_ID

if TYPE_CHECKING:
    from .landmark_prediction import LandmarkPrediction

LOW_CONFIDENCE_COLOR = (1.0, 0.5, 0.0)
CONFIDENT_COLOR = (0.2, 0.9, 0.3)
# Points behind the bone surface in a 3D view are drawn at this opacity instead of hidden.
OCCLUDED_OPACITY = 0.3


def show_in_views(node: slicer.vtkMRMLMarkupsFiducialNode) -> None:
    """Show the landmarks in the slice and 3D views with their labels ("L01"), whatever the user's
    markups defaults say. Half the outline lies behind the bone seen from any side, so points hidden
    by the sternum's 3D surface stay visible, faded. The node's name is not drawn: at the first
    point it would cover L01's label."""
    display = node.GetDisplayNode()
    if display is None:
        node.CreateDefaultDisplayNodes()
        display = node.GetDisplayNode()
    display.SetVisibility(True)
    display.SetVisibility2D(True)
    display.SetVisibility3D(True)
    display.SetPointLabelsVisibility(True)
    display.SetPropertiesLabelVisibility(False)
    display.SetOccludedVisibility(True)
    display.SetOccludedOpacity(OCCLUDED_OPACITY)


def show_landmark_prediction(
    scene: slicer.vtkMRMLScene,
    prediction: LandmarkPrediction,
    existing: slicer.vtkMRMLMarkupsFiducialNode | None = None,
    name: str = "Landmarks",
    protocol: LandmarkProtocol | None = None,
) -> slicer.vtkMRMLMarkupsFiducialNode:
    """The landmarks node holding ``prediction`` (positions converted from LPS to RAS).

    With ``existing`` its points are overwritten in place: ask the user first when
    ``moved_landmarks(existing)`` is not empty.
    """
    protocol = protocol or default_protocol()
    if prediction.landmarks_lps.names != protocol.ids:
        raise ValueError(
            f"The landmark model predicts {len(prediction.landmarks_lps.names)} landmarks that do not match the "
            f"protocol's {len(protocol)}; choose the model trained for this protocol."
        )
    node = existing if existing is not None else create_landmarks_node(scene, protocol, name=name)
    set_landmark_positions(node, prediction.landmarks_lps)
    flagged = prediction.duplicate_ids
    was_modifying = node.StartModify()
    for index, landmark in enumerate(protocol.landmarks):
        confidence = float(prediction.confidence[index])
        trusted = bool(prediction.confident[index]) and landmark.id not in flagged
        node.SetNthControlPointSelected(index, trusted)
        node.SetNthControlPointLocked(index, False)
        state = "" if trusted else " [check: low confidence or duplicate]"
        node.SetNthControlPointDescription(
            index, f"{landmark.name}: {landmark.description} (confidence {confidence:.2f}){state}"
        )
    node.EndModify(was_modifying)
    show_in_views(node)
    display = node.GetDisplayNode()
    display.SetSelectedColor(*CONFIDENT_COLOR)
    display.SetColor(*LOW_CONFIDENCE_COLOR)
    confidence = {name: float(value) for name, value in zip(protocol.ids, prediction.confidence, strict=True)}
    node.SetAttribute(CONFIDENCE_ATTRIBUTE, json.dumps(confidence))
    node.SetAttribute(LANDMARK_RECORD_ATTRIBUTE, json.dumps(prediction.record))
    keep_unedited_copy(scene, node, prediction.landmarks_lps, protocol)
    return node


def unedited_prediction(node: slicer.vtkMRMLMarkupsFiducialNode) -> slicer.vtkMRMLMarkupsFiducialNode | None:
    scene = node.GetScene()
    return scene.GetNodeByID(node.GetAttribute(PREDICTION_MARKUPS_ID) or "") if scene else None


def landmark_displacements_mm(node: slicer.vtkMRMLMarkupsFiducialNode) -> dict[str, float | None]:
    """How far (mm) each point is from the model's prediction; None where either is unplaced.

    A point the user placed that the model had left unplaced counts as moved (infinite distance).
    """
    original = unedited_prediction(node)
    if original is None:
        return {}
    now, before = landmark_points(node, "LPS"), landmark_points(original, "LPS")
    displacements: dict[str, float | None] = {}
    for name, position, predicted in zip(now.names, now.positions, before.positions, strict=True):
        placed_now, placed_before = np.isfinite(position).all(), np.isfinite(predicted).all()
        if placed_now and placed_before:
            displacements[name] = float(np.linalg.norm(position - predicted))
        elif placed_now != placed_before:
            displacements[name] = float("inf")
        else:
            displacements[name] = None
    return displacements


def moved_landmarks(node: slicer.vtkMRMLMarkupsFiducialNode, tolerance_mm: float = 0.01) -> list[str]:
    """Ids of the points the user moved, placed or removed since the prediction."""
    return [name for name, distance in landmark_displacements_mm(node).items()
            if distance is not None and distance > tolerance_mm]


def landmark_confidence(node: slicer.vtkMRMLMarkupsFiducialNode) -> dict[str, float]:
    text = node.GetAttribute(CONFIDENCE_ATTRIBUTE)
    return json.loads(text) if text else {}
