"""Shape-model meshes as MRML model nodes, for the 3D view: built once, then reshaped in place.

MRML works in RAS; meshes here are LPS, so x and y change sign on the way in (a rotation by
180° about the z axis: triangle winding, and so outward normals, stay as they are). Reshaping
moves the points of the existing node, cheap enough to follow a mode slider while it is dragged.
"""

from __future__ import annotations

import numpy as np
import slicer
import vtk
from vtk.util.numpy_support import numpy_to_vtk

from .meshes import SurfaceMesh

_LPS_TO_RAS = np.array([-1.0, -1.0, 1.0])
ERROR_ARRAY = "fit error (mm)"


def ras_polydata(mesh: SurfaceMesh) -> vtk.vtkPolyData:
    """``mesh`` as polydata with RAS points."""
    polydata = mesh.to_polydata()
    polydata.GetPoints().SetData(numpy_to_vtk(np.ascontiguousarray(mesh.points_lps * _LPS_TO_RAS), deep=True))
    return polydata


def model_node(scene: slicer.vtkMRMLScene, mesh: SurfaceMesh, name: str) -> slicer.vtkMRMLModelNode:
    """A new model node (with a display node) showing ``mesh``."""
    node = scene.AddNewNodeByClass("vtkMRMLModelNode", name)
    node.SetAndObservePolyData(ras_polydata(mesh))
    node.CreateDefaultDisplayNodes()
    return node


def set_shape(node: slicer.vtkMRMLModelNode, points_lps: np.ndarray) -> None:
    """Move the node's points to ``points_lps`` (same topology), e.g. while a mode slider moves."""
    points = node.GetPolyData().GetPoints()
    if points.GetNumberOfPoints() != len(points_lps):
        raise ValueError(f"The node has {points.GetNumberOfPoints()} points; {len(points_lps)} were given.")
    points.SetData(numpy_to_vtk(np.ascontiguousarray(np.asarray(points_lps, float) * _LPS_TO_RAS), deep=True))
    points.Modified()
    node.GetPolyData().Modified()


def points_lps(node: slicer.vtkMRMLModelNode) -> np.ndarray:
    """The node's points in LPS."""
    return slicer.util.arrayFromModelPoints(node).astype(float) * _LPS_TO_RAS


def colour_by(node: slicer.vtkMRMLModelNode, values: np.ndarray, limit_mm: float | None = None) -> None:
    """Colour the node per point by ``values`` (mm, e.g. a case's fit error), 0 .. ``limit_mm`` (default max)."""
    values = np.asarray(values, dtype=float)
    array = numpy_to_vtk(values, deep=True, array_type=vtk.VTK_FLOAT)
    array.SetName(ERROR_ARRAY)
    node.GetPolyData().GetPointData().AddArray(array)
    display = node.GetDisplayNode()
    display.SetActiveScalarName(ERROR_ARRAY)
    display.SetScalarVisibility(True)
    display.SetAndObserveColorNodeID("vtkMRMLColorTableNodeFileViridis.txt")
    display.SetScalarRangeFlag(display.UseManualScalarRange)
    display.SetScalarRange(0.0, float(limit_mm if limit_mm is not None else max(values.max(), 1e-6)))
