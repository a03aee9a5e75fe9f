"""Triangle meshes in LPS millimetres: surfaces from label maps, checks, closest points and distances (VTK).

Every mesh here is a :class:`SurfaceMesh`: LPS points, triangles and the FE node and
element ids that travel with them (1-based by default; a user template keeps its own).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import vtk
from scipy import ndimage
from scipy.spatial import cKDTree
from SternumSSMLib.geometry import ImageGeometry, Volume
from vtk.util.numpy_support import numpy_to_vtk, numpy_to_vtkIdTypeArray, vtk_to_numpy


@dataclass(frozen=True, eq=False)
class SurfaceMesh:
    """A triangle mesh: ``points_lps`` (V, 3) in LPS mm, ``triangles`` (F, 3) indices into them.

    ``node_ids`` and ``element_ids`` are the FE ids written to LS-DYNA files (default 1..V, 1..F).
    """

    points_lps: np.ndarray
    triangles: np.ndarray
    node_ids: np.ndarray = field(default=None)  # type: ignore[assignment]
    element_ids: np.ndarray = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        points = np.asarray(self.points_lps, dtype=float)
        triangles = np.asarray(self.triangles, dtype=np.int64)
        if points.ndim != 2 or points.shape[1] != 3 or triangles.ndim != 2 or triangles.shape[1] != 3:
            raise ValueError(f"A mesh needs (V, 3) points and (F, 3) triangles; got {points.shape}, {triangles.shape}.")
        if len(triangles) and (triangles.min() < 0 or triangles.max() >= len(points)):
            raise ValueError("Mesh triangles refer to points that do not exist.")
        node_ids = np.arange(1, len(points) + 1) if self.node_ids is None else np.asarray(self.node_ids, np.int64)
        element_ids = (
            np.arange(1, len(triangles) + 1) if self.element_ids is None else np.asarray(self.element_ids, np.int64)
        )
        if node_ids.shape != (len(points),) or element_ids.shape != (len(triangles),):
            raise ValueError("A mesh needs one node id per point and one element id per triangle.")
        object.__setattr__(self, "points_lps", points)
        object.__setattr__(self, "triangles", triangles)
        object.__setattr__(self, "node_ids", node_ids)
        object.__setattr__(self, "element_ids", element_ids)

    def with_points(self, points_lps: np.ndarray) -> SurfaceMesh:
        """The same topology and ids at other LPS positions."""
        return replace(self, points_lps=np.asarray(points_lps, dtype=float).reshape(-1, 3))

    def to_polydata(self) -> vtk.vtkPolyData:
        polydata = vtk.vtkPolyData()
        points = vtk.vtkPoints()
        points.SetData(numpy_to_vtk(np.ascontiguousarray(self.points_lps), deep=True))
        polydata.SetPoints(points)
        cells = vtk.vtkCellArray()
        offsets = numpy_to_vtkIdTypeArray(np.arange(0, 3 * len(self.triangles) + 1, 3, dtype=np.int64), deep=True)
        connectivity = numpy_to_vtkIdTypeArray(np.ascontiguousarray(self.triangles.ravel()), deep=True)
        cells.SetData(offsets, connectivity)
        polydata.SetPolys(cells)
        return polydata

    @classmethod
    def from_polydata(cls, polydata: vtk.vtkPolyData) -> SurfaceMesh:
        """Triangles of a polydata (polygons are triangulated first); unused points are dropped."""
        triangulate = vtk.vtkTriangleFilter()
        triangulate.SetInputData(polydata)
        clean = vtk.vtkCleanPolyData()
        clean.SetInputConnection(triangulate.GetOutputPort())
        clean.PointMergingOff()  # keep distinct points distinct; only drop unused ones
        clean.Update()
        output = clean.GetOutput()
        if output.GetNumberOfPoints() == 0:
            raise ValueError("The surface is empty.")
        points = vtk_to_numpy(output.GetPoints().GetData()).astype(float)
        connectivity = vtk_to_numpy(output.GetPolys().GetConnectivityArray()).reshape(-1, 3)
        return cls(points, connectivity)

    @property
    def area_mm2(self) -> float:
        a, b, c = (self.points_lps[self.triangles[:, k]] for k in range(3))
        return float(0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1).sum())

    @property
    def signed_volume_mm3(self) -> float:
        """Positive when the triangles wind outward (normals point out of the enclosed volume)."""
        a, b, c = (self.points_lps[self.triangles[:, k]] for k in range(3))
        return float(np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6.0)


@dataclass(frozen=True)
class LabelSurface:
    """A case's surface and what was left out of it: volumes (mm³) of the dropped pieces, largest first."""

    mesh: SurfaceMesh
    dropped_volumes_mm3: tuple[float, ...]

    @property
    def flagged(self) -> bool:
        return bool(self.dropped_volumes_mm3)


def surface_from_labels(
    labels: Volume,
    values: tuple[int, ...],
    closing_mm: float = 2.0,
    smoothing_mm: float = 0.8,
    target_points: int | None = None,
) -> LabelSurface:
    """The closed, manifold surface (LPS) of the voxels whose label is in ``values``.

    Gaps up to ``2 * closing_mm`` wide (an unlabelled joint space between manubrium and body)
    are bridged by a morphological closing, cavities are filled, and only the largest
    6-connected piece is kept; the volumes of the others are returned so the case can be flagged.
    The mask is blurred (Gaussian, ``smoothing_mm``) and contoured at 0.5 with vtkFlyingEdges3D:
    on a smooth field the contour is manifold, where vtkSurfaceNets3D on the raw voxels gave
    non-manifold edges wherever two voxels touch only along an edge. ``target_points``
    decimates the result to about that many points.
    """
    mask = np.isin(labels.array, values)
    if not mask.any():
        raise ValueError(f"The label map has no voxels with labels {list(values)}; nothing to build a surface from.")
    geometry = labels.geometry
    spacing_kji = geometry.spacing[::-1]
    radius = np.ceil(max(closing_mm, 0.0) / spacing_kji).astype(int)
    pad = radius + np.ceil(3.0 * smoothing_mm / spacing_kji).astype(int) + 2
    box = ndimage.find_objects(mask.astype(np.uint8))[0]
    crop = np.pad(mask[box], [(p, p) for p in pad])
    if closing_mm > 0:
        kk, jj, ii = np.ogrid[-radius[0] : radius[0] + 1, -radius[1] : radius[1] + 1, -radius[2] : radius[2] + 1]
        ball = (kk * spacing_kji[0]) ** 2 + (jj * spacing_kji[1]) ** 2 + (ii * spacing_kji[2]) ** 2
        crop = ndimage.binary_closing(crop, structure=ball <= closing_mm**2)
    crop = ndimage.binary_fill_holes(crop)
    pieces, _ = ndimage.label(crop)
    sizes = np.bincount(pieces.ravel())[1:]
    order = np.argsort(-sizes, kind="stable")
    voxel_mm3 = float(np.prod(geometry.spacing))
    dropped = tuple(float(sizes[index] * voxel_mm3) for index in order[1:])
    field_kji = ndimage.gaussian_filter((pieces == order[0] + 1).astype(np.float32), smoothing_mm / spacing_kji)
    start_ijk = np.array([box[2].start, box[1].start, box[0].start]) - pad[::-1]
    mesh = _contour(field_kji, geometry, start_ijk)
    if target_points is not None:
        mesh = decimate(mesh, target_points)
    return LabelSurface(mesh, dropped)


def piece_surfaces(
    labels: Volume, value: int, smoothing_mm: float = 0.8, min_volume_mm3: float = 50.0
) -> list[SurfaceMesh]:
    """One closed surface (LPS) per 6-connected piece of label ``value`` (e.g. each costal cartilage).

    Pieces smaller than ``min_volume_mm3`` (stray voxels) are left out; largest piece first.
    """
    pieces, count = ndimage.label(labels.array == value)
    if count == 0:
        raise ValueError(f"The label map has no voxels with label {value}.")
    geometry = labels.geometry
    sizes = np.bincount(pieces.ravel())[1:] * float(np.prod(geometry.spacing))
    surfaces = []
    for index in np.argsort(-sizes, kind="stable"):
        if sizes[index] < min_volume_mm3:
            break
        box = ndimage.find_objects((pieces == index + 1).astype(np.uint8))[0]
        start_ijk = np.array([box[2].start, box[1].start, box[0].start], dtype=float)
        crop = ImageGeometry(
            origin_lps=geometry.index_to_lps(start_ijk[None])[0],
            spacing=geometry.spacing,
            direction_lps=geometry.direction_lps,
            size=tuple(b.stop - b.start for b in box[::-1]),
        )
        piece = Volume((pieces[box] == index + 1).astype(np.uint8), crop)
        surfaces.append(surface_from_labels(piece, (1,), closing_mm=0.0, smoothing_mm=smoothing_mm).mesh)
    return surfaces


def _contour(field_kji: np.ndarray, geometry: ImageGeometry, start_ijk: np.ndarray) -> SurfaceMesh:
    image = vtk.vtkImageData()
    image.SetDimensions(field_kji.shape[2], field_kji.shape[1], field_kji.shape[0])
    # Spacing here, direction and origin afterwards: vtkImageData filters ignore a direction matrix.
    image.SetSpacing(*geometry.spacing)
    image.GetPointData().SetScalars(numpy_to_vtk(field_kji.ravel(), deep=True))
    contour = vtk.vtkFlyingEdges3D()
    contour.SetInputData(image)
    contour.SetValue(0, 0.5)
    contour.ComputeNormalsOff()
    contour.ComputeGradientsOff()
    contour.Update()
    mesh = SurfaceMesh.from_polydata(contour.GetOutput())
    origin = geometry.index_to_lps(start_ijk[None].astype(float))[0]
    return oriented_outward(mesh.with_points(origin + mesh.points_lps @ geometry.direction_lps.T))


def oriented_outward(mesh: SurfaceMesh) -> SurfaceMesh:
    """The mesh with its triangles wound so that normals point outward (a mirrored grid flips them)."""
    if mesh.signed_volume_mm3 >= 0:
        return mesh
    return replace(mesh, triangles=mesh.triangles[:, ::-1].copy())


def decimate(mesh: SurfaceMesh, target_points: int) -> SurfaceMesh:
    """About ``target_points`` points by quadric decimation (volume preserving); fewer points stay as they are."""
    if target_points < 100:
        raise ValueError(f"A sternum surface needs at least 100 points; {target_points} was asked.")
    if len(mesh.points_lps) <= target_points:
        return mesh
    decimation = vtk.vtkQuadricDecimation()
    decimation.SetInputData(mesh.to_polydata())
    # A closed triangle mesh has about twice as many triangles as points.
    decimation.SetTargetReduction(1.0 - target_points / len(mesh.points_lps))
    decimation.VolumePreservationOn()
    decimation.Update()
    result = oriented_outward(SurfaceMesh.from_polydata(decimation.GetOutput()))
    if not manifold_problems(result):
        return result
    # Quadric decimation can pinch thin parts; vtkDecimatePro can be told to keep the topology.
    preserving = vtk.vtkDecimatePro()
    preserving.SetInputData(mesh.to_polydata())
    preserving.SetTargetReduction(1.0 - target_points / len(mesh.points_lps))
    preserving.PreserveTopologyOn()
    preserving.SplittingOff()
    preserving.BoundaryVertexDeletionOff()
    preserving.Update()
    return oriented_outward(SurfaceMesh.from_polydata(preserving.GetOutput()))


def manifold_problems(mesh: SurfaceMesh) -> list[str]:
    """Why ``mesh`` is not a closed, manifold, one-piece surface (empty when it is)."""
    problems = []
    edges = np.sort(mesh.triangles[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), axis=1)
    _, counts = np.unique(edges, axis=0, return_counts=True)
    if np.any(counts == 1):
        problems.append(f"{int(np.sum(counts == 1))} boundary edges (the surface has holes)")
    if np.any(counts > 2):
        problems.append(f"{int(np.sum(counts > 2))} non-manifold edges (shared by more than two triangles)")
    connectivity = vtk.vtkPolyDataConnectivityFilter()
    connectivity.SetInputData(mesh.to_polydata())
    connectivity.SetExtractionModeToAllRegions()
    connectivity.Update()
    if connectivity.GetNumberOfExtractedRegions() > 1:
        problems.append(f"{connectivity.GetNumberOfExtractedRegions()} separate pieces")
    if len(np.unique(mesh.triangles)) < len(mesh.points_lps):
        problems.append(f"{len(mesh.points_lps) - len(np.unique(mesh.triangles))} points in no triangle")
    return problems


class SurfaceLocator:
    """Exact closest points on a mesh's triangles (vtkStaticCellLocator), built once per mesh."""

    def __init__(self, mesh: SurfaceMesh):
        self.mesh = mesh
        self._polydata = mesh.to_polydata()
        self._locator = vtk.vtkStaticCellLocator()
        self._locator.SetDataSet(self._polydata)
        self._locator.BuildLocator()

    def closest_points(self, points_lps: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Closest surface points (N, 3), their distances (N,) and triangle indices (N,)."""
        points_lps = np.asarray(points_lps, dtype=float)
        closest = np.empty_like(points_lps)
        distance2 = np.empty(len(points_lps))
        cells = np.empty(len(points_lps), dtype=np.int64)
        found = [0.0, 0.0, 0.0]
        cell, sub, d2 = vtk.reference(0), vtk.reference(0), vtk.reference(0.0)
        for n, point in enumerate(points_lps):
            self._locator.FindClosestPoint(point, found, cell, sub, d2)
            closest[n], cells[n], distance2[n] = found, cell.get(), d2.get()
        return closest, np.sqrt(distance2), cells

    def barycentric(self, points_lps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Triangle indices and barycentric weights (N, 3) of the closest surface points."""
        closest, _, cells = self.closest_points(points_lps)
        return cells, barycentric_weights(self.mesh, cells, closest)


def barycentric_weights(mesh: SurfaceMesh, triangles: np.ndarray, points_lps: np.ndarray) -> np.ndarray:
    """Barycentric weights (N, 3) of points lying on the given triangles."""
    a, b, c = (mesh.points_lps[mesh.triangles[triangles, k]] for k in range(3))
    v0, v1, v2 = b - a, c - a, points_lps - a
    d00, d01, d11 = (v0 * v0).sum(1), (v0 * v1).sum(1), (v1 * v1).sum(1)
    d20, d21 = (v2 * v0).sum(1), (v2 * v1).sum(1)
    denominator = d00 * d11 - d01 * d01
    v = (d11 * d20 - d01 * d21) / denominator
    w = (d00 * d21 - d01 * d20) / denominator
    return np.clip(np.column_stack([1.0 - v - w, v, w]), 0.0, 1.0)


def points_at(mesh: SurfaceMesh, triangles: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """LPS points at barycentric ``weights`` on ``triangles`` of ``mesh`` (any mesh with its topology)."""
    corners = mesh.points_lps[mesh.triangles[triangles]]  # (N, 3 corners, 3)
    return np.einsum("nc,ncd->nd", weights, corners)


def directed_distances(source: SurfaceMesh, target: SurfaceMesh) -> np.ndarray:
    """Distance (mm) from each point of ``source`` to the surface of ``target`` (vtkDistancePolyDataFilter)."""
    distance = vtk.vtkDistancePolyDataFilter()
    distance.SetInputData(0, source.to_polydata())
    distance.SetInputData(1, target.to_polydata())
    distance.SignedDistanceOff()
    distance.ComputeSecondDistanceOff()
    distance.Update()
    return vtk_to_numpy(distance.GetOutput().GetPointData().GetArray("Distance")).astype(float)


@dataclass(frozen=True)
class FitError:
    """Average symmetric surface distance and 95 % Hausdorff distance (max of both directions), mm.

    ``vertex_mm`` (V,): per vertex of the fitted mesh, the farthest reference-surface point for
    which it is the nearest vertex (its own distance where there is none): where the fit misses.
    """

    assd_mm: float
    hd95_mm: float
    vertex_mm: np.ndarray


def fit_error(mesh: SurfaceMesh, reference: SurfaceMesh) -> FitError:
    forward = directed_distances(mesh, reference)
    backward = directed_distances(reference, mesh)
    assd = float((forward.sum() + backward.sum()) / (len(forward) + len(backward)))
    hd95 = float(max(np.percentile(forward, 95), np.percentile(backward, 95)))
    vertex = forward.copy()
    np.maximum.at(vertex, cKDTree(mesh.points_lps).query(reference.points_lps)[1], backward)
    return FitError(assd, hd95, vertex)
