"""Headless QA picture of a CT with its segments and landmarks (matplotlib, no OpenGL needed).

Panels: a shaded surface view of the labels seen from the front, with numbered landmarks,
then axial and sagittal CT slices with segment outlines. Everything is first resampled to
an LPS-aligned grid, so any input orientation renders the same way: patient's right on the
viewer's left, superior at the top.
"""

from __future__ import annotations

from collections.abc import Sequence
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
    dpi: float = 110,
    caption: str = "",
    highlight: Volume | None = None,
    markers: Sequence[tuple[Sequence[float], str, str]] | None = None,
    focus_lps: Sequence[float] | None = None,
) -> Path:
    """Write a PNG with a frontal surface view and three slices; landmarks may be LPS or RAS.

    ``low_confidence`` (one bool per landmark) draws those points in orange with a "?".
    Optional extras (none changes the picture when left out): ``dpi`` of the PNG; ``caption``,
    lines of text below the legend; ``highlight``, a mask (nonzero voxels, on the labels' grid)
    outlined in magenta, e.g. voxels a correction changed; ``markers``, extra points as (LPS position, text,
    colour) drawn as crosses; ``focus_lps``, an LPS point the three slices pass through instead
    of the sternum's middle.
    """
    ct = resample_to_lps_axes(image, spacing_mm, is_label=False)
    lab = resample_to_lps_axes(labels, spacing_mm, is_label=True)
    geometry = ct.geometry
    marked = None
    if highlight is not None:
        if not highlight.geometry.same_grid(labels.geometry):
            raise ValueError("The highlight mask must be on the label map's voxel grid.")
        flagged = Volume((highlight.array != 0).astype(np.uint8), highlight.geometry)
        marked = resample_to_lps_axes(flagged, spacing_mm, is_label=True).array
    extra = None
    if markers:
        extra = (
            geometry.lps_to_index(np.array([np.asarray(m[0], float) for m in markers]).reshape(-1, 3)),
            [m[1] for m in markers],
            [m[2] for m in markers],
        )
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
    if focus_lps is not None:
        focus = geometry.lps_to_index(np.asarray(focus_lps, float).reshape(1, 3))[0][::-1]
        anchor = np.clip(np.rint(focus), 0, np.array(lab.array.shape) - 1).astype(int)

    cmap = _label_colormap()
    caption_lines = caption.splitlines() if caption else []
    # Caption text needs this many inches below the legend; the panels keep their size.
    caption_inches = 0.25 * len(caption_lines) + 0.2 if caption_lines else 0.0
    fig, axes = plt.subplots(2, 2, figsize=(13, 12 + caption_inches))
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
    if marked is not None and marked.any():
        seen = marked.any(axis=1)[z0 : z1 + 1, x0 : x1 + 1][::-1]
        if seen.any():
            axes[0, 0].imshow(np.ma.masked_where(~seen, seen.astype(float)), cmap=ListedColormap(["magenta"]),
                              alpha=0.45, interpolation="nearest")
    if extra is not None:
        _marker_scatter(axes[0, 0], extra[0][:, 0] - x0, (z1 - z0) - (extra[0][:, 2] - z0), extra[1], extra[2])
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
        _slice_panel(axis, ct.array, lab.array, fixed, int(anchor[fixed]), flip, cmap, points, marked, extra)
        axis.set_title(name, color="white")

    handles = [plt.Line2D([], [], color=c.color, lw=6, label=f"{c.value} {c.name}") for c in label_scheme().classes]
    handles.append(plt.Line2D([], [], color="red", marker="o", lw=0, label="landmarks (L01-L34)"))
    if low_confidence is not None and np.any(low_confidence):
        handles.append(plt.Line2D([], [], color="orange", marker="o", lw=0, label="low confidence (n?)"))
    if marked is not None:
        handles.append(plt.Line2D([], [], color="magenta", lw=2, label="highlighted voxels"))
    if not caption_lines:
        fig.legend(handles=handles, loc="lower center", ncol=5, frameon=False, labelcolor="white")
        if title:
            fig.suptitle(title, color="white")
        fig.tight_layout(rect=(0, 0.04, 1, 0.97))
    else:
        height = 12 + caption_inches
        bottom = caption_inches / height
        fig.legend(handles=handles, loc="lower center", bbox_to_anchor=(0.5, bottom), ncol=len(handles),
                   frameon=False, labelcolor="white")
        fig.text(0.01, 0.1 / height, "\n".join(caption_lines), color="white", family="monospace", fontsize=12,
                 va="bottom", ha="left")
        if title:
            fig.suptitle(title, color="white")
        fig.tight_layout(rect=(0, bottom + 0.48 / height, 1, 1 - 0.36 / height))
    output = Path(output)
    with atomic_output_path(output, overwrite=overwrite) as temporary:
        fig.savefig(temporary, dpi=dpi, facecolor="black", format="png")
    plt.close(fig)
    return output


def _marker_scatter(axis, xs, ys, texts, colors) -> None:
    """Crosses with their texts; texts go right of crosses right of the markers' middle, left of the others,
    so that two markers close together stay readable."""
    axis.scatter(xs, ys, s=60, c=colors, marker="X", edgecolors="white", linewidths=0.6, zorder=4)
    middle = float(np.mean(xs))
    for text, x, y, color in zip(texts, xs, ys, colors, strict=True):
        right = x >= middle
        axis.annotate(text, (x, y), color=color, fontsize=9, xytext=(6 if right else -6, 4), zorder=4,
                      textcoords="offset points", ha="left" if right else "right")


def _slice_panel(axis, ct, labels, fixed: int, index: int, flip: bool, cmap, points, marked=None, extra=None) -> None:
    """One CT slice (array axis ``fixed`` at ``index``) with segment outlines and nearby landmarks.

    ``marked``: a highlight mask on the same grid, outlined in magenta; ``extra``: marker points
    (indices, texts, colours), drawn when near the slice.
    """
    image, label = np.take(ct, index, axis=fixed), np.take(labels, index, axis=fixed)
    rows, columns = (a for a in range(3) if a != fixed)
    if flip:
        image, label = image[::-1], label[::-1]
    axis.imshow(image, cmap="gray", vmin=-400, vmax=900, interpolation="bilinear")
    axis.contour(label, levels=np.arange(0.5, 5), colors=[cmap(v) for v in range(1, 5)], linewidths=1.0)
    if marked is not None:
        chosen = np.take(marked, index, axis=fixed)
        chosen = chosen[::-1] if flip else chosen
        if chosen.any():
            axis.imshow(np.ma.masked_where(chosen == 0, chosen), cmap=ListedColormap(["magenta"]), alpha=0.45,
                        interpolation="nearest")
            axis.contour(chosen, levels=[0.5], colors="magenta", linewidths=1.2)
    if extra is not None:
        near = np.abs(extra[0][:, 2 - fixed] - index) < 4
        if near.any():
            xs, ys = extra[0][near, 2 - columns], extra[0][near, 2 - rows]
            if flip:
                ys = ct.shape[rows] - 1 - ys
            _marker_scatter(axis, xs, ys, [t for t, n in zip(extra[1], near, strict=True) if n],
                            [c for c, n in zip(extra[2], near, strict=True) if n])
    if points is not None and len(points):
        # Points are (i, j, k) = (x, y, z) indices; array axis a is point column 2 - a.
        near = np.abs(points[:, 2 - fixed] - index) < 4
        xs, ys = points[near, 2 - columns], points[near, 2 - rows]
        if flip:
            ys = ct.shape[rows] - 1 - ys
        axis.scatter(xs, ys, s=14, c="red", edgecolors="white", linewidths=0.5)
