"""Landmark point lists: one control point per protocol landmark, in protocol order.

A landmark that has not been placed keeps its control point with the position status
"undefined" (Slicer's "not placed yet", which place mode fills in order) instead of
being removed, so point i is always landmark i. Positions cross into and out of this
module as :class:`PointSet` with a stated coordinate system; MRML holds RAS.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import slicer
from vtkmodules.vtkCommonDataModel import vtkVector3d

from .anatomy import LandmarkProtocol, default_protocol
from .atomic import atomic_output_path
from .geometry import CoordinateSystem, PointSet
from .mrml import headless_scene, module_logic
from .scene_contract import PREDICTION_MARKUPS_ID

MARKUPS_SUFFIX = ".mrk.json"


def create_landmarks_node(
    scene: slicer.vtkMRMLScene, protocol: LandmarkProtocol | None = None, name: str = "Landmarks"
) -> slicer.vtkMRMLMarkupsFiducialNode:
    """A point list with one unplaced, unlocked control point per landmark and a fixed point count.

    Each point's label is the landmark id ("L01") and its description "<name>: <description>".
    """
    protocol = protocol or default_protocol()
    module_logic(scene, "markups")  # registers the markups node classes in a headless scene
    node = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", name)
    node.CreateDefaultDisplayNodes()
    was_modifying = node.StartModify()
    for landmark in protocol.landmarks:
        index = node.AddControlPoint(vtkVector3d(0.0, 0.0, 0.0), landmark.id)
        node.UnsetNthControlPointPosition(index)
        node.SetNthControlPointDescription(index, f"{landmark.name}: {landmark.description}")
        node.SetNthControlPointLocked(index, False)
    node.SetFixedNumberOfControlPoints(True)
    node.EndModify(was_modifying)
    return node


def set_landmark_positions(node: slicer.vtkMRMLMarkupsFiducialNode, points: PointSet) -> None:
    """Place the node's points at ``points`` (LPS or RAS, matched by landmark id; world coordinates).

    ``points`` must name every landmark of the node exactly once; NaN rows leave that
    landmark unplaced.
    """
    labels = _labels(node)
    _check_names(points.names, labels)
    partial = ~points.defined & np.isfinite(points.positions).any(axis=1)
    if partial.any():
        raise ValueError(f"Landmarks {[points.names[i] for i in np.flatnonzero(partial)]} have only some coordinates.")
    positions_ras = points.to("RAS").positions
    was_modifying = node.StartModify()
    for name, position, defined in zip(points.names, positions_ras, points.defined, strict=True):
        index = labels.index(name)
        if defined:
            node.SetNthControlPointPositionWorld(index, *position)
        else:
            node.UnsetNthControlPointPosition(index)
    node.EndModify(was_modifying)


def keep_unedited_copy(
    scene: slicer.vtkMRMLScene, node: slicer.vtkMRMLMarkupsFiducialNode, points: PointSet, protocol: LandmarkProtocol
) -> slicer.vtkMRMLMarkupsFiducialNode:
    """A hidden, locked copy of the predicted ``points``, referenced from ``node`` (replacing an earlier copy), so
    the export can measure how far the annotator moved each point."""
    previous = scene.GetNodeByID(node.GetAttribute(PREDICTION_MARKUPS_ID) or "")
    if previous is not None:
        scene.RemoveNode(previous)
    copy = create_landmarks_node(scene, protocol, name=f"{node.GetName()} (unedited prediction)")
    set_landmark_positions(copy, points)
    copy.SetLocked(True)
    copy.SetHideFromEditors(True)
    if copy.GetDisplayNode() is not None:
        copy.GetDisplayNode().SetVisibility(False)
    node.SetAttribute(PREDICTION_MARKUPS_ID, copy.GetID())
    return copy


def landmark_points(node: slicer.vtkMRMLMarkupsFiducialNode, coordinate_system: CoordinateSystem = "LPS") -> PointSet:
    """The node's points in world coordinates (LPS by default).

    Points without a position (not placed yet, skipped, or still being previewed) are NaN rows.
    """
    count = node.GetNumberOfControlPoints()
    positions_ras = np.full((count, 3), np.nan)
    for index in range(count):
        if node.GetNthControlPointPositionStatus(index) == node.PositionDefined:
            positions_ras[index] = node.GetNthControlPointPositionWorld(index)
    points = PointSet(
        names=_labels(node),
        positions=positions_ras,
        coordinate_system="RAS",
        descriptions=tuple(node.GetNthControlPointDescription(i) for i in range(count)),
    )
    return points.to(coordinate_system)


def write_markups(node: slicer.vtkMRMLMarkupsNode, path: Path | str, overwrite: bool = False) -> Path:
    """Write a ``.mrk.json`` file with positions in LPS, as Slicer does by default.

    Slicer writes a node's own coordinates, so a node under a parent transform is refused
    (harden the transform first) rather than written somewhere other than it is shown.
    """
    path = Path(path)
    if not path.name.endswith(MARKUPS_SUFFIX):
        raise ValueError(f"A markups file name must end in {MARKUPS_SUFFIX}, got {path.name}.")
    if node.GetParentTransformNode() is not None:
        raise ValueError(f"Markups {node.GetName()!r} are under a transform; harden it before writing.")
    module_logic(node.GetScene(), "markups")  # registers the JSON storage node class in a headless scene
    with atomic_output_path(path, overwrite=overwrite) as temporary:
        storage = node.CreateDefaultStorageNode()
        storage.SetCoordinateSystem(slicer.vtkMRMLStorageNode.CoordinateSystemLPS)
        storage.SetFileName(str(temporary))
        if not storage.WriteData(node):
            raise OSError(f"Writing markups to {path} failed; the writer's messages are in the log above.")
    return path


def write_landmarks_markups(points: PointSet, path: Path | str, overwrite: bool = False) -> Path:
    """Write protocol landmarks (LPS or RAS, NaN = unplaced) to a ``.mrk.json`` without a user scene."""
    with headless_scene() as scene:
        node = create_landmarks_node(scene, name=Path(path).name.split(".")[0])
        set_landmark_positions(node, points)
        return write_markups(node, path, overwrite=overwrite)


def read_markups(scene: slicer.vtkMRMLScene, path: Path | str) -> slicer.vtkMRMLMarkupsNode:
    """Load a markups file (``.mrk.json`` or ``.fcsv``) into a new node; positions become RAS in the scene."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Markups file {path} does not exist.")
    messages = slicer.vtkMRMLMessageCollection()
    name = path.name.removesuffix(MARKUPS_SUFFIX).split(".")[0]
    node_id = module_logic(scene, "markups").LoadMarkups(str(path), name, messages)
    if not node_id:
        raise OSError(f"Cannot read markups {path}: {messages.GetAllMessagesAsString() or 'see the log above'}")
    return scene.GetNodeByID(node_id)


def read_landmarks_markups(path: Path | str, coordinate_system: CoordinateSystem = "LPS") -> PointSet:
    """The points of a markups file (world coordinates, NaN = unplaced) without a user scene."""
    with headless_scene() as scene:
        return landmark_points(read_markups(scene, path), coordinate_system)


def _labels(node: slicer.vtkMRMLMarkupsNode) -> list[str]:
    return [node.GetNthControlPointLabel(i) for i in range(node.GetNumberOfControlPoints())]


def _check_names(names: tuple[str, ...], labels: list[str]) -> None:
    missing = sorted(set(labels) - set(names))
    unknown = sorted(set(names) - set(labels))
    if missing or unknown or len(set(names)) != len(names):
        raise ValueError(
            f"Landmark names must be the node's landmark ids, each once. Missing: {missing}; "
            f"not in the node: {unknown}; given {len(names)} names for {len(labels)} landmarks."
        )
