"""What the SternumLandmarks module does with the scene, without Qt: the module's widget only calls this.

- which segmentation and CT to start from, and the label map the model and the QA read;
- the landmarks node of a segmentation, found again on a re-run, and its pseudo-landmarks node;
- the rows of the confidence and QA table;
- landmarks-only exports (CSV with its coordinate system declared, and ``.mrk.json``).

Nodes are tied together with node references, so the links survive saving the scene:
the landmarks node references the segmentation it was predicted from and its pseudo-landmarks.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import slicer
from SternumSSMLib.anatomy import LandmarkProtocol
from SternumSSMLib.dataset import check_case_id
from SternumSSMLib.geometry import CoordinateSystem, PointSet, Volume
from SternumSSMLib.landmark_files import write_landmarks_csv
from SternumSSMLib.markups import MARKUPS_SUFFIX, landmark_points, write_markups
from SternumSSMLib.scene_contract import (
    LANDMARK_RECORD_ATTRIBUTE,
    PSEUDO_REFERENCE,
    SEGMENTATION_RECORD_ATTRIBUTE,
    SOURCE_SEGMENTATION_REFERENCE,
    SOURCE_VOLUME_REFERENCE,
)
from SternumSSMLib.segmentation_nodes import labelmap_from_segmentation
from SternumSSMLib.volume_nodes import volume_from_node

from .landmark_nodes import landmark_confidence, moved_landmarks, show_landmark_prediction
from .landmark_observer import create_pseudo_landmarks_node
from .landmark_qa import LandmarkQAContext, LandmarkQAReport
from .pseudo_landmarks import pseudo_landmarks
from .scn_config import SCNConfig

if TYPE_CHECKING:
    from .landmark_prediction import LandmarkPrediction

CONFIDENT_ABOVE = "confident_above"  # key in the landmarks node's prediction record
# The snap choices the module offers, as the QA library names the surfaces.
SNAP_SEGMENTS = {"Both": "union", "Manubrium": "manubrium", "Sternal body": "body"}


# --------------------------------------------------------------------------- inputs


def default_input_segmentation(scene: slicer.vtkMRMLScene) -> slicer.vtkMRMLSegmentationNode | None:
    """The newest segmentation SternumSSM predicted (and the user may have corrected), else the first one.

    Hidden nodes (the unedited copies kept for measuring correction effort) are never chosen.
    """
    nodes = [
        scene.GetNthNodeByClass(index, "vtkMRMLSegmentationNode")
        for index in range(scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode"))
    ]
    visible = [node for node in nodes if not node.GetHideFromEditors()]
    predicted = [node for node in visible if node.GetAttribute(SEGMENTATION_RECORD_ATTRIBUTE)]
    if predicted:
        return predicted[-1]
    return visible[0] if visible else None


def source_volume(segmentation_node: slicer.vtkMRMLSegmentationNode | None) -> slicer.vtkMRMLScalarVolumeNode | None:
    """The CT a SternumSSM segmentation was predicted on, if it says."""
    return None if segmentation_node is None else segmentation_node.GetNodeReference(SOURCE_VOLUME_REFERENCE)


def reference_volume(
    segmentation_node: slicer.vtkMRMLSegmentationNode | None, chosen: slicer.vtkMRMLScalarVolumeNode | None = None
) -> slicer.vtkMRMLScalarVolumeNode:
    """The CT the user chose, else the one the segmentation was predicted on; an error when there is neither."""
    if segmentation_node is None:
        raise ValueError("Choose the sternum segmentation.")
    reference = chosen or source_volume(segmentation_node)
    if reference is None:
        raise ValueError(
            f"Choose the CT that segmentation {segmentation_node.GetName()!r} was made on; "
            "its voxel grid is where the segmentation is read."
        )
    return reference


def landmark_inputs(
    segmentation_node: slicer.vtkMRMLSegmentationNode | None, chosen_volume: slicer.vtkMRMLScalarVolumeNode | None
) -> tuple[Volume, Volume]:
    """The segmentation as standard label values on the grid of :func:`reference_volume`, and that CT."""
    ct = volume_from_node(reference_volume(segmentation_node, chosen_volume))
    return labelmap_from_segmentation(segmentation_node, ct.geometry), ct


def landmark_labels(
    segmentation_node: slicer.vtkMRMLSegmentationNode | None, chosen_volume: slicer.vtkMRMLScalarVolumeNode | None
) -> Volume:
    """The segmentation as standard label values on the grid of :func:`reference_volume`."""
    return landmark_inputs(segmentation_node, chosen_volume)[0]


# --------------------------------------------------------------------------- landmarks nodes


def landmarks_node_for(segmentation_node: slicer.vtkMRMLSegmentationNode) -> slicer.vtkMRMLMarkupsFiducialNode | None:
    """The newest landmarks node predicted from ``segmentation_node``, which a re-run replaces."""
    scene = segmentation_node.GetScene()
    found = None
    for index in range(scene.GetNumberOfNodesByClass("vtkMRMLMarkupsFiducialNode")):
        node = scene.GetNthNodeByClass(index, "vtkMRMLMarkupsFiducialNode")
        if node.GetNodeReference(SOURCE_SEGMENTATION_REFERENCE) is segmentation_node:
            found = node
    return found


def show_landmarks_for_segmentation(
    prediction: LandmarkPrediction,
    segmentation_node: slicer.vtkMRMLSegmentationNode,
    protocol: LandmarkProtocol | None = None,
    confident_above: float | None = None,
) -> slicer.vtkMRMLMarkupsFiducialNode:
    """Show ``prediction`` in the landmarks node of ``segmentation_node``, replacing its points if it has one.

    Ask the user first when ``moved_landmarks`` of the existing node is not empty.
    ``confident_above`` (the model's threshold) is recorded on the node for :func:`landmark_table`.
    """
    if confident_above is not None:
        prediction.record[CONFIDENT_ABOVE] = float(confident_above)
    node = show_landmark_prediction(
        segmentation_node.GetScene(),
        prediction,
        existing=landmarks_node_for(segmentation_node),
        name=f"{segmentation_node.GetName()} landmarks",
        protocol=protocol,
    )
    node.SetNodeReferenceID(SOURCE_SEGMENTATION_REFERENCE, segmentation_node.GetID())
    return node


def replaced_points(segmentation_node: slicer.vtkMRMLSegmentationNode | None) -> list[str]:
    """Ids of the points a re-run on ``segmentation_node`` would overwrite after the user moved them."""
    existing = None if segmentation_node is None else landmarks_node_for(segmentation_node)
    return [] if existing is None else moved_landmarks(existing)


def pseudo_landmarks_node(
    landmarks_node: slicer.vtkMRMLMarkupsFiducialNode,
) -> slicer.vtkMRMLMarkupsFiducialNode | None:
    return landmarks_node.GetNodeReference(PSEUDO_REFERENCE)


def update_pseudo_landmarks(
    landmarks_node: slicer.vtkMRMLMarkupsFiducialNode, context: LandmarkQAContext, per_segment: int
) -> slicer.vtkMRMLMarkupsFiducialNode:
    """A new pseudo-landmarks node (``per_segment`` between each pair of neighbours) replacing the old one."""
    scene = landmarks_node.GetScene()
    points = pseudo_landmarks(landmark_points(landmarks_node, "LPS"), context, per_segment)
    previous = pseudo_landmarks_node(landmarks_node)
    if previous is not None:
        scene.RemoveNode(previous)
    node = create_pseudo_landmarks_node(scene, points, name=f"{landmarks_node.GetName()} pseudo-landmarks")
    landmarks_node.SetNodeReferenceID(PSEUDO_REFERENCE, node.GetID())
    return node


# --------------------------------------------------------------------------- the confidence and QA table


@dataclass(frozen=True)
class LandmarkRow:
    """One row of the table: a landmark, its model confidence, its distance to the bone and its QA state.

    ``confidence`` is None for points no model predicted, ``distance_mm`` None when the point
    is unplaced or there is no QA; ``needs_check`` rows are highlighted; ``details`` is the tooltip.
    """

    landmark_id: str
    description: str
    confidence: float | None
    distance_mm: float | None
    state: str
    details: str
    needs_check: bool

    def cells(self) -> tuple[str, str, str, str]:
        """Landmark, Confidence, Distance to surface (mm), QA."""
        return (
            self.landmark_id,
            "" if self.confidence is None else f"{self.confidence:.2f}",
            "" if self.distance_mm is None else f"{self.distance_mm:.1f}",
            self.state,
        )


def landmark_rows(
    points: PointSet,
    confidence: Mapping[str, float],
    confident_above: float,
    report: LandmarkQAReport | None = None,
    moved: set[str] | frozenset[str] = frozenset(),
) -> list[LandmarkRow]:
    """Table rows in the order of ``points``.

    State, in order: "not placed"; "low confidence" (below ``confident_above``, unless the user
    has since moved the point: then "moved"); the codes of the QA flags; "ok" when none apply.
    """
    rows = []
    for index, name in enumerate(points.names):
        placed = bool(points.defined[index])
        score = confidence.get(name)
        qa = _qa_of(report, name)
        states, details = [], []
        if not placed:
            states.append("not placed")
            details.append(f"{name} is not placed: place it by hand (place mode fills the next unplaced point).")
        elif name in moved:
            states.append("moved")
        elif score is not None and score < confident_above:
            states.append("low confidence")
            details.append(f"Model confidence {score:.2f} is below {confident_above:.2f}: check its position.")
        if qa is not None:
            states += list(dict.fromkeys(flag.code for flag in qa.flags))
            details += qa.messages
        distance = None if qa is None or not placed else qa.distance_mm
        rows.append(
            LandmarkRow(
                landmark_id=name,
                description=points.descriptions[index] if points.descriptions else "",
                confidence=None if score is None else float(score),
                distance_mm=None if distance is None or not np.isfinite(distance) else float(distance),
                state=", ".join(states) or "ok",
                details="\n".join(details),
                needs_check=bool(set(states) - {"moved"}),
            )
        )
    return rows


def _qa_of(report: LandmarkQAReport | None, name: str):
    if report is None:
        return None
    try:
        return report[name]
    except KeyError:
        return None


def landmark_table(
    node: slicer.vtkMRMLMarkupsFiducialNode, report: LandmarkQAReport | None = None
) -> list[LandmarkRow]:
    """The rows for a landmarks node: confidence and threshold as the prediction recorded them on it."""
    record = json.loads(node.GetAttribute(LANDMARK_RECORD_ATTRIBUTE) or "{}")
    confident_above = float(record.get(CONFIDENT_ABOVE, SCNConfig().confident_above))
    return landmark_rows(
        landmark_points(node, "LPS"), landmark_confidence(node), confident_above, report, set(moved_landmarks(node))
    )


# --------------------------------------------------------------------------- landmarks-only export


def landmark_file_stem(case_id: str, node_name: str) -> str:
    """The case id when there is one (checked), otherwise the node name made safe for a file name."""
    if case_id:
        return check_case_id(case_id)
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", node_name).strip("_")
    return stem or "landmarks"


def landmark_export_paths(folder: Path | str, stem: str, with_pseudo: bool = False) -> dict[str, Path]:
    """Where :func:`export_landmarks` writes: the role of each file to its path."""
    folder = Path(folder)
    paths = {"csv": folder / f"{stem}.csv", "markups": folder / f"{stem}{MARKUPS_SUFFIX}"}
    if with_pseudo:
        paths["pseudo_csv"] = folder / f"{stem}_pseudo.csv"
        paths["pseudo_markups"] = folder / f"{stem}_pseudo{MARKUPS_SUFFIX}"
    return paths


def export_landmarks(
    node: slicer.vtkMRMLMarkupsFiducialNode,
    folder: Path | str,
    stem: str,
    coordinate_system: CoordinateSystem = "LPS",
    pseudo_node: slicer.vtkMRMLMarkupsFiducialNode | None = None,
    overwrite: bool = False,
) -> list[Path]:
    """Write the landmarks as ``<stem>.csv`` (``coordinate_system`` declared in its header) and
    ``<stem>.mrk.json`` (LPS, as Slicer writes), and the pseudo-landmarks, when given, beside
    them as ``<stem>_pseudo.*``. Unplaced points keep their rows, empty.

    Every file is written atomically. Without ``overwrite`` nothing is written when any target exists.
    """
    if coordinate_system not in ("LPS", "RAS"):
        raise ValueError(f"Coordinate system {coordinate_system!r} must be 'LPS' or 'RAS'.")
    paths = landmark_export_paths(folder, stem, with_pseudo=pseudo_node is not None)
    if not Path(folder).is_dir():
        raise FileNotFoundError(f"Folder {folder} does not exist; choose an existing folder.")
    existing = [path.name for path in paths.values() if path.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{', '.join(existing)} already exist in {folder}; nothing was written.")
    write_landmarks_csv(paths["csv"], landmark_points(node, coordinate_system), coordinate_system, overwrite=overwrite)
    write_markups(node, paths["markups"], overwrite=overwrite)
    if pseudo_node is not None:
        pseudo = landmark_points(pseudo_node, coordinate_system)
        write_landmarks_csv(paths["pseudo_csv"], pseudo, coordinate_system, overwrite=overwrite)
        write_markups(pseudo_node, paths["pseudo_markups"], overwrite=overwrite)
    return list(paths.values())
