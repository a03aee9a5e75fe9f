"""MRML glue for landmark QA: live QA while points are dragged, snapping on drop, pseudo-landmark nodes.

Follows the pattern of Slicer's LineProfile logic: the logic adds observers on the markups
node for its point events and removes them in ``cleanup()``. The QA itself is the MRML-free
:class:`LandmarkQAContext`; positions cross over as world coordinates (RAS in MRML, handed
to the QA as LPS :class:`PointSet`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import slicer
from SternumSSMLib.geometry import PointSet
from SternumSSMLib.markups import landmark_points, set_landmark_positions
from SternumSSMLib.mrml import module_logic
from SternumSSMLib.scene_contract import PSEUDO_ATTRIBUTE
from vtkmodules.util.misc import calldata_type
from vtkmodules.util.vtkConstants import VTK_INT
from vtkmodules.vtkCommonDataModel import vtkVector3d

from .landmark_qa import UNION, LandmarkQAContext, LandmarkQAReport, snap_to_surface

# Snap each landmark to the surface of its own protocol structure (manubrium or body).
OWN_STRUCTURE = "structure"
_MARKUPS = slicer.vtkMRMLMarkupsNode
# Events after which the QA is recomputed; PointEndInteractionEvent (drop) may snap as well.
UPDATE_EVENTS = (
    _MARKUPS.PointModifiedEvent,
    _MARKUPS.PointPositionDefinedEvent,
    _MARKUPS.PointPositionUndefinedEvent,
    _MARKUPS.PointAddedEvent,
    _MARKUPS.PointRemovedEvent,
)


class LandmarkQAObserver:
    """Keeps the QA of a landmark point list current and hands each new report to ``on_update``.

    Every point event of ``node`` (a point moved, placed, unplaced, added or removed)
    recomputes the QA of all points. When ``snap_on_drop`` is set, the point the user drops
    (PointEndInteractionEvent) is moved onto the surface of ``snap_segment``: "union",
    "manubrium", "body", or :data:`OWN_STRUCTURE` for each landmark's protocol structure.
    Only the dropped point moves. Call :meth:`cleanup` to stop observing.
    """

    def __init__(
        self,
        node: slicer.vtkMRMLMarkupsFiducialNode,
        context: LandmarkQAContext,
        on_update: Callable[[LandmarkQAReport], None],
        snap_on_drop: bool = False,
        snap_segment: str = UNION,
    ):
        self.node = node
        self.context = context
        self.on_update = on_update
        self.snap_on_drop = snap_on_drop
        self.snap_segment = snap_segment
        self.report: LandmarkQAReport | None = None
        self._last_moved = -1
        self._tags = [node.AddObserver(event, self._on_points_changed) for event in UPDATE_EVENTS]
        self._tags.append(node.AddObserver(_MARKUPS.PointEndInteractionEvent, self._on_drop))
        self.update()

    def update(self) -> LandmarkQAReport:
        """Recompute the QA from the node's current points and report it."""
        self.report = self.context.evaluate(landmark_points(self.node, "LPS"))
        self.on_update(self.report)
        return self.report

    def snap_point(self, index: int) -> None:
        """Move point ``index`` onto the surface, unless it is unplaced or locked."""
        node = self.node
        if node.GetNthControlPointPositionStatus(index) != node.PositionDefined or node.GetNthControlPointLocked(index):
            return
        position_ras = np.array(node.GetNthControlPointPositionWorld(index))
        segment = self._segment_for(node.GetNthControlPointLabel(index))
        snapped_ras = snap_to_surface(position_ras, self.context, coordinate_system="RAS", segment=segment)
        if not np.allclose(snapped_ras, position_ras, atol=1e-6):
            node.SetNthControlPointPositionWorld(index, *snapped_ras)  # fires PointModifiedEvent: QA updates

    def cleanup(self) -> None:
        for tag in self._tags:
            self.node.RemoveObserver(tag)
        self._tags = []

    @calldata_type(VTK_INT)
    def _on_points_changed(self, caller, event, index=None) -> None:
        if index is not None and index >= 0:
            self._last_moved = index
        self.update()

    @calldata_type(VTK_INT)
    def _on_drop(self, caller, event, index=None) -> None:
        if not self.snap_on_drop:
            return
        index = self._dropped_point(index)
        if 0 <= index < self.node.GetNumberOfControlPoints():
            self.snap_point(index)

    def _dropped_point(self, index: int | None) -> int:
        """The point being dropped: from the event if it says, else the point the view's widget
        has active (Slicer's markups widget sends no index), else the last point that moved."""
        if index is not None and index >= 0:
            return index
        display = self.node.GetDisplayNode()
        active = display.GetActiveControlPoint() if display is not None else -1
        return active if active >= 0 else self._last_moved

    def _segment_for(self, label: str) -> str:
        if self.snap_segment != OWN_STRUCTURE:
            return self.snap_segment
        protocol = self.context.protocol
        if label not in protocol.ids:
            return UNION
        structure = protocol.landmarks[protocol.index(label)].structure
        return structure if structure in self.context.surfaces else UNION


def create_pseudo_landmarks_node(
    scene: slicer.vtkMRMLScene, points: PointSet, name: str = "Pseudo-landmarks"
) -> slicer.vtkMRMLMarkupsFiducialNode:
    """A point list holding pseudo-landmarks (``points`` in LPS or RAS; NaN rows stay unplaced).

    The node carries the attribute ``SternumLandmarks.PseudoLandmarks = "true"``, has a fixed
    number of points named as ``points`` (e.g. "P01-02_1") with their descriptions, and is
    locked: pseudo-landmarks are derived from the anatomical landmarks, so they are
    recomputed (and written with :func:`set_landmark_positions`) rather than dragged.
    Points are drawn smaller, unlabelled and in a paler colour than landmarks.
    """
    module_logic(scene, "markups")  # registers the markups node classes in a headless scene
    node = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", name)
    node.CreateDefaultDisplayNodes()
    node.SetAttribute(PSEUDO_ATTRIBUTE, "true")
    was_modifying = node.StartModify()
    for index, label in enumerate(points.names):
        node.AddControlPoint(vtkVector3d(0.0, 0.0, 0.0), label)
        node.UnsetNthControlPointPosition(index)
        if points.descriptions:
            node.SetNthControlPointDescription(index, points.descriptions[index])
    node.SetFixedNumberOfControlPoints(True)
    node.EndModify(was_modifying)
    set_landmark_positions(node, points)
    node.SetLocked(True)
    display = node.GetDisplayNode()
    display.SetGlyphScale(0.6 * display.GetGlyphScale())
    display.SetPointLabelsVisibility(False)
    display.SetSelectedColor(0.55, 0.8, 1.0)
    return node


def is_pseudo_landmarks_node(node: slicer.vtkMRMLNode) -> bool:
    return node.GetAttribute(PSEUDO_ATTRIBUTE) == "true"
