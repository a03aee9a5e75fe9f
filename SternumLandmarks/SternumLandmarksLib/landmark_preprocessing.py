"""From a label map to the landmark network's input, and coordinate-space augmentation.

The network sees the binary mask of manubrium plus sternal body resampled onto a grid of
isotropic voxels, centred on the mask's bounding box: aligned with LPS (the study), or turned
onto the sternum's own axes (``SCNConfig.grid_frame``). Optionally
(``SCNConfig.ct_margin_mm``) a second channel holds the CT on the same grid, windowed to
[0, 1] and kept only within that margin of the mask, where the costal cartilages show the
notches that the mask alone outlines only faintly. Because the grid's frame is
found in physical LPS millimetres whatever the scan's direction, an oblique or flipped scan
gives the same input as an axial one. Grid indices are continuous (k, j, i) voxel coordinates
along (head-foot, posterior, left): index ``(k, j, i)`` sits at LPS
``origin + direction @ (spacing * (i, j, k))``.

Augmentation draws one affine transform, resamples the mask through it once, and maps the
landmark coordinates through the exact inverse, so the target heatmaps are rendered at
exactly the right place. The study warped its 34 heatmaps instead: measured in
``bench/bench_landmark_augmentation.py``, that is about 24 times slower per sample, lowers
the peaks by about 4% and moves them by about 0.06 mm (median) on the demo's 2 mm grid.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk
from scipy import ndimage
from SternumSSMLib.anatomy import label_scheme
from SternumSSMLib.geometry import ImageGeometry, Volume

from .scn_config import AugmentationConfig, SCNConfig

MASK_STRUCTURES = ("Manubrium", "Sternal_body")


class EmptyMaskError(ValueError):
    """The segmentation holds no manubrium and no sternal body."""


class FieldOfViewError(ValueError):
    """The manubrium and body mask does not fit into the landmark network's grid."""


def sternum_mask(labels: Volume, smallest_fraction: float = 0.1) -> np.ndarray:
    """Boolean [k, j, i] mask of manubrium plus sternal body, from the anatomy's label values.

    Pieces smaller than ``smallest_fraction`` of the largest are dropped: a stray island of a
    predicted segmentation (post-processing keeps islands that touch the scan boundary) would
    otherwise stretch the bounding box the grid is centred on. The manubrium and body are each
    far above that fraction, joined or not.
    """
    scheme = label_scheme()
    values = [scheme.by_name(name).value for name in MASK_STRUCTURES]
    mask = np.isin(labels.array, values)
    pieces, count = ndimage.label(mask)
    if count > 1:
        sizes = np.bincount(pieces.ravel())[1:]
        keep = np.flatnonzero(sizes >= smallest_fraction * sizes.max()) + 1
        mask = np.isin(pieces, keep)
    return mask


@dataclass(frozen=True)
class NetworkGrid:
    """The isotropic grid the network works on; ``shape_kji`` is the array shape.

    ``direction_lps`` holds the grid's i, j and k axes as LPS unit columns (a rotation).
    """

    origin_lps: np.ndarray
    spacing_mm: float
    shape_kji: tuple[int, int, int]
    direction_lps: np.ndarray = field(default_factory=lambda: np.eye(3))

    def index_to_lps(self, kji: np.ndarray) -> np.ndarray:
        """Continuous (k, j, i) grid indices, shape (N, 3), to LPS millimetres."""
        kji = np.asarray(kji, float).reshape(-1, 3)
        return self.origin_lps + self.spacing_mm * kji[:, ::-1] @ self.direction_lps.T

    def lps_to_index(self, points_lps: np.ndarray) -> np.ndarray:
        """LPS millimetres, shape (N, 3), to continuous (k, j, i) grid indices."""
        points_lps = np.asarray(points_lps, float).reshape(-1, 3)
        return ((points_lps - self.origin_lps) @ self.direction_lps / self.spacing_mm)[:, ::-1]

    @property
    def geometry(self) -> ImageGeometry:
        return ImageGeometry(
            origin_lps=self.origin_lps,
            spacing=(self.spacing_mm,) * 3,
            direction_lps=self.direction_lps,
            size=self.shape_kji[::-1],
        )


def sternum_frame(points_lps: np.ndarray) -> np.ndarray:
    """Rotation whose columns (LPS) run along the sternum: k along the long axis of ``points_lps``
    (towards the head), i as close to patient left as that allows, j = k x i (towards posterior)."""
    centred = points_lps - points_lps.mean(axis=0)
    long_axis = np.linalg.eigh(centred.T @ centred)[1][:, -1]
    long_axis *= np.sign(long_axis[2]) or 1.0
    left = np.array([1.0, 0.0, 0.0]) - long_axis[0] * long_axis
    left /= np.linalg.norm(left)
    return np.column_stack([left, np.cross(long_axis, left), long_axis])


def network_grid(labels: Volume, config: SCNConfig) -> NetworkGrid:
    """The grid for this case: centred on the bounding box of the manubrium and body mask, in the
    frame ``config.grid_frame`` names (LPS axes, or the sternum's own).

    Raises EmptyMaskError when there is neither manubrium nor body, and FieldOfViewError when
    the mask is larger than the grid.
    """
    mask = sternum_mask(labels)
    if not mask.any():
        raise EmptyMaskError(
            "The segmentation has no manubrium and no sternal body, so there is nothing to place landmarks on; "
            "segment the CT first (SternumSSM) or paint these segments in the Segment Editor."
        )
    # Voxel centres in LPS, not the index box, so an oblique scan gives the same grid as an axial one.
    points = labels.geometry.index_to_lps(np.argwhere(mask)[:, ::-1].astype(float))
    direction = sternum_frame(points) if config.grid_frame == "sternum" else np.eye(3)
    in_frame = points @ direction
    centre = direction @ ((in_frame.min(axis=0) + in_frame.max(axis=0)) / 2.0)
    half_extent = (np.array(config.grid_shape_kji[::-1], float) - 1.0) / 2.0 * config.spacing_mm
    mask_extent = np.ptp(in_frame, axis=0)
    if np.any(mask_extent > 2.0 * half_extent):
        raise FieldOfViewError(
            "The manubrium and sternal body span {} mm (left x posterior x head-foot, {} frame) but the landmark "
            "model's grid holds only {} mm; check the segmentation for leaks into other bones (a sternum is about "
            "150-200 mm long), or use a model trained with a larger grid_shape_kji.".format(
                " x ".join(f"{value:.0f}" for value in mask_extent),
                config.grid_frame,
                " x ".join(f"{value:.0f}" for value in 2.0 * half_extent),
            )
        )
    return NetworkGrid(
        origin_lps=centre - direction @ half_extent,
        spacing_mm=config.spacing_mm,
        shape_kji=config.grid_shape_kji,
        direction_lps=direction,
    )


def _resample_to_grid(array: np.ndarray, geometry: ImageGeometry, grid: NetworkGrid, outside: float) -> np.ndarray:
    image = sitk.GetImageFromArray(np.asarray(array, np.float32))
    geometry.copy_to_sitk(image)
    reference = sitk.Image([int(size) for size in grid.shape_kji[::-1]], sitk.sitkFloat32)
    grid.geometry.copy_to_sitk(reference)
    resampled = sitk.Resample(image, reference, sitk.Transform(), sitk.sitkLinear, outside, sitk.sitkFloat32)
    return sitk.GetArrayFromImage(resampled)


def resample_mask(labels: Volume, grid: NetworkGrid) -> np.ndarray:
    """The manubrium and body mask on ``grid`` as float32 [k, j, i] in [0, 1] (linear interpolation)."""
    return _resample_to_grid(sternum_mask(labels), labels.geometry, grid, 0.0)


class CTMismatchError(ValueError):
    """The CT given for the landmark network does not cover the segmentation it belongs to."""


def ct_channel(ct: Volume, mask_on_grid: np.ndarray, grid: NetworkGrid, config: SCNConfig) -> np.ndarray:
    """The CT on ``grid`` windowed to [0, 1] by ``config.ct_window_hu``, zero beyond ``ct_margin_mm`` of the mask."""
    if ct.array.ndim != 3 or not np.isfinite(ct.array).all():
        raise CTMismatchError("The CT for the landmark network must be one 3D scalar volume without NaN voxels.")
    low, high = config.ct_window_hu
    hu = _resample_to_grid(ct.array, ct.geometry, grid, low)
    window = np.clip((hu - low) / (high - low), 0.0, 1.0)
    distance_mm = ndimage.distance_transform_edt(mask_on_grid < 0.5) * grid.spacing_mm
    return (window * (distance_mm <= config.ct_margin_mm)).astype(np.float32)


@dataclass(frozen=True)
class Augmentation:
    """An affine map from output grid index to input grid index: ``input = matrix @ output + offset``.

    Both in (k, j, i) order. ``image`` resamples an array through it once; ``points`` maps
    input-grid coordinates to output-grid coordinates with the exact inverse.
    """

    matrix: np.ndarray
    offset: np.ndarray

    def image(self, array: np.ndarray, order: int = 1) -> np.ndarray:
        return ndimage.affine_transform(array, self.matrix, self.offset, order=order, mode="constant", cval=0.0)

    def points(self, kji: np.ndarray) -> np.ndarray:
        kji = np.asarray(kji, float).reshape(-1, 3)
        return (np.linalg.solve(self.matrix, (kji - self.offset).T)).T

    @classmethod
    def identity(cls) -> Augmentation:
        return cls(np.eye(3), np.zeros(3))


def random_augmentation(
    rng: np.random.Generator, shape_kji: tuple[int, int, int], settings: AugmentationConfig
) -> Augmentation:
    """A random rotation (about a random axis), isotropic scale and translation about the grid centre."""
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    angle = np.deg2rad(rng.uniform(-settings.rotation_deg, settings.rotation_deg))
    cross = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    rotation = np.eye(3) + np.sin(angle) * cross + (1 - np.cos(angle)) * cross @ cross
    scale = rng.uniform(*settings.scale_range)
    translation = rng.uniform(-settings.translation_voxels, settings.translation_voxels, size=3)
    centre = (np.array(shape_kji, float) - 1.0) / 2.0
    # Output voxel o samples input voxel centre + (R / s)(o - centre) + t: the anatomy grows by s.
    matrix = rotation / scale
    return Augmentation(matrix=matrix, offset=centre - matrix @ centre + translation)


@dataclass(frozen=True)
class PreparedCase:
    """One case on its network grid: the input channels [c, k, j, i] (mask first, then the CT when the
    config asks for it) and the landmarks as grid indices (NaN = missing)."""

    case_id: str
    grid: NetworkGrid
    channels: np.ndarray
    landmarks_kji: np.ndarray

    @property
    def mask(self) -> np.ndarray:
        return self.channels[0]


def prepare_case(
    case_id: str, labels: Volume, landmarks_lps: np.ndarray | None, config: SCNConfig, ct: Volume | None = None
) -> PreparedCase:
    """Grid, input channels and (when given) landmark grid indices for one case; landmarks in LPS mm.

    ``ct`` (the scan the labels were made on, any geometry covering them) is needed when
    ``config.ct_margin_mm`` > 0 and ignored otherwise.
    """
    grid = network_grid(labels, config)
    kji = np.full((0, 3), np.nan) if landmarks_lps is None else grid.lps_to_index(landmarks_lps)
    channels = [resample_mask(labels, grid)]
    if config.input_channels == 2:
        if ct is None:
            raise CTMismatchError(
                f"Case {case_id}: this landmark model reads the CT next to the mask (ct_margin_mm "
                f"{config.ct_margin_mm}); give the CT the segmentation was made on."
            )
        channels.append(ct_channel(ct, channels[0], grid, config))
    return PreparedCase(case_id=case_id, grid=grid, channels=np.stack(channels), landmarks_kji=kji)
