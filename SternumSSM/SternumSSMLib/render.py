"""Headless QA picture of a CT with its segments and landmarks (matplotlib, no OpenGL needed).

Panels: a shaded surface view of the labels seen from the front, with numbered landmarks,
then axial and sagittal CT slices with segment outlines. Everything is first resampled to
an LPS-aligned grid, so any input orientation renders the same way: patient's right on the
viewer's left, superior at the top.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import SimpleITK as sitk
from matplotlib.colors import ListedColormap
from scipy import ndimage

from .anatomy import label_scheme
from .atomic import atomic_output_path
from .geometry import ImageGeometry, PointSet, Volume


def resample_to_lps_axes(volume: Volume, spacing_mm: float, is_label: bool) -> Volume:
    """Resample onto an identity-direction grid covering the volume (LPS), for display."""
    geometry = volume.geometry
    corners = geometry.corners_lps()
    lo, hi = corners.min(axis=0), corners.max(axis=0)
    size = np.ceil((hi - lo) / spacing_mm).astype(int) + 1
    target = ImageGeometry(origin_lps=lo, spacing=[spacing_mm] * 3, direction_lps=np.eye(3), size=tuple(size))
    reference = sitk.Image(target.size, sitk.sitkUInt8)
    target.copy_to_sitk(reference)
    interpolator = sitk.sitkNearestNeighbor if is_label else sitk.sitkLinear
    default = 0 if is_label else -1024
    resampled = sitk.Resample(volume.to_sitk(), reference, sitk.Transform(), interpolator, default)
    return Volume(sitk.GetArrayFromImage(resampled), target)


def _label_colormap() -> ListedColormap:
    scheme = label_scheme()
    colors = np.zeros((max(scheme.values) + 1, 4))
    for segment_class in scheme.classes:
        colors[segment_class.value, :3] = segment_class.color
        colors[segment_class.value, 3] = 1.0
    return ListedColormap(colors)


def frontal_surface(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First label hit looking from anterior (-y) along +y, and a Lambert shading of that surface.

    ``labels`` is indexed [z, y, x] on an LPS-aligned grid. Returns (label image, shade),
    both indexed [z, x].
    """
    hit = labels > 0
    any_hit = hit.any(axis=1)
    depth = np.where(any_hit, hit.argmax(axis=1), labels.shape[1]).astype(float)
    first = np.take_along_axis(labels, depth.clip(max=labels.shape[1] - 1).astype(int)[:, None, :], axis=1)[:, 0, :]
    first = np.where(any_hit, first, 0)
    # Smoothing hides the voxel staircase that a tilted surface leaves in a depth map.
    background = depth[any_hit].max() if any_hit.any() else 0.0
    smooth_depth = ndimage.gaussian_filter(np.where(any_hit, depth, background), 1.5)
    dz, dx = np.gradient(smooth_depth)
    normal = np.stack([-dx, -np.ones_like(dx), -dz])
    normal /= np.linalg.norm(normal, axis=0)
    light = np.array([-0.35, -1.0, 0.45])
    light /= np.linalg.norm(light)
    shade = np.clip(np.einsum("c...,c->...", normal, light), 0.15, 1.0)
    return first, shade


def render_case(
    image: Volume,
    labels: Volume,
    landmarks: PointSet | None,
    output: Path | str,
    title: str = "",
    spacing_mm: float = 1.0,
    overwrite: bool = True,
    low_confidence: np.ndarray | None = None,
) -> Path:
    """Write a PNG with a frontal surface view and three slices; landmarks may be LPS or RAS.

    ``low_confidence`` (one bool per landmark) draws those points in orange with a "?".
    """
    ct = resample_to_lps_axes(image, spacing_mm, is_label=False)
    lab = resample_to_lps_axes(labels, spacing_mm, is_label=True)
    geometry = ct.geometry
    points = None
    if landmarks is not None:
        lps = landmarks.to("LPS")
        points = geometry.lps_to_index(lps.positions[lps.defined])
        point_numbers = [i + 1 for i, ok in enumerate(lps.defined) if ok]
        doubtful = np.zeros(len(lps.names), bool) if low_confidence is None else np.asarray(low_confidence, bool)
        point_colors = np.where(doubtful[lps.defined], "orange", "red")
        point_texts = [f"{n}?" if doubtful[n - 1] else str(n) for n in point_numbers]

    foreground = np.argwhere(lab.array > 0)
    if len(foreground) == 0:
        raise ValueError("The label map is empty; there is nothing to render.")
    sternum_voxels = np.argwhere((lab.array > 0) & (lab.array < 4))
    anchor = np.median(sternum_voxels if len(sternum_voxels) else foreground, axis=0).astype(int)

    cmap = _label_colormap()
    fig, axes = plt.subplots(2, 2, figsize=(13, 12))
    fig.patch.set_facecolor("black")
    for axis in axes.ravel():
        axis.set_facecolor("black")
        axis.set_xticks([])
        axis.set_yticks([])

    first, shade = frontal_surface(lab.array)
    rgb = cmap(first)[..., :3] * shade[..., None]
    rgb[first == 0] = 0.0
    z0, z1 = np.nonzero((first > 0).any(axis=1))[0][[0, -1]]
    x0, x1 = np.nonzero((first > 0).any(axis=0))[0][[0, -1]]
    axes[0, 0].imshow(rgb[z0 : z1 + 1, x0 : x1 + 1][::-1], interpolation="bilinear")
    if points is not None and len(points):
        px, pz = points[:, 0] - x0, (z1 - z0) - (points[:, 2] - z0)
        axes[0, 0].scatter(px, pz, s=14, c=point_colors, edgecolors="white", linewidths=0.5, zorder=3)
        for text, x, z in zip(point_texts, px, pz, strict=True):
            label_style = {"color": "white", "fontsize": 6, "xytext": (3, 2), "textcoords": "offset points"}
            axes[0, 0].annotate(text, (x, z), **label_style)
    axes[0, 0].set_title("3D surface, anterior view", color="white")

    # (panel, title, array axis [z, y, x] held fixed, whether to flip so superior is at the top)
    views = [
        (axes[0, 1], "Axial (patient right on the left)", 0, False),
        (axes[1, 0], "Coronal through the sternum", 1, True),
        (axes[1, 1], "Sagittal midline (anterior on the left)", 2, True),
    ]
    for axis, name, fixed, flip in views:
        _slice_panel(axis, ct.array, lab.array, fixed, int(anchor[fixed]), flip, cmap, points)
        axis.set_title(name, color="white")

    handles = [plt.Line2D([], [], color=c.color, lw=6, label=f"{c.value} {c.name}") for c in label_scheme().classes]
    handles.append(plt.Line2D([], [], color="red", marker="o", lw=0, label="landmarks (L01-L34)"))
    if low_confidence is not None and np.any(low_confidence):
        handles.append(plt.Line2D([], [], color="orange", marker="o", lw=0, label="low confidence (n?)"))
    fig.legend(handles=handles, loc="lower center", ncol=5, frameon=False, labelcolor="white")
    if title:
        fig.suptitle(title, color="white")
    fig.tight_layout(rect=(0, 0.04, 1, 0.97))
    output = Path(output)
    with atomic_output_path(output, overwrite=overwrite) as temporary:
        fig.savefig(temporary, dpi=110, facecolor="black", format="png")
    plt.close(fig)
    return output


def _slice_panel(axis, ct, labels, fixed: int, index: int, flip: bool, cmap, points) -> None:
    """One CT slice (array axis ``fixed`` at ``index``) with segment outlines and nearby landmarks."""
    image, label = np.take(ct, index, axis=fixed), np.take(labels, index, axis=fixed)
    rows, columns = (a for a in range(3) if a != fixed)
    if flip:
        image, label = image[::-1], label[::-1]
    axis.imshow(image, cmap="gray", vmin=-400, vmax=900, interpolation="bilinear")
    axis.contour(label, levels=np.arange(0.5, 5), colors=[cmap(v) for v in range(1, 5)], linewidths=1.0)
    if points is not None and len(points):
        # Points are (i, j, k) = (x, y, z) indices; array axis a is point column 2 - a.
        near = np.abs(points[:, 2 - fixed] - index) < 4
        xs, ys = points[near, 2 - columns], points[near, 2 - rows]
        if flip:
            ys = ct.shape[rows] - 1 - ys
        axis.scatter(xs, ys, s=14, c="red", edgecolors="white", linewidths=0.5)
