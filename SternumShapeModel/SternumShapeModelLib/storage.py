"""The model folder: written whole or not at all, never over an existing model, and read back.

Layout::

    model.npz         template topology and ids, mean, modes, variances, cases (model frame + own LPS frames)
    mean.vtk, .stl    the mean shape (model frame, LPS mm)
    scores.csv        per case: scores, fit error, Mahalanobis distance, leave-one-out error, flags
    quality.csv       per number of modes: compactness, generalisation (mm), specificity (mm)
    model.json        settings, template, skipped and flagged cases, regression, provenance
    report.md + PNGs  quality curves and ±2 SD renders of the first modes

Covariates are never written per case; only the regression's coefficients are kept.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import uuid
from pathlib import Path

import numpy as np
from SternumSSMLib.atomic import check_output_folder, fsync_directory

from .correspondence import Template
from .mesh_io import write_mesh
from .meshes import SurfaceMesh
from .model import BuildSettings, CaseResult, ShapeModel
from .statistics import PCA, Regression

MODEL_NPZ = "model.npz"
MODEL_JSON = "model.json"
SCHEMA = "sternum-ssm-shape-model/1"


def check_new_model_folder(folder: Path | str) -> Path:
    """The folder a new model may be written to; an existing non-empty folder is refused (never overwritten)."""
    folder = Path(folder).absolute()
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise FileExistsError(
            f"{folder} already exists and is not an empty folder; a model folder is never overwritten. "
            "Choose a new folder name."
        )
    check_output_folder(folder.parent)
    return folder


def write_model_folder(model: ShapeModel, folder: Path | str, with_report: bool = True) -> Path:
    """Write the model folder beside its final name, then rename it into place (atomic; no partial folder)."""
    folder = check_new_model_folder(folder)
    staging = folder.with_name(f".{folder.name}.{uuid.uuid4().hex[:8]}.partial")
    staging.mkdir()
    try:
        _write_contents(model, staging)
        if with_report:
            from .report import write_report

            write_report(model, staging)
        for path in staging.iterdir():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
        if folder.exists():  # an empty folder: the rename below replaces it only if it is still empty
            folder.rmdir()
        os.rename(staging, folder)
        fsync_directory(folder.parent)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return folder


def _write_contents(model: ShapeModel, folder: Path) -> None:
    template, cases = model.template, model.cases
    arrays = {
        "template_points_lps": template.mesh.points_lps,
        "triangles": template.mesh.triangles,
        "node_ids": template.mesh.node_ids,
        "element_ids": template.mesh.element_ids,
        "landmark_triangles": template.landmark_triangles,
        "landmark_weights": template.landmark_weights,
        "landmark_names": np.array(template.landmark_names),
        "mean": model.pca.mean,
        "modes": model.pca.modes,
        "variances": model.pca.variances,
        "case_ids": np.array([c.case_id for c in cases]),
        "case_points_lps": np.array([c.points_lps for c in cases]),
        "case_transforms": np.array([c.transform for c in cases]),
        "scores": np.array([c.scores for c in cases]),
        "case_metrics": np.array([[c.assd_mm, c.hd95_mm, c.mahalanobis, c.loo_error_mm] for c in cases]),
        "case_vertex_error_mm": np.array([c.vertex_error_mm for c in cases], dtype=np.float32),
        "compactness": model.compactness,
        "generalisation_mm": model.generalisation_mm,
        "specificity_mm": model.specificity_mm,
    }
    if model.regression is not None:
        arrays["regression_coefficients"] = model.regression.coefficients
        arrays["regression_r_squared"] = model.regression.r_squared
    np.savez_compressed(folder / MODEL_NPZ, **arrays)
    write_mesh(model.shape(), folder / "mean.vtk")
    write_mesh(model.shape(), folder / "mean.stl")
    (folder / "scores.csv").write_text(scores_csv(model))
    (folder / "quality.csv").write_text(quality_csv(model))
    description = {
        "schema": SCHEMA,
        "coordinates": "model frame: LPS axes of the template case, centred on its centroid; millimetres",
        "mode_count": model.mode_count,
        "gpa_iterations": model.gpa_iterations,
        "settings": model.settings.to_dict(),
        "template": template.source,
        "skipped": model.skipped,
        "flagged": [{"case_id": case_id, "flag": flag} for case_id, flag in model.flagged],
        "dropped_volumes_mm3": {c.case_id: list(c.dropped_volumes_mm3) for c in cases if c.dropped_volumes_mm3},
        "case_flags": {c.case_id: list(c.flags) for c in cases},
        "regression_covariates": list(model.regression.covariates) if model.regression else None,
        "provenance": model.provenance,
    }
    (folder / MODEL_JSON).write_text(json.dumps(description, indent=1) + "\n")


def scores_csv(model: ShapeModel) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    modes = [f"mode_{m + 1}" for m in range(model.mode_count)]
    writer.writerow(["case_id", *modes, "assd_mm", "hd95_mm", "mahalanobis", "loo_error_mm", "flags"])
    for c in model.cases:
        metrics = [c.assd_mm, c.hd95_mm, c.mahalanobis, c.loo_error_mm]
        writer.writerow([c.case_id, *(f"{v:.6g}" for v in (*c.scores, *metrics)), " | ".join(c.flags)])
    return buffer.getvalue()


def quality_csv(model: ShapeModel) -> str:
    lines = ["modes,compactness,generalisation_mm,specificity_mm"]
    for m in range(len(model.generalisation_mm)):
        lines.append(
            f"{m + 1},{model.compactness[m]:.6f},{model.generalisation_mm[m]:.4f},{model.specificity_mm[m]:.4f}"
        )
    return "\n".join(lines) + "\n"


def load_model(folder: Path | str) -> ShapeModel:
    """Read a model folder written by :func:`write_model_folder`."""
    folder = Path(folder)
    if not (folder / MODEL_NPZ).is_file() or not (folder / MODEL_JSON).is_file():
        raise FileNotFoundError(f"{folder} is not a shape-model folder: it lacks {MODEL_NPZ} or {MODEL_JSON}.")
    description = json.loads((folder / MODEL_JSON).read_text())
    if description.get("schema") != SCHEMA:
        raise ValueError(f"{folder / MODEL_JSON} has schema {description.get('schema')!r}; expected {SCHEMA!r}.")
    with np.load(folder / MODEL_NPZ, allow_pickle=False) as data:
        a = {key: data[key] for key in data.files}
    mesh = SurfaceMesh(a["template_points_lps"], a["triangles"], a["node_ids"], a["element_ids"])
    template = Template(
        mesh,
        a["landmark_triangles"],
        a["landmark_weights"],
        tuple(str(n) for n in a["landmark_names"]),
        description["template"],
    )
    flags = description["case_flags"]
    dropped = description["dropped_volumes_mm3"]
    cases = tuple(
        CaseResult(
            case_id=str(case_id),
            points_lps=a["case_points_lps"][n],
            transform=a["case_transforms"][n],
            scores=a["scores"][n],
            assd_mm=float(a["case_metrics"][n, 0]),
            hd95_mm=float(a["case_metrics"][n, 1]),
            mahalanobis=float(a["case_metrics"][n, 2]),
            loo_error_mm=float(a["case_metrics"][n, 3]),
            dropped_volumes_mm3=tuple(dropped.get(str(case_id), ())),
            flags=tuple(flags[str(case_id)]),
            vertex_error_mm=a["case_vertex_error_mm"][n].astype(float),
        )
        for n, case_id in enumerate(a["case_ids"])
    )
    regression = None
    if description["regression_covariates"]:
        regression = Regression(
            tuple(description["regression_covariates"]), a["regression_coefficients"], a["regression_r_squared"]
        )
    return ShapeModel(
        template=template,
        pca=PCA(a["mean"], a["modes"], a["variances"]),
        mode_count=int(description["mode_count"]),
        cases=cases,
        compactness=a["compactness"],
        generalisation_mm=a["generalisation_mm"],
        specificity_mm=a["specificity_mm"],
        gpa_iterations=int(description["gpa_iterations"]),
        settings=BuildSettings.from_dict(description["settings"]),
        skipped=description["skipped"],
        regression=regression,
        provenance=description["provenance"],
    )
