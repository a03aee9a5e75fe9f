"""Dataset folder -> model folder: the one build path of the command line and the Slicer module's worker."""

from __future__ import annotations

from pathlib import Path

from SternumSSMLib.landmark_files import read_landmarks_csv

from .correspondence import user_template
from .dataset_cases import dataset_provenance, dataset_records, read_cases, read_covariates
from .mesh_io import read_mesh
from .model import BuildSettings, Progress, ShapeModel, build_model
from .storage import check_new_model_folder, write_model_folder

# Share of the whole build each stage takes, for one progress fraction (measured on phantoms).
STAGE_SPANS = {"surfaces": (0.0, 0.55), "correspondence": (0.55, 0.85), "statistics": (0.85, 1.0)}


def build_from_dataset(
    dataset: Path | str,
    output: Path | str,
    settings: BuildSettings,
    split: str = "train",
    template: Path | str | None = None,
    template_landmarks: Path | str | None = None,
    covariates: Path | str | None = None,
    progress: Progress | None = None,
    with_report: bool = True,
) -> tuple[ShapeModel, Path]:
    """Build a model from a dataset split and write its folder; refuses an existing output before any work."""
    output = check_new_model_folder(output)
    user = None
    if template is not None:
        if template_landmarks is None:
            raise ValueError("A template mesh needs its own 34 landmarks (a CSV that declares LPS or RAS).")
        user = user_template(
            read_mesh(template),
            read_landmarks_csv(template_landmarks),
            settings.surface.pseudo_per_segment,
            str(template),
        )
    records = dataset_records(dataset, split)
    provenance = dataset_provenance(dataset, records, split)
    provenance["template"] = str(template) if template else "case closest to the landmark Procrustes mean"
    model = build_model(
        read_cases(dataset, records),
        settings,
        user,
        read_covariates(covariates) if covariates else None,
        progress or (lambda stage, done, total: None),
        len(records),
        provenance,
    )
    return model, write_model_folder(model, output, with_report=with_report)


def overall_fraction(stage: str, done: int, total: int) -> float:
    """The whole build's progress (0..1) from a stage's progress."""
    start, end = STAGE_SPANS[stage]
    return start + (end - start) * (done / total if total else 0.0)
