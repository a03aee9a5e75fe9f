"""The surface and the outline of a sternum segmentation, for landmark QA, snapping and pseudo-landmarks.

Everything here works on voxel arrays with their :class:`ImageGeometry` and on LPS points;
nothing depends on rendering or MRML. Any grid direction works (oblique, flipped, mirrored),
because every step happens in physical LPS millimetres.

- :class:`SurfaceIndex`: one mask's surface. A signed distance map (negative inside) near the
  surface, sampled with trilinear interpolation, plus the surface points (the midpoints of
  the faces between inside and outside voxels) in a KD-tree. Built once, then cheap to query.
- :class:`SternumOutline`: the closed rim curve of manubrium plus body, anticlockwise as seen
  from the front, with an arclength parametrisation.

The surface is the boundary of the union of inside voxel cubes: the signed distance of a
voxel centre is the distance to the nearest voxel cube of the other side, so the two voxel
centres either side of a face get -h/2 and +h/2, and the zero level passes through the face.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree
from SternumSSMLib.geometry import ImageGeometry

# Largest number of Newton steps when projecting a point onto the zero level of the distance map.
_PROJECTION_STEPS = 12
# Outline raster positions are whole multiples of this (2^-20 mm, about 1e-6 mm). A whole number
# of decimal voxel spacings is never an odd multiple of half of it, so rounding a voxel centre's
# position on a regular grid is stable against floating-point noise.
_QUANTUM_MM = 2.0**-20


@dataclass(frozen=True, eq=False)
class SurfaceIndex:
    """The surface of one binary mask: signed distances near it and its surface points (LPS).

    ``signed_distance_mm`` (float32, indexed [k, j, i]) lives on ``geometry``, a crop of the
    mask's grid around the mask with a margin; beyond that margin distances come from the
    nearest surface point instead. ``surface_points_lps`` are the midpoints of the voxel faces
    between inside and outside, ``face_axes`` the grid axis (0 i, 1 j, 2 k) each face is normal
    to. Build with :meth:`from_mask`.
    """

    geometry: ImageGeometry
    signed_distance_mm: np.ndarray
    surface_points_lps: np.ndarray
    face_axes: np.ndarray
    tree: cKDTree

    @classmethod
    def from_mask(cls, mask: np.ndarray, geometry: ImageGeometry, margin_mm: float = 10.0) -> SurfaceIndex:
        """Index the surface of ``mask`` (a boolean array [k, j, i] on ``geometry``).

        Distances are interpolated within ``margin_mm`` of the mask's bounding box.
        """
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != geometry.shape_kji:
            raise ValueError(f"Mask shape {mask.shape} does not match the geometry {geometry.shape_kji} (k, j, i).")
        if not mask.any():
            raise ValueError("The mask is empty: there is no surface to measure against.")
        crop, crop_geometry = crop_around(mask, geometry, mask, margin_mm)
        midpoints_ijk, face_axes = _face_midpoints_ijk(crop)
        surface_points = crop_geometry.index_to_lps(midpoints_ijk)
        return cls(
            geometry=crop_geometry,
            signed_distance_mm=_signed_distance(crop, crop_geometry.spacing),
            surface_points_lps=surface_points,
            face_axes=face_axes,
            tree=cKDTree(surface_points),
        )

    def signed_distance(self, points_lps: np.ndarray) -> np.ndarray:
        """Signed distance (mm, negative inside) of (N, 3) LPS points to the surface; NaN rows give NaN."""
        points_lps = np.atleast_2d(np.asarray(points_lps, dtype=float))
        result = np.full(len(points_lps), np.nan)
        defined = np.all(np.isfinite(points_lps), axis=1)
        index = self.geometry.lps_to_index(points_lps[defined])
        in_map = self.geometry.contains_index(index)
        values = np.empty(len(index))
        if in_map.any():
            values[in_map] = ndimage.map_coordinates(
                self.signed_distance_mm, index[in_map, ::-1].T, order=1, mode="nearest"
            )
        if (~in_map).any():
            # Beyond the margin every point is outside the mask.
            values[~in_map] = self.tree.query(points_lps[defined][~in_map])[0]
        result[defined] = values
        return result

    def nearest_surface_points(self, points_lps: np.ndarray, fixed_directions: np.ndarray | None = None) -> np.ndarray:
        """The nearest surface point (LPS) to each of (N, 3) LPS points; NaN rows stay NaN.

        Starts at the point itself (or, far away, at the nearest face midpoint) and follows
        the distance map's gradient onto its zero level, so the result lies on the surface
        to well within half a voxel. With ``fixed_directions`` ((N, 3) unit vectors), each
        point moves only at right angles to its direction (e.g. a curve's tangent, so that
        points keep their place along the curve) where the surface can be reached that way.

        Where the walk stalls (where the distance has no gradient, as in a joint space) or
        overshoots, the result is the exact closest point on the voxel faces instead
        (:meth:`closest_face_points`), in the plane at right angles to the fixed direction
        when the surface there is within a voxel of the closest point overall.
        """
        points_lps = np.atleast_2d(np.asarray(points_lps, dtype=float))
        result = np.full_like(points_lps, np.nan)
        defined = np.all(np.isfinite(points_lps), axis=1)
        if not defined.any():
            return result
        points = points_lps[defined]
        nearest_face = self.surface_points_lps[self.tree.query(points)[1]]
        near = self.geometry.contains_index(self.geometry.lps_to_index(points), margin=-1.0)
        start = np.where(near[:, None], points, nearest_face)
        fixed = None if fixed_directions is None else np.asarray(fixed_directions, dtype=float)[defined]
        projected = self._project(start, fixed)
        # The walk can stall (no gradient, e.g. in a joint space) or end across a thin plate.
        worse = np.linalg.norm(projected - points, axis=1) > np.linalg.norm(nearest_face - points, axis=1) + (
            self.geometry.spacing.max()
        )
        off = np.abs(self.signed_distance(projected)) > 0.25 * self.geometry.spacing.min()
        fallback = np.flatnonzero(worse | off)
        if len(fallback):
            closest, distance = self.closest_face_points(points[fallback])
            if fixed is not None:
                in_plane, plane_distance = self.closest_face_points(
                    points[fallback], fixed[fallback], reach_mm=distance + self.geometry.spacing.max()
                )
                found = np.isfinite(plane_distance)
                closest[found] = in_plane[found]
            projected[fallback] = closest
        result[defined] = projected
        return result

    def closest_face_points(
        self, points_lps: np.ndarray, plane_normals: np.ndarray | None = None, reach_mm: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The exact closest points (LPS) on the voxel faces to (N, 3) finite LPS points, and their distances.

        With ``plane_normals`` ((N, 3) unit vectors) only the part of the surface in the plane
        through each point at right angles to its normal counts, searched within ``reach_mm``
        ((N,) mm) of the point; rows with no such surface get NaN points and an infinite distance.
        """
        points_lps = np.atleast_2d(points_lps)
        closest = np.full(points_lps.shape, np.nan)
        distance = np.full(len(points_lps), np.inf)
        # A face's points lie within half its diagonal of its midpoint.
        half_diagonal = 0.5 * float(np.linalg.norm(self.geometry.spacing))
        if plane_normals is None:
            reach_mm = self.tree.query(points_lps)[0] + half_diagonal
        else:
            reach_mm = np.asarray(reach_mm, dtype=float) + half_diagonal
        for n, candidates in enumerate(self.tree.query_ball_point(points_lps, reach_mm)):
            faces = np.asarray(candidates, dtype=int)
            normal = None if plane_normals is None else plane_normals[n]
            on_faces = self._on_faces(points_lps[n], faces, normal)
            gaps = np.linalg.norm(on_faces - points_lps[n], axis=1)
            if np.isfinite(gaps).any():
                best = int(np.nanargmin(gaps))
                closest[n], distance[n] = on_faces[best], gaps[best]
        return closest, distance

    def _on_faces(self, point: np.ndarray, faces: np.ndarray, plane_normal: np.ndarray | None) -> np.ndarray:
        """For each face, its closest point to ``point`` (within the plane through ``point``
        at right angles to ``plane_normal``, when given; NaN where the plane misses the face)."""
        axes = self.face_axes[faces]
        centres = self.surface_points_lps[faces]
        # Each face spans +-half a voxel along the two grid axes other than its normal.
        axis_u, axis_v = (axes + 1) % 3, (axes + 2) % 3
        u, v = self.geometry.direction_lps.T[axis_u], self.geometry.direction_lps.T[axis_v]
        half_u, half_v = 0.5 * self.geometry.spacing[axis_u], 0.5 * self.geometry.spacing[axis_v]
        offset = point - centres
        a, b = np.sum(offset * u, axis=1), np.sum(offset * v, axis=1)
        if plane_normal is None:
            a, b = np.clip(a, -half_u, half_u), np.clip(b, -half_v, half_v)
            return centres + a[:, None] * u + b[:, None] * v
        # In face coordinates the plane is the line alpha a + beta b = gamma: the closest point of
        # the line to (a, b), then moved along the line into the face where the line crosses it.
        alpha, beta, gamma = u @ plane_normal, v @ plane_normal, offset @ plane_normal
        norm2 = alpha**2 + beta**2
        crossing = norm2 > 1e-12  # a face parallel to the plane meets it nowhere or everywhere
        with np.errstate(divide="ignore", invalid="ignore"):
            shift = (gamma - alpha * a - beta * b) / norm2
            a0, b0 = a + shift * alpha, b + shift * beta
            along_a, along_b = -beta / np.sqrt(norm2), alpha / np.sqrt(norm2)
            low, high = np.full(len(faces), -np.inf), np.full(len(faces), np.inf)
            for start, step, half in ((a0, along_a, half_u), (b0, along_b, half_v)):
                moving = np.abs(step) > 1e-12
                ends = np.sort(np.stack([(-half - start) / step, (half - start) / step]), axis=0)
                low = np.where(moving, np.maximum(low, ends[0]), np.where(np.abs(start) <= half, low, np.inf))
                high = np.where(moving, np.minimum(high, ends[1]), high)
            crossing &= low <= high
            along = np.clip(0.0, low, high)
        on_faces = centres + (a0 + along * along_a)[:, None] * u + (b0 + along * along_b)[:, None] * v
        on_faces[~crossing] = np.nan
        return on_faces

    def _project(self, points_lps: np.ndarray, fixed_directions: np.ndarray | None) -> np.ndarray:
        """Newton steps x <- x - f(x) g / |g|^2 on the interpolated signed distance f, g its gradient
        (without its component along ``fixed_directions``, when given)."""
        points = points_lps.copy()
        step = 0.5 * self.geometry.spacing.min()
        offsets = np.vstack([np.eye(3), -np.eye(3)]) * step
        for _ in range(_PROJECTION_STEPS):
            value = self.signed_distance(points)
            moving = np.abs(value) > 1e-3
            if not moving.any():
                break
            around = self.signed_distance((points[moving, None, :] + offsets[None]).reshape(-1, 3)).reshape(-1, 6)
            gradient = (around[:, :3] - around[:, 3:]) / (2.0 * step)
            if fixed_directions is not None:
                fixed = fixed_directions[moving]
                gradient -= np.sum(gradient * fixed, axis=1, keepdims=True) * fixed
            norm2 = np.sum(gradient**2, axis=1)
            usable = norm2 > 0.04
            update = np.zeros((int(moving.sum()), 3))
            update[usable] = (value[moving][usable] / norm2[usable])[:, None] * gradient[usable]
            points[moving] -= update
            if not usable.any():
                break
        return points


def crop_around(
    array: np.ndarray, geometry: ImageGeometry, mask: np.ndarray, margin_mm: float
) -> tuple[np.ndarray, ImageGeometry]:
    """``array`` cut to ``mask``'s bounding box plus ``margin_mm`` (at least 2 voxels), with its geometry.

    Both arrays are [k, j, i] on ``geometry``; the box may reach beyond the grid, where the
    crop is padded with zeros (False).
    """
    pad_kji = (np.ceil(margin_mm / geometry.spacing).astype(int) + 2)[::-1]
    occupied = [np.flatnonzero(np.any(mask, axis=tuple(a for a in range(3) if a != axis))) for axis in range(3)]
    lo_kji = np.array([o[0] for o in occupied]) - pad_kji
    hi_kji = np.array([o[-1] for o in occupied]) + pad_kji + 1
    crop = np.zeros(tuple(hi_kji - lo_kji), dtype=array.dtype)
    source_lo = np.maximum(lo_kji, 0)
    source_hi = np.minimum(hi_kji, array.shape)
    crop[tuple(slice(a - c, b - c) for a, b, c in zip(source_lo, source_hi, lo_kji, strict=True))] = array[
        tuple(slice(a, b) for a, b in zip(source_lo, source_hi, strict=True))
    ]
    crop_geometry = ImageGeometry(
        origin_lps=geometry.index_to_lps(lo_kji[::-1].astype(float)),
        spacing=geometry.spacing,
        direction_lps=geometry.direction_lps,
        size=tuple(crop.shape[::-1]),
    )
    return crop, crop_geometry


def _signed_distance(inside: np.ndarray, spacing_ijk: np.ndarray) -> np.ndarray:
    """Distance (mm) from each voxel centre to the nearest voxel cube of the other side; negative inside."""
    spacing_kji = spacing_ijk[::-1]
    result = np.zeros(inside.shape, dtype=np.float32)
    for region, sign in ((inside, -1.0), (~inside, 1.0)):
        # For each voxel of `region`, the index of the nearest voxel centre outside it.
        nearest = ndimage.distance_transform_edt(
            region, sampling=spacing_kji, return_distances=False, return_indices=True
        )
        squared = np.zeros(inside.shape, dtype=np.float32)
        for axis in range(3):
            shape = [1, 1, 1]
            shape[axis] = -1
            offset = np.abs(nearest[axis] - np.arange(inside.shape[axis]).reshape(shape)).astype(np.float32)
            squared += (np.maximum(offset - 0.5, 0.0) * np.float32(spacing_kji[axis])) ** 2
        result[region] = sign * np.sqrt(squared[region])
    return result


def _face_midpoints_ijk(inside: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(M, 3) continuous (i, j, k) indices of the faces between inside and outside voxels,
    and each face's normal as a grid axis (0 i, 1 j, 2 k)."""
    faces, axes = [], []
    for axis in range(3):
        change = np.diff(inside.astype(np.int8), axis=axis) != 0
        kji = np.argwhere(change).astype(float)
        kji[:, axis] += 0.5
        faces.append(kji[:, ::-1])
        axes.append(np.full(len(kji), 2 - axis))
    return np.concatenate(faces), np.concatenate(axes)


# --------------------------------------------------------------------------- outline


@dataclass(frozen=True, eq=False)
class SternumOutline:
    """The rim of manubrium plus body: a closed LPS curve, anticlockwise as seen from the front.

    The curve runs along the outline of the frontal projection at mid-thickness, laid on the
    surface and then smoothed over a voxel, so it stays within about a voxel of the surface
    (points placed along it are snapped afterwards). ``points_lps`` are evenly spaced by
    arclength (``arclength_mm[n]`` is the distance along the curve from point 0 to point n;
    the segment from the last point back to point 0 closes the loop). ``frame_lps`` rows are
    the frontal frame's axes: patient left, superior along the sternum, anterior;
    ``centre_lps`` is the mask's centroid.
    """

    points_lps: np.ndarray
    arclength_mm: np.ndarray
    length_mm: float
    centre_lps: np.ndarray
    frame_lps: np.ndarray
    tree: cKDTree

    def locate(self, points_lps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For (N, 3) LPS points: position along the outline (mm from point 0) and distance to it (mm).

        NaN rows give NaN for both.
        """
        points_lps = np.atleast_2d(np.asarray(points_lps, dtype=float))
        position = np.full(len(points_lps), np.nan)
        distance = np.full(len(points_lps), np.nan)
        defined = np.all(np.isfinite(points_lps), axis=1)
        if defined.any():
            distance[defined], nearest = self.tree.query(points_lps[defined])
            position[defined] = self.arclength_mm[nearest]
        return position, distance

    def points_at(self, positions_mm: np.ndarray) -> np.ndarray:
        """LPS points at the given positions along the outline (taken modulo its length)."""
        positions = np.mod(np.asarray(positions_mm, dtype=float), self.length_mm)
        closed = np.vstack([self.points_lps, self.points_lps[:1]])
        along = np.append(self.arclength_mm, self.length_mm)
        return np.column_stack([np.interp(positions, along, closed[:, axis]) for axis in range(3)])

    def tangents_at(self, positions_mm: np.ndarray) -> np.ndarray:
        """Unit tangents (LPS, pointing anticlockwise) of the outline at the given positions."""
        positions = np.asarray(positions_mm, dtype=float)
        half_step = self.length_mm / len(self.points_lps)
        tangents = self.points_at(positions + half_step) - self.points_at(positions - half_step)
        return tangents / np.linalg.norm(tangents, axis=1, keepdims=True)

    def forward_arc(self, start_mm: np.ndarray, end_mm: np.ndarray) -> np.ndarray:
        """Length (mm) of the anticlockwise arc from ``start_mm`` to ``end_mm``, in [0, length)."""
        return np.mod(np.asarray(end_mm, dtype=float) - np.asarray(start_mm, dtype=float), self.length_mm)

    @classmethod
    def from_mask(
        cls,
        mask: np.ndarray,
        geometry: ImageGeometry,
        surface: SurfaceIndex,
        bridge_mm: float = 3.0,
        step_mm: float = 0.5,
    ) -> SternumOutline:
        """Trace the outline of ``mask`` ([k, j, i] on ``geometry``) and lay it on ``surface``.

        1. Frontal frame: the mask's first principal axis, pointed superior, and the patient's
           left-right axis made orthogonal to it; the third axis points anterior.
        2. The voxel centres are projected onto the frontal plane and rasterised; gaps up to
           2 x ``bridge_mm`` wide (a manubriosternal joint space) are closed and holes filled.
        3. The projection's boundary is traced anticlockwise and smoothed.
        4. Each outline point is lifted to mid-thickness (the middle of the voxels that project
           near it) and moved onto ``surface``; the curve is resampled every ``step_mm``.
        """
        ijk = np.argwhere(mask)[:, ::-1].astype(float)
        if len(ijk) < 8:
            raise ValueError("The mask has too few voxels to trace an outline.")
        points = geometry.index_to_lps(ijk)
        centre = points.mean(axis=0)
        frame = _frontal_frame(points - centre)
        coordinates = (points - centre) @ frame.T  # columns: left, superior, anterior
        pixel = float(np.clip(geometry.spacing.min() / 2.0, 0.25, 1.0))
        outline_2d = _projected_outline(coordinates[:, :2], pixel, 0.5 * geometry.spacing.max(), bridge_mm)
        lifted = _lift_to_mid_thickness(outline_2d, coordinates, 2.0 * geometry.spacing.max())
        rim = surface.nearest_surface_points(centre + lifted @ frame)
        # Points on a voxel surface zigzag by up to a voxel; smoothing over a voxel keeps arclengths honest.
        rim = _smooth_closed(_resample_closed(rim, step_mm / 2.0), sigma_samples=2.0 * geometry.spacing.max() / step_mm)
        rim = _resample_closed(rim, step_mm)
        arclength = np.r_[0.0, np.cumsum(np.linalg.norm(np.diff(rim, axis=0), axis=1))]
        length = float(arclength[-1] + np.linalg.norm(rim[0] - rim[-1]))
        return cls(
            points_lps=rim,
            arclength_mm=arclength,
            length_mm=length,
            centre_lps=centre,
            frame_lps=frame,
            tree=cKDTree(rim),
        )


def _frontal_frame(centred_lps: np.ndarray) -> np.ndarray:
    """Rows: patient left, superior along the main axis, anterior (LPS unit vectors)."""
    # The scatter matrix of every voxel, not of a subsample: a subsample would depend on the array's axis order.
    long_axis = np.linalg.eigh(centred_lps.T @ centred_lps)[1][:, -1]
    if long_axis[2] < 0:
        long_axis = -long_axis
    left = np.array([1.0, 0.0, 0.0]) - long_axis[0] * long_axis
    if np.linalg.norm(left) < 0.3:
        raise ValueError("The mask's long axis runs left-right; it does not look like a sternum.")
    left /= np.linalg.norm(left)
    anterior = np.cross(left, long_axis)
    return np.vstack([left, long_axis, anterior])


def _projected_outline(points_2d: np.ndarray, pixel: float, footprint: float, bridge_mm: float) -> np.ndarray:
    """Anticlockwise boundary (M, 2) of the filled projection of 2D points, each a disk of radius ``footprint``.

    Each point falls into the raster cell centred nearest to it, counted in whole multiples of
    ``_QUANTUM_MM`` from the lowest point. A regular voxel grid seen along one of its axes puts
    whole rows of points exactly on cell edges; with integer arithmetic they fall into the same
    cell whatever the last-bit noise of the frame (BLAS kernel, world origin, array axis order).
    """
    pixel_steps = max(1, round(pixel / _QUANTUM_MM))
    pixel = pixel_steps * _QUANTUM_MM
    border = int(np.ceil((footprint + bridge_mm) / pixel)) + 4  # in pixels
    low = points_2d.min(axis=0)
    steps = np.rint((points_2d - low) / _QUANTUM_MM).astype(np.int64)
    cells = (steps + pixel_steps // 2) // pixel_steps + border
    shape = cells.max(axis=0)[::-1] + border + 1  # rows: superior
    hit = np.zeros(shape, dtype=bool)
    hit[cells[:, 1], cells[:, 0]] = True
    grown = ndimage.distance_transform_edt(~hit, sampling=pixel) <= footprint + bridge_mm
    region = ndimage.distance_transform_edt(grown, sampling=pixel) > bridge_mm
    components, count = ndimage.label(region)
    if count == 0:
        raise ValueError("The projected mask vanished; it is thinner than the outline's resolution.")
    sizes = np.bincount(components.ravel())[1:]
    region = ndimage.binary_fill_holes(components == 1 + int(np.argmax(sizes)))
    corners = _trace_boundary(region)
    # Cell c spans (c - border -/+ 1/2) pixels around the lowest point.
    dense = _resample_closed((corners - border - 0.5) * pixel + low, pixel / 2.0)
    return _smooth_closed(dense, sigma_samples=2.0)


def _trace_boundary(region: np.ndarray) -> np.ndarray:
    """Pixel-corner (x, y) = (column, row) vertices of the boundary of one filled 4-connected region.

    Boundary edges are oriented with the region on their left, so the loop runs anticlockwise
    in (x, y). A filled single region has no diagonal-only contacts, so every corner has one
    outgoing edge.
    """
    padded = np.pad(region, 1)
    inside = padded[1:-1, 1:-1]
    rows, cols = inside.shape
    edges = []
    # (neighbour outside, start corner offset, end corner offset), offsets as (dx, dy) from pixel (x, y).
    for dy, dx, start, end in (
        (-1, 0, (0, 0), (1, 0)),  # bottom edge, walked +x
        (1, 0, (1, 1), (0, 1)),  # top edge, walked -x
        (0, -1, (0, 1), (0, 0)),  # left edge, walked -y
        (0, 1, (1, 0), (1, 1)),  # right edge, walked +y
    ):
        neighbour = padded[1 + dy : 1 + dy + rows, 1 + dx : 1 + dx + cols]
        y, x = np.nonzero(inside & ~neighbour)
        edges.append(np.column_stack([x + start[0], y + start[1], x + end[0], y + end[1]]))
    edges = np.concatenate(edges)
    width = cols + 1
    following = dict(zip(edges[:, 1] * width + edges[:, 0], edges[:, 3] * width + edges[:, 2], strict=True))
    first = int(min(following))
    loop = [first]
    current = following[first]
    while current != first:
        loop.append(current)
        current = following[current]
        if len(loop) > len(following):
            raise RuntimeError("The outline trace did not close; the projected region is not a single piece.")
    loop = np.array(loop)
    return np.column_stack([loop % width, loop // width]).astype(float)


def _lift_to_mid_thickness(outline_2d: np.ndarray, coordinates: np.ndarray, radius: float) -> np.ndarray:
    """(M, 3) frame coordinates: each outline point at the middle of the voxels projecting within ``radius``."""
    tree = cKDTree(coordinates[:, :2])
    anterior = coordinates[:, 2]
    middle = np.empty(len(outline_2d))
    for n, neighbours in enumerate(tree.query_ball_point(outline_2d, radius)):
        if not neighbours:
            neighbours = [int(tree.query(outline_2d[n])[1])]
        values = anterior[neighbours]
        middle[n] = 0.5 * (values.min() + values.max())
    return np.column_stack([outline_2d, middle])


def _resample_closed(points: np.ndarray, step: float) -> np.ndarray:
    """A closed polyline resampled at (nearly) ``step`` spacing by arclength, starting at point 0."""
    closed = np.vstack([points, points[:1]])
    along = np.r_[0.0, np.cumsum(np.linalg.norm(np.diff(closed, axis=0), axis=1))]
    count = max(8, int(np.rint(along[-1] / step)))
    samples = np.linspace(0.0, along[-1], count, endpoint=False)
    return np.column_stack([np.interp(samples, along, closed[:, axis]) for axis in range(points.shape[1])])


def _smooth_closed(points: np.ndarray, sigma_samples: float) -> np.ndarray:
    return ndimage.gaussian_filter1d(points, sigma_samples, axis=0, mode="wrap")
