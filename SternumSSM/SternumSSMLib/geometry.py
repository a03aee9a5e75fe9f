"""Spatial metadata that travels with arrays and points, with its coordinate system named.

Conventions used across the extension:
- Arrays are indexed ``[k, j, i]`` (slice, row, column), as SimpleITK's
  ``GetArrayFromImage`` and Slicer's ``arrayFromVolume`` return them.
- ``ImageGeometry`` is stored in LPS, the convention of ITK, SimpleITK, NRRD and DICOM.
  ``ijk_to_ras()`` gives the matrix Slicer's ``SetIJKToRASMatrix`` expects.
- RAS = diag(-1, -1, 1) * LPS for points and for the rows of direction matrices.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import permutations, product
from typing import Literal

import numpy as np
import SimpleITK as sitk

CoordinateSystem = Literal["LPS", "RAS"]
LPS_RAS_FLIP = np.diag([-1.0, -1.0, 1.0])
_LPS_RAS_SIGNS = np.array([-1.0, -1.0, 1.0])


def convert_points(points: np.ndarray, source: CoordinateSystem, target: CoordinateSystem) -> np.ndarray:
    """Convert (N, 3) points between LPS and RAS; NaN rows stay NaN."""
    points = np.asarray(points, dtype=float)
    for system in (source, target):
        if system not in ("LPS", "RAS"):
            raise ValueError(f"Unknown coordinate system {system!r}; use 'LPS' or 'RAS'.")
    # Element-wise, so a partly missing row keeps its known coordinates.
    return points.copy() if source == target else points * _LPS_RAS_SIGNS


_AXIS_LETTERS = {"L": (0, 1.0), "R": (0, -1.0), "P": (1, 1.0), "A": (1, -1.0), "S": (2, 1.0), "I": (2, -1.0)}


def orientation_direction(code: str) -> np.ndarray:
    """LPS direction matrix for a 3-letter axis code naming where i, j, k increase.

    'LPS' is ITK's identity, 'RAS' flips i and j, 'PIR' is a sagittal acquisition, and
    so on: the 48 signed axis permutations.
    """
    code = code.upper()
    axes = [_AXIS_LETTERS.get(letter) for letter in code]
    if len(code) != 3 or None in axes or len({axis for axis, _ in axes}) != 3:
        raise ValueError(f"Orientation {code!r} must name three different axes from L/R, P/A, S/I, e.g. 'LPS'.")
    direction = np.zeros((3, 3))
    for column, (row, sign) in enumerate(axes):
        direction[row, column] = sign
    return direction


def all_orientation_codes() -> list[str]:
    """The 48 axis codes ('LPS', 'LPI', ..., 'SAR')."""
    pairs = (("L", "R"), ("P", "A"), ("S", "I"))
    codes = []
    for order in permutations(range(3)):
        for choice in product((0, 1), repeat=3):
            codes.append("".join(pairs[axis][choice[axis]] for axis in order))
    return codes


def rotation_matrix(axis: np.ndarray, angle_deg: float) -> np.ndarray:
    """Rotation about ``axis`` by ``angle_deg`` (right-handed), for oblique grids."""
    axis = np.asarray(axis, dtype=float)
    axis = axis / np.linalg.norm(axis)
    angle = np.radians(angle_deg)
    cross = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * cross + (1 - np.cos(angle)) * cross @ cross


@dataclass(frozen=True)
class ImageGeometry:
    """A voxel grid in LPS: ``x_lps = origin_lps + direction_lps @ (spacing * [i, j, k])``.

    ``size`` and ``spacing`` are in (i, j, k) order; columns of ``direction_lps`` are the
    LPS directions of the i, j and k axes.
    """

    origin_lps: np.ndarray
    spacing: np.ndarray
    direction_lps: np.ndarray
    size: tuple[int, int, int]

    def __post_init__(self) -> None:
        object.__setattr__(self, "origin_lps", np.asarray(self.origin_lps, dtype=float).reshape(3))
        object.__setattr__(self, "spacing", np.asarray(self.spacing, dtype=float).reshape(3))
        object.__setattr__(self, "direction_lps", np.asarray(self.direction_lps, dtype=float).reshape(3, 3))
        object.__setattr__(self, "size", tuple(int(n) for n in self.size))
        if np.any(self.spacing <= 0) or not np.all(np.isfinite(self.spacing)):
            raise ValueError(f"Voxel spacing must be positive and finite, got {self.spacing.tolist()}.")
        if not np.allclose(self.direction_lps.T @ self.direction_lps, np.eye(3), atol=1e-5):
            raise ValueError("The direction matrix must be orthonormal (a rotation, possibly with flips).")

    @property
    def shape_kji(self) -> tuple[int, int, int]:
        return self.size[::-1]

    def ijk_to_lps(self) -> np.ndarray:
        """4x4 matrix from voxel index (i, j, k, 1) to LPS millimetres."""
        matrix = np.eye(4)
        matrix[:3, :3] = self.direction_lps * self.spacing
        matrix[:3, 3] = self.origin_lps
        return matrix

    def ijk_to_ras(self) -> np.ndarray:
        """4x4 matrix from voxel index (i, j, k, 1) to RAS millimetres (Slicer's IJKToRAS)."""
        flip = np.eye(4)
        flip[:3, :3] = LPS_RAS_FLIP
        return flip @ self.ijk_to_lps()

    def index_to_lps(self, ijk: np.ndarray) -> np.ndarray:
        """Continuous (N, 3) indices in (i, j, k) order to LPS points."""
        ijk = np.asarray(ijk, dtype=float)
        return ijk @ (self.direction_lps * self.spacing).T + self.origin_lps

    def lps_to_index(self, points_lps: np.ndarray) -> np.ndarray:
        """LPS points to continuous (i, j, k) indices."""
        points_lps = np.asarray(points_lps, dtype=float)
        return ((points_lps - self.origin_lps) @ self.direction_lps) / self.spacing

    def contains_index(self, ijk: np.ndarray, margin: float = 0.0) -> np.ndarray:
        """Whether continuous indices lie inside the grid (voxel centres 0..n-1, plus margin)."""
        ijk = np.atleast_2d(ijk)
        upper = np.asarray(self.size) - 1 + margin
        return np.all((ijk >= -margin) & (ijk <= upper), axis=1)

    def corners_lps(self) -> np.ndarray:
        """The 8 outermost voxel centres in LPS."""
        ni, nj, nk = (n - 1 for n in self.size)
        corners = np.array([[i, j, k] for i in (0, ni) for j in (0, nj) for k in (0, nk)], dtype=float)
        return self.index_to_lps(corners)

    @classmethod
    def from_sitk(cls, image: sitk.Image) -> ImageGeometry:
        return cls(
            origin_lps=image.GetOrigin(),
            spacing=image.GetSpacing(),
            direction_lps=np.array(image.GetDirection()).reshape(3, 3),
            size=image.GetSize(),
        )

    def copy_to_sitk(self, image: sitk.Image) -> None:
        if tuple(image.GetSize()) != self.size:
            raise ValueError(f"Image size {image.GetSize()} does not match the geometry size {self.size}.")
        image.SetOrigin(self.origin_lps.tolist())
        image.SetSpacing(self.spacing.tolist())
        image.SetDirection(self.direction_lps.ravel().tolist())

    def same_grid(self, other: ImageGeometry, tolerance_mm: float = 1e-4) -> bool:
        """True when both geometries place every voxel at the same point."""
        return self.size == other.size and np.allclose(self.corners_lps(), other.corners_lps(), atol=tolerance_mm)


@dataclass(frozen=True)
class Volume:
    """An image or label array (indexed [k, j, i]) with its geometry."""

    array: np.ndarray
    geometry: ImageGeometry

    def __post_init__(self) -> None:
        if self.array.ndim != 3:
            raise ValueError(f"A volume must be 3D, got an array of shape {self.array.shape}.")
        if tuple(self.array.shape) != self.geometry.shape_kji:
            raise ValueError(
                f"Array shape {self.array.shape} (k, j, i) does not match geometry size {self.geometry.size} (i, j, k)."
            )

    def to_sitk(self) -> sitk.Image:
        image = sitk.GetImageFromArray(self.array)
        self.geometry.copy_to_sitk(image)
        return image

    @classmethod
    def from_sitk(cls, image: sitk.Image) -> Volume:
        if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
            raise ValueError(
                f"Expected a 3D single-component image, got {image.GetDimension()}D with "
                f"{image.GetNumberOfComponentsPerPixel()} components."
            )
        return cls(array=sitk.GetArrayFromImage(image), geometry=ImageGeometry.from_sitk(image))


def reindexed(volume: Volume, code: str) -> Volume:
    """``volume`` re-indexed so that its new i, j, k axes run along the old ones that ``code`` names.

    ``code`` is read relative to the current index axes, as if they were L, P, S: "LPS" changes
    nothing, "PLS" swaps i and j, "RPS" reverses i. Every voxel keeps its LPS position and
    value, so anything physical computed from the result must equal that of ``volume``.
    """
    signed = orientation_direction(code)
    old_axes = np.argmax(np.abs(signed), axis=0)  # new index axis c runs along old axis old_axes[c]
    signs = signed[old_axes, np.arange(3)]
    # Arrays are [k, j, i]: new axis c sits at array position 2 - c.
    array = np.transpose(volume.array, [2 - old_axes[2 - position] for position in range(3)])
    for axis in np.flatnonzero(signs < 0):
        array = np.flip(array, axis=2 - axis)
    geometry = volume.geometry
    first_voxel = np.zeros(3)
    first_voxel[old_axes] = np.where(signs > 0, 0, np.asarray(geometry.size)[old_axes] - 1)
    return Volume(
        np.ascontiguousarray(array),
        ImageGeometry(
            origin_lps=geometry.index_to_lps(first_voxel[None])[0],
            spacing=geometry.spacing[old_axes],
            direction_lps=geometry.direction_lps[:, old_axes] * signs,
            size=tuple(int(geometry.size[axis]) for axis in old_axes),
        ),
    )


def nearest_lps_axes(geometry: ImageGeometry) -> tuple[tuple[int, int, int], tuple[bool, bool, bool]]:
    """For each LPS axis (x, y, z): which index axis (i, j, k) is closest to it, and whether it runs backwards."""
    direction = geometry.direction_lps
    order = np.argmax(np.abs(direction), axis=1)
    if len(set(order.tolist())) != 3:
        raise ValueError("The volume is too oblique to tell its axes apart; resample it to an axis-aligned grid.")
    flips = tuple(bool(direction[row, order[row]] < 0) for row in range(3))
    return tuple(int(o) for o in order), flips


def lps_order_code(geometry: ImageGeometry) -> str:
    """The :func:`reindexed` code that makes i, j, k run along the L, P, S axes they are closest to, increasing:
    every storage of the same voxels (axes swapped or reversed) re-indexes to the same array."""
    order, flips = nearest_lps_axes(geometry)
    letters = (("L", "R"), ("P", "A"), ("S", "I"))
    return "".join(letters[order[lps]][int(flips[lps])] for lps in range(3))


def slices_before_reindexing(
    slices: tuple[slice, slice, slice], code: str, shape_kji: tuple[int, ...]
) -> tuple[slice, slice, slice]:
    """[k, j, i] slices of ``reindexed(volume, code)`` as slices of ``volume`` (of array shape ``shape_kji``):
    the same voxels."""
    signed = orientation_direction(code)
    old_axes = np.argmax(np.abs(signed), axis=0)
    result: list[slice] = [slice(None)] * 3
    for new_axis in range(3):
        old_axis = int(old_axes[new_axis])
        part, size = slices[2 - new_axis], shape_kji[2 - old_axis]
        forward = signed[old_axis, new_axis] > 0
        result[2 - old_axis] = part if forward else slice(size - part.stop, size - part.start)
    return tuple(result)


@dataclass(frozen=True)
class PointSet:
    """Named points in one stated coordinate system. Missing points are NaN rows."""

    names: tuple[str, ...]
    positions: np.ndarray
    coordinate_system: CoordinateSystem
    descriptions: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        positions = np.asarray(self.positions, dtype=float).reshape(-1, 3)
        object.__setattr__(self, "positions", positions)
        object.__setattr__(self, "names", tuple(self.names))
        if len(self.names) != len(positions):
            raise ValueError(f"{len(self.names)} names for {len(positions)} points.")
        if self.descriptions and len(self.descriptions) != len(positions):
            raise ValueError(f"{len(self.descriptions)} descriptions for {len(positions)} points.")
        if self.coordinate_system not in ("LPS", "RAS"):
            raise ValueError(f"Unknown coordinate system {self.coordinate_system!r}; use 'LPS' or 'RAS'.")

    @property
    def defined(self) -> np.ndarray:
        """Boolean mask of points that have a position."""
        return np.all(np.isfinite(self.positions), axis=1)

    def to(self, coordinate_system: CoordinateSystem) -> PointSet:
        return PointSet(
            names=self.names,
            positions=convert_points(self.positions, self.coordinate_system, coordinate_system),
            coordinate_system=coordinate_system,
            descriptions=self.descriptions,
        )
