"""Dense correspondence: a template mesh warped onto each case, vertex for vertex.

Per case: the template's landmarks (the 34 protocol landmarks, pseudo-landmarks along the
rim and points on the faces) drive a 3D thin-plate spline (kernel r) from the template to
the case; every warped vertex then moves to the closest point *on* the case's
surface triangles (vtkStaticCellLocator), not to the nearest surface vertex. Optionally
trimesh's landmark-constrained non-rigid ICP (Amberg 2007) refines the warp before the
projection. All points are LPS millimetres.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import vtk
from scipy.interpolate import RBFInterpolator
from scipy.spatial import cKDTree
from SternumLandmarksLib.landmark_qa import LandmarkQAContext
from SternumLandmarksLib.pseudo_landmarks import pseudo_landmarks
from SternumLandmarksLib.surface import crop_around
from SternumSSMLib.anatomy import LandmarkProtocol, default_protocol, label_scheme
from SternumSSMLib.geometry import ImageGeometry, PointSet, Volume
from vtk.util.numpy_support import vtk_to_numpy

from .meshes import (
    FitError,
    LabelSurface,
    SurfaceLocator,
    SurfaceMesh,
    fit_error,
    manifold_problems,
    points_at,
    surface_from_labels,
)

# Margin (mm) kept around manubrium plus body when tracing its rim for pseudo-landmarks.
_OUTLINE_MARGIN_MM = 10.0
# Source landmarks closer than this (mm) count as one spot; the spline keeps the first.
_DUPLICATE_MM = 1e-3


class MissingLandmarksError(ValueError):
    """A case lacks protocol landmarks; the message names the case and the landmarks."""


@dataclass(frozen=True)
class SurfaceSettings:
    """How a case becomes a surface and landmark set; the same for every case of a model."""

    include_xiphoid: bool = False
    closing_mm: float = 2.0
    smoothing_mm: float = 0.8
    pseudo_per_segment: int = 2
    # Cases are measured against their surface at this many points (the full contour has ~20k).
    surface_points: int = 12000

    def label_values(self) -> tuple[int, ...]:
        names = ["Manubrium", "Sternal_body"] + (["Xiphoid"] if self.include_xiphoid else [])
        return tuple(label_scheme().by_name(name).value for name in names)


@dataclass(frozen=True)
class ShapeCase:
    """One case as it enters a model: its label map and its 34 anatomical landmarks (any system)."""

    case_id: str
    labels: Volume
    landmarks: PointSet


@dataclass(frozen=True, eq=False)
class PreparedCase:
    """A case's surface (LPS) and its correspondence landmarks (LPS): protocol order, then pseudo."""

    case_id: str
    surface: LabelSurface
    landmarks_lps: np.ndarray
    landmark_names: tuple[str, ...]

    @property
    def anatomical_lps(self) -> np.ndarray:
        return self.landmarks_lps[: len(default_protocol())]


def protocol_landmarks(points: PointSet, case_id: str, protocol: LandmarkProtocol | None = None) -> np.ndarray:
    """The protocol's landmarks in protocol order (LPS); missing or unplaced ones are an error naming them."""
    protocol = protocol or default_protocol()
    by_name = dict(zip(points.names, points.to("LPS").positions, strict=True))
    missing = [i for i in protocol.ids if i not in by_name or not np.all(np.isfinite(by_name[i]))]
    if missing:
        raise MissingLandmarksError(
            f"Case {case_id} lacks landmarks {', '.join(missing)}; place them (SternumLandmarks) or leave the case out."
        )
    return np.array([by_name[i] for i in protocol.ids])


def correspondence_landmarks(
    anatomical_lps: np.ndarray, context: LandmarkQAContext, surface: SurfaceMesh, per_segment: int
) -> tuple[np.ndarray, tuple[str, ...]]:
    """The 34 landmarks, ``per_segment`` rim pseudo-landmarks per segment, then face points (LPS), with names.

    Rim points alone lie near one bent plane, so a spline through them leaves the anterior and
    posterior faces free to shear (8 mm median on phantoms); :func:`face_landmarks` pins them.
    """
    protocol = context.protocol
    anatomical = PointSet(names=protocol.ids, positions=anatomical_lps, coordinate_system="LPS")
    pseudo = pseudo_landmarks(anatomical, context, per_segment)
    faces, face_names = face_landmarks(anatomical_lps, surface)
    return np.vstack([anatomical_lps, pseudo.positions, faces]), protocol.ids + pseudo.names + face_names


def face_landmarks(anatomical_lps: np.ndarray, surface: SurfaceMesh) -> tuple[np.ndarray, tuple[str, ...]]:
    """Points on the anterior and posterior faces, defined by the landmarks alone (LPS; NaN where a ray misses).

    For each right/left protocol pair from L03/L33 to L17/L19, and half-way between neighbouring
    pairs, and each of ``FACE_FRACTIONS`` of the way from right to left, a ray leaves that
    mid-thickness point along the local front normal (down the sternum x right-to-left, so it
    does not depend on the grid) and the point is where it first meets the surface, anteriorly
    ("A") and posteriorly ("P"). Names: "F03.5_50A" is half-way between the L03/L33 and L04/L32
    levels, midway across, anterior.
    """
    count = len(anatomical_lps)
    # From L03/L33 down: the chord between the superior corners (L02/L34) runs along the top edge,
    # where rays graze the surface and hit it anywhere.
    right = _with_half_steps(anatomical_lps[2 : count // 2])  # L03..L17, down the right margin
    left = _with_half_steps(anatomical_lps[count - 2 : count // 2 : -1])  # L33..L19, down the left margin
    middle = 0.5 * (right + left)
    down = np.gradient(middle, axis=0)
    across = left - right
    normal = np.cross(down, across)
    normal /= np.linalg.norm(normal, axis=1, keepdims=True)
    tree = vtk.vtkModifiedBSPTree()
    tree.SetDataSet(surface.to_polydata())
    tree.BuildLocator()
    points, names = [], []
    for pair in range(len(right)):
        for fraction in FACE_FRACTIONS:
            start = right[pair] + fraction * across[pair]
            for face, sign in (("A", 1.0), ("P", -1.0)):
                points.append(_first_hit(tree, start, start + sign * _FACE_RAY_MM * normal[pair]))
                names.append(f"F{pair / 2 + 3:04.1f}_{round(100 * fraction)}{face}")
    return np.array(points), tuple(names)


def _with_half_steps(margin: np.ndarray) -> np.ndarray:
    """The margin's landmarks with the midpoints between neighbours in between (twice the face levels)."""
    result = np.empty((2 * len(margin) - 1, 3))
    result[0::2] = margin
    result[1::2] = 0.5 * (margin[:-1] + margin[1:])
    return result


# Fractions of the way from the right to the left landmark of a pair where face points are taken.
FACE_FRACTIONS = (0.25, 0.5, 0.75)
_FACE_RAY_MM = 30.0


def _first_hit(tree: vtk.vtkModifiedBSPTree, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    hit, parameter, position = [0.0, 0.0, 0.0], vtk.reference(0.0), [0.0, 0.0, 0.0]
    found = tree.IntersectWithLine(start, end, 1e-6, parameter, position, hit, vtk.reference(0))
    return np.array(position) if found else np.full(3, np.nan)


def prepare_case(case: ShapeCase, settings: SurfaceSettings) -> PreparedCase:
    anatomical = protocol_landmarks(case.landmarks, case.case_id)
    surface = surface_from_labels(
        case.labels, settings.label_values(), settings.closing_mm, settings.smoothing_mm, settings.surface_points
    )
    # The rim of manubrium plus body, as the protocol defines it (the xiphoid never carries landmarks).
    union = np.isin(case.labels.array, [label_scheme().by_name(name).value for name in default_protocol().structures])
    crop, geometry = crop_around(union, case.labels.geometry, union, _OUTLINE_MARGIN_MM)
    context = LandmarkQAContext.from_mask(crop, geometry)
    landmarks, names = correspondence_landmarks(anatomical, context, surface.mesh, settings.pseudo_per_segment)
    return PreparedCase(case.case_id, surface, landmarks, names)


def mesh_mask(mesh: SurfaceMesh, spacing_mm: float = 1.0) -> tuple[np.ndarray, ImageGeometry]:
    """The inside of a closed mesh as a boolean [k, j, i] mask on an LPS-aligned grid (vtkPolyDataToImageStencil)."""
    lo = mesh.points_lps.min(axis=0) - 3 * spacing_mm
    size = np.ceil((mesh.points_lps.max(axis=0) + 3 * spacing_mm - lo) / spacing_mm).astype(int) + 1
    geometry = ImageGeometry(origin_lps=lo, spacing=np.full(3, spacing_mm), direction_lps=np.eye(3), size=tuple(size))
    stencil = vtk.vtkPolyDataToImageStencil()
    stencil.SetInputData(mesh.to_polydata())
    stencil.SetOutputOrigin(*lo)
    stencil.SetOutputSpacing(spacing_mm, spacing_mm, spacing_mm)
    stencil.SetOutputWholeExtent(0, size[0] - 1, 0, size[1] - 1, 0, size[2] - 1)
    image = vtk.vtkImageData()
    image.SetOrigin(*lo)
    image.SetSpacing(spacing_mm, spacing_mm, spacing_mm)
    image.SetDimensions(*size)
    image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    image.GetPointData().GetScalars().Fill(1)
    to_image = vtk.vtkImageStencil()
    to_image.SetInputData(image)
    to_image.SetStencilConnection(stencil.GetOutputPort())
    to_image.ReverseStencilOff()
    to_image.SetBackgroundValue(0)
    to_image.Update()
    mask = vtk_to_numpy(to_image.GetOutput().GetPointData().GetScalars()).reshape(size[::-1]).astype(bool)
    return mask, geometry


@dataclass(frozen=True, eq=False)
class Template:
    """The mesh every case is expressed in, and where its correspondence landmarks sit on it.

    Landmarks are stored as triangles and barycentric weights, so they can be read off any
    mesh with the template's topology (the mean, a mode, a case).
    """

    mesh: SurfaceMesh
    landmark_triangles: np.ndarray
    landmark_weights: np.ndarray
    landmark_names: tuple[str, ...]
    source: str

    @classmethod
    def from_landmarks(cls, mesh: SurfaceMesh, landmarks_lps: np.ndarray, names: tuple[str, ...], source: str):
        """Landmarks (LPS) onto their closest points on ``mesh``; undefined (NaN) ones stay undefined."""
        defined = np.all(np.isfinite(landmarks_lps), axis=1)
        triangles = np.zeros(len(landmarks_lps), dtype=np.int64)
        weights = np.full((len(landmarks_lps), 3), np.nan)
        triangles[defined], weights[defined] = SurfaceLocator(mesh).barycentric(landmarks_lps[defined])
        return cls(mesh, triangles, weights, tuple(names), source)

    def landmarks_on(self, points_lps: np.ndarray) -> np.ndarray:
        """The landmarks (LPS) on a mesh with the template's topology at ``points_lps``."""
        return points_at(self.mesh.with_points(points_lps), self.landmark_triangles, self.landmark_weights)


def user_template(mesh: SurfaceMesh, anatomical: PointSet, per_segment: int, source: str) -> Template:
    """A user's template mesh (e.g. an FE model's sternum) with its own 34 landmarks; its topology is kept.

    Pseudo-landmarks come from a voxelised copy of the mesh, as for the cases.
    """
    problems = manifold_problems(mesh)
    if problems:
        raise ValueError(
            f"Template {source} is not a closed manifold surface ({'; '.join(problems)}); "
            "repair it (e.g. in ANSA) first."
        )
    protocol = default_protocol()
    if set(anatomical.names[: len(protocol)]) != set(protocol.ids):
        raise ValueError(
            f"Template {source} landmarks {list(anatomical.names[:3])}... do not follow the protocol "
            f"'{protocol.name}' ({protocol.ids[0]}..{protocol.ids[-1]}); give its 34 landmarks with those names."
        )
    landmarks = protocol_landmarks(anatomical, source, protocol)
    mask, geometry = mesh_mask(mesh)
    context = LandmarkQAContext.from_mask(mask, geometry, protocol)
    all_landmarks, names = correspondence_landmarks(landmarks, context, mesh, per_segment)
    return Template.from_landmarks(mesh, all_landmarks, names, source)


def thin_plate_spline(source_lps: np.ndarray, target_lps: np.ndarray) -> RBFInterpolator:
    """3D thin-plate spline taking ``source`` landmarks onto ``target`` exactly; NaN rows are left out.

    The 3D thin-plate kernel is r (the biharmonic Green's function in 3D, as vtkThinPlateSplineTransform's
    "R" basis) plus an affine part: scipy's RBFInterpolator with kernel "linear" (-r) and degree 1,
    which solves the system with LAPACK, ~20x faster than VTK's own solver for 300 landmarks.
    """
    rows = np.all(np.isfinite(source_lps), axis=1) & np.all(np.isfinite(target_lps), axis=1)
    # Two source landmarks on one spot (rays meeting at a corner) would make the system singular.
    for _, later in cKDTree(source_lps[rows]).query_pairs(_DUPLICATE_MM, output_type="ndarray"):
        rows[np.flatnonzero(rows)[later]] = False
    return RBFInterpolator(source_lps[rows], target_lps[rows] - source_lps[rows], kernel="linear", degree=1)


def warp(spline: RBFInterpolator, points_lps: np.ndarray) -> np.ndarray:
    return points_lps + spline(points_lps)


@dataclass(frozen=True, eq=False)
class Correspondence:
    """A case in template topology: ``points_lps`` (V, 3) in the case's own LPS frame, and its fit error."""

    case_id: str
    points_lps: np.ndarray
    fit_error: FitError


def correspond(
    template: Template,
    template_points_lps: np.ndarray,
    case: PreparedCase,
    locator: SurfaceLocator | None = None,
    nricp: bool = False,
    exact: bool = True,
) -> Correspondence:
    """Warp the template (at ``template_points_lps``) onto ``case``: TPS, optional NRICP, closest point.

    ``exact=False`` moves each vertex to the nearest *vertex* of the case surface instead of the
    closest point on its triangles (for the benchmark that measures what that costs).
    """
    source = template.landmarks_on(template_points_lps)
    target = case.landmarks_lps
    if len(source) != len(target):
        raise ValueError(
            f"Case {case.case_id} has {len(target)} correspondence landmarks, the template {len(source)}; "
            "build both with the same pseudo-landmark setting."
        )
    warped = warp(thin_plate_spline(source, target), template_points_lps)
    if nricp:
        warped = _nricp(template, warped, case, target)
    locator = locator or SurfaceLocator(case.surface.mesh)
    if exact:
        projected = locator.closest_points(warped)[0]
    else:
        vertices = case.surface.mesh.points_lps
        projected = vertices[cKDTree(vertices).query(warped)[1]]
    mesh = template.mesh.with_points(projected)
    return Correspondence(case.case_id, projected, fit_error(mesh, case.surface.mesh))


def _nricp(template: Template, warped: np.ndarray, case: PreparedCase, target: np.ndarray) -> np.ndarray:
    """trimesh's landmark-constrained non-rigid ICP (Amberg et al. 2007) from the TPS result."""
    import trimesh
    from trimesh.registration import nricp_amberg

    rows = np.all(np.isfinite(target), axis=1) & np.all(np.isfinite(template.landmark_weights), axis=1)
    source_mesh = trimesh.Trimesh(warped, template.mesh.triangles, process=False)
    target_mesh = trimesh.Trimesh(case.surface.mesh.points_lps, case.surface.mesh.triangles, process=False)
    # Few, stiff steps: the TPS has done the large deformation; this only pulls the surface in.
    steps = [[0.02, 10, 0.5, 5], [0.007, 5, 0.5, 5], [0.002, 2, 0.5, 5]]
    return np.asarray(
        nricp_amberg(
            source_mesh,
            target_mesh,
            source_landmarks=(template.landmark_triangles[rows], template.landmark_weights[rows]),
            target_positions=target[rows],
            steps=steps,
            distance_threshold=5.0,
        ),
        dtype=float,
    )
