"""report.md of a model folder, with its quality curves and ±2 SD renders of the first modes (matplotlib, headless).

Renders are orthographic views of the model frame (LPS): from the front (patient's right on
the viewer's left, superior up) and from the patient's left (anterior to the right), each
triangle shaded by its normal and coloured by how far the shape is from the mean.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.collections import PolyCollection

from .meshes import SurfaceMesh
from .model import ShapeModel

RENDERED_MODES = 3
# (horizontal axis, vertical axis, depth axis towards the viewer) in LPS, with signs.
VIEWS = {"front": ((0, 1.0), (2, 1.0), (1, -1.0)), "left side": ((1, -1.0), (2, 1.0), (0, 1.0))}


def render_mesh(axis, mesh: SurfaceMesh, view: str, colour_mm: np.ndarray, limit_mm: float) -> None:
    """Draw ``mesh`` on a matplotlib ``axis``: painter's algorithm, Lambert shading, colour per vertex (mm)."""
    (h, hs), (v, vs), (d, ds) = VIEWS[view]
    points = mesh.points_lps
    corners = points[mesh.triangles]
    normals = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
    facing = ds * normals[:, d]
    visible = facing > 0
    order = np.argsort(ds * corners[visible][:, :, d].mean(axis=1), kind="stable")
    polygons = np.stack([hs * corners[visible][:, :, h], vs * corners[visible][:, :, v]], axis=2)[order]
    value = colour_mm[mesh.triangles[visible]].mean(axis=1)[order] / max(limit_mm, 1e-9)
    colours = plt.get_cmap("coolwarm")(0.5 + 0.5 * np.clip(value, -1, 1))
    colours[:, :3] *= (0.35 + 0.65 * facing[visible][order])[:, None]
    axis.add_collection(PolyCollection(polygons, facecolors=colours, edgecolors="none"))
    axis.set_xlim(polygons[..., 0].min() - 5, polygons[..., 0].max() + 5)
    axis.set_ylim(polygons[..., 1].min() - 5, polygons[..., 1].max() + 5)
    axis.set_aspect("equal")
    axis.axis("off")


def signed_displacement(mesh: SurfaceMesh, reference: SurfaceMesh) -> np.ndarray:
    """Per vertex, the displacement from ``reference`` along the reference's outward vertex normal (mm)."""
    corners = reference.points_lps[reference.triangles]
    face_normals = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    normals = np.zeros_like(reference.points_lps)
    for k in range(3):
        np.add.at(normals, reference.triangles[:, k], face_normals)
    normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
    return ((mesh.points_lps - reference.points_lps) * normals).sum(axis=1)


def render_modes(model: ShapeModel, path: Path, modes: int = RENDERED_MODES, sd: float = 2.0) -> Path:
    """A grid: one row per mode, columns -sd / mean / +sd from the front, then the same from the side."""
    modes = min(modes, model.mode_count)
    mean = model.shape()
    figure, axes = plt.subplots(modes, 6, figsize=(13, 3.6 * modes), squeeze=False)
    for row in range(modes):
        shapes = [model.shape(model.mode_scores(row + 1, f)) for f in (-sd, 0.0, sd)]
        displacement = [signed_displacement(shape, mean) for shape in shapes]
        limit = max(float(np.abs(np.concatenate(displacement)).max()), 1e-6)
        titles = (f"-{sd:g} SD", "mean", f"+{sd:g} SD")
        for column, (view, (title, shape, colour)) in enumerate(
            (view, triple) for view in VIEWS for triple in zip(titles, shapes, displacement, strict=True)
        ):
            render_mesh(axes[row, column], shape, view, colour, limit)
            axes[row, column].set_title(f"mode {row + 1}: {title}, {view}", fontsize=8)
    figure.suptitle(f"Modes ±{sd:g} SD (colour: mm outward from the mean, blue inward)", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path


def render_quality(model: ShapeModel, path: Path) -> Path:
    count = len(model.generalisation_mm)
    modes = np.arange(1, count + 1)
    figure, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    axes[0].plot(modes, 100 * model.compactness[:count], "o-")
    axes[0].axhline(100 * model.settings.variance, color="grey", linestyle=":")
    axes[0].set(xlabel="modes", ylabel="cumulative variance (%)", title="Compactness")
    axes[1].plot(modes, model.generalisation_mm, "o-")
    axes[1].set(xlabel="modes", ylabel="mm", title="Generalisation (leave-one-out)")
    axes[2].plot(modes, model.specificity_mm, "o-")
    axes[2].set(xlabel="modes", ylabel="mm", title="Specificity")
    for axis in axes:
        axis.axvline(model.mode_count, color="grey", linestyle="--", linewidth=0.8)
        axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path


def report_text(model: ShapeModel) -> str:
    k = model.mode_count
    lines = [
        "# Sternum shape model",
        "",
        f"- cases: {len(model.cases)} used, {len(model.skipped)} skipped; template: {model.template.source} "
        f"({len(model.template.mesh.points_lps)} points, {len(model.template.mesh.triangles)} triangles)",
        f"- alignment: GPA, {'shape (scaled)' if model.settings.scaling else 'size and shape (not scaled)'}, "
        f"converged in {model.gpa_iterations} iterations; no reflections",
        f"- modes: {k} explain {100 * model.compactness[k - 1]:.1f} % of the variance "
        f"(asked: {100 * model.settings.variance:.0f} %)",
        "- coordinates: model frame = LPS axes of the template case, centred on its centroid; mm",
        "",
        "![quality](quality.png)",
        "",
        "| modes | compactness | generalisation (mm) | specificity (mm) |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {m + 1} | {model.compactness[m]:.3f} | {model.generalisation_mm[m]:.2f} | {model.specificity_mm[m]:.2f} |"
        for m in range(len(model.generalisation_mm))
    ]
    lines += [
        "",
        "![modes](modes.png)",
        "",
        "## Cases",
        "",
        "| case | ASSD (mm) | HD95 (mm) | Mahalanobis | LOO (mm) |",
    ]
    lines += ["|---|---|---|---|---|"]
    lines += [
        f"| {c.case_id} | {c.assd_mm:.2f} | {c.hd95_mm:.2f} | {c.mahalanobis:.2f} | {c.loo_error_mm:.2f} |"
        for c in model.cases
    ]
    lines += ["", "## Flagged cases", ""]
    lines += [f"- {case_id}: {flag}" for case_id, flag in model.flagged] or ["none"]
    lines += ["", "## Skipped cases", ""]
    lines += [f"- {case_id}: {reason}" for case_id, reason in model.skipped.items()] or ["none"]
    if model.regression is not None:
        lines += ["", "## Regression of scores on covariates", "", "| mode | R² |", "|---|---|"]
        lines += [f"| {m + 1} | {r:.2f} |" for m, r in enumerate(model.regression.r_squared)]
    lines += ["", "## Provenance", "", "```", *(f"{key}: {value}" for key, value in model.provenance.items()), "```"]
    return "\n".join(lines) + "\n"


def write_report(model: ShapeModel, folder: Path) -> Path:
    render_quality(model, folder / "quality.png")
    render_modes(model, folder / "modes.png")
    path = folder / "report.md"
    path.write_text(report_text(model))
    return path
