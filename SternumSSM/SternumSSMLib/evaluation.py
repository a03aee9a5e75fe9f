"""Compare a folder of predictions with the reference: the study's tables, per-case CSVs, Markdown.

Files are paired by case id (the file name without its extensions):

- segmentations ``<case>.seg.nrrd``, ``<case>.nrrd``, ``<case>.nii.gz`` or another image file
  (``image_files.IMAGE_SUFFIXES``) with standard label values (a ``.seg.nrrd`` is read by segment
  *name*), found in ``labelsTr/``, ``labelsTs/`` or ``labels/`` when the folder has any of them,
  otherwise in the folder itself;
- landmark CSVs ``<case>.csv`` (name, X, Y, Z), found in ``landmarks/`` or ``landmarksTs/`` when
  present, otherwise in the folder itself.

This fits a dataset folder, a phantom folder and the flat output of ``sternum-ssm predict`` on
either side. A case found on one side only is listed in the report, never dropped silently.

Segmentations are compared on one voxel grid. Slicer crops ``.seg.nrrd`` files to their
segments, so two grids that differ only by whole voxels (same spacing and axes) are both placed
on the grid that covers them; any other difference is refused, since resampling labels is the
user's decision. Metric definitions and the handling of empty masks are in ``metrics``.

Outputs: ``evaluation.md`` (the tables), ``segmentation.csv`` (one row per case and class, with
a ``Total`` row per case) and ``landmarks.csv`` (one row per case and landmark). An undefined
value (NaN) is an empty CSV cell.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .anatomy import label_scheme
from .atomic import write_text_atomic
from .geometry import CoordinateSystem, PointSet, Volume
from .image_files import IMAGE_SUFFIXES, covering_grid, files_by_case, on_image_grid, read_labels
from .landmark_files import declared_coordinate_system, read_landmarks_csv
from .metrics import SEGMENTATION_METRICS, landmark_error_table, landmark_errors, segmentation_scores

LANDMARK_SUFFIXES = (".csv",)
SEGMENTATION_FOLDERS = ("labelsTr", "labelsTs", "labels")
LANDMARK_FOLDERS = ("landmarks", "landmarksTs")
OUTPUT_FILES = ("evaluation.md", "segmentation.csv", "landmarks.csv")
EXCLUDE_BEYOND_MM = 10.0
_ROW_LABELS = {"dice": "Dice", "sensitivity": "Sensitivity", "asd_mm": "ASD (mm)", "volume_similarity": "VS"}


@dataclass(frozen=True)
class CaseLandmarks:
    """One case's landmark comparison, in the reference's point order.

    ``errors_mm`` is NaN where a point is missing; ``missing`` names the side that lacks it
    ("prediction", "reference", "both") or is "" for a measured point.
    """

    names: tuple[str, ...]
    errors_mm: np.ndarray
    missing: tuple[str, ...]


@dataclass
class Evaluation:
    """Per-case results: ``segmentation[case][class][metric]`` and ``landmarks[case]``."""

    predictions: Path
    reference: Path
    segmentation: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    landmarks: dict[str, CaseLandmarks] = field(default_factory=dict)
    unpaired: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------
# Reading landmarks and placing label maps (image files are found and read by image_files)
# ---------------------------------------------------------------------------


def read_landmarks(path: Path, coordinate_system: CoordinateSystem | None) -> PointSet:
    """A landmark CSV in the coordinate system it declares, or ``coordinate_system`` when it declares none."""
    declared = declared_coordinate_system(path)
    if declared is None and coordinate_system is None:
        raise ValueError(
            f"{path} does not declare its coordinate system; state it (LPS or RAS, "
            "--coordinate-system on the command line)."
        )
    return read_landmarks_csv(path, declared or coordinate_system)


def on_common_grid(predicted: Volume, reference: Volume, case: str = "") -> tuple[Volume, Volume]:
    """Both label maps on one grid, without interpolation (see the module docstring)."""
    if predicted.geometry.same_grid(reference.geometry):
        return predicted, reference
    grid = covering_grid(reference.geometry, predicted.geometry)
    if grid is None:
        raise ValueError(
            f"Case {case or '?'}: the predicted segmentation's voxel grid (spacing "
            f"{predicted.geometry.spacing.tolist()}, origin {predicted.geometry.origin_lps.tolist()} LPS) does not "
            f"match the reference's (spacing {reference.geometry.spacing.tolist()}, origin "
            f"{reference.geometry.origin_lps.tolist()} LPS) up to whole voxels; resample the prediction onto the "
            "reference grid (nearest neighbour) and run again."
        )
    return on_image_grid(predicted, grid), on_image_grid(reference, grid)


def compare_landmarks(predicted: PointSet, reference: PointSet) -> CaseLandmarks:
    """IPE per reference point and which side misses it (points in LPS or RAS; converted as needed)."""
    errors = landmark_errors(predicted, reference)
    predicted_defined = dict(zip(predicted.names, predicted.defined, strict=True))
    sides = {(True, True): "", (False, True): "prediction", (True, False): "reference", (False, False): "both"}
    missing = tuple(
        sides[(bool(predicted_defined[name]), bool(defined))]
        for name, defined in zip(reference.names, reference.defined, strict=True)
    )
    return CaseLandmarks(names=reference.names, errors_mm=errors, missing=missing)


def _pair(
    kind: str, predicted: dict[str, Path], reference: dict[str, Path], unpaired: list[str]
) -> list[tuple[str, Path, Path]]:
    unpaired += [f"{case}: {kind} prediction without reference" for case in sorted(set(predicted) - set(reference))]
    unpaired += [f"{case}: {kind} reference without prediction" for case in sorted(set(reference) - set(predicted))]
    return [(case, predicted[case], reference[case]) for case in sorted(set(predicted) & set(reference))]


def evaluate_folders(
    predictions: Path | str,
    reference: Path | str,
    coordinate_system: CoordinateSystem | None = None,
    progress: Callable[[str], None] | None = None,
) -> Evaluation:
    """Score every paired case. ``coordinate_system`` (LPS or RAS) applies to landmark CSVs that
    declare none; ``progress`` receives one line per case."""
    predictions, reference = Path(predictions), Path(reference)
    for label, folder in (("Predictions", predictions), ("Reference", reference)):
        if not folder.is_dir():
            raise FileNotFoundError(f"{label} folder {folder} does not exist; give an existing folder.")
    evaluation = Evaluation(predictions=predictions, reference=reference)
    segmentation_pairs = _pair(
        "segmentation",
        files_by_case(predictions, SEGMENTATION_FOLDERS, IMAGE_SUFFIXES),
        files_by_case(reference, SEGMENTATION_FOLDERS, IMAGE_SUFFIXES),
        evaluation.unpaired,
    )
    landmark_pairs = _pair(
        "landmark",
        files_by_case(predictions, LANDMARK_FOLDERS, LANDMARK_SUFFIXES),
        files_by_case(reference, LANDMARK_FOLDERS, LANDMARK_SUFFIXES),
        evaluation.unpaired,
    )
    evaluation.unpaired.sort()
    if not segmentation_pairs and not landmark_pairs:
        raise ValueError(
            f"No case in {predictions} has a reference in {reference}. Files pair by case id: <case>.seg.nrrd "
            "(or .nrrd, .nii.gz) with labelsTr/<case>.nrrd, and <case>.csv with landmarks/<case>.csv."
        )
    for case, predicted_path, reference_path in segmentation_pairs:
        predicted, truth = on_common_grid(read_labels(predicted_path), read_labels(reference_path), case)
        evaluation.segmentation[case] = segmentation_scores(predicted, truth)
        if progress:
            progress(f"{case}: segmentation Dice total {evaluation.segmentation[case]['Total']['dice']:.3f}")
    for case, predicted_path, reference_path in landmark_pairs:
        try:
            comparison = compare_landmarks(
                read_landmarks(predicted_path, coordinate_system), read_landmarks(reference_path, coordinate_system)
            )
        except ValueError as error:
            raise ValueError(f"Case {case}: {error}") from None
        evaluation.landmarks[case] = comparison
        if progress:
            progress(f"{case}: landmarks {landmark_progress(comparison)}")
    return evaluation


def landmark_progress(comparison: CaseLandmarks) -> str:
    """One case's landmark result in words; a case in which no point could be compared says why."""
    table = landmark_error_table(comparison.errors_mm)
    if table["points"] == 0:
        unplaced = sum(side in ("prediction", "both") for side in comparison.missing)
        return (
            f"no IPE: none of the {len(comparison.names)} points could be compared "
            f"({unplaced} not placed in the prediction, {table['missing']} missing on either side)"
        )
    return f"mean IPE {table['mean_mm']:.2f} mm over {table['points']} points, {table['missing']} missing"


def unpaired_summary(unpaired: list[str], shown: int = 5) -> list[str]:
    """One line per kind of unpaired case ("segmentation reference without prediction", ...), naming a few."""
    groups: dict[str, list[str]] = {}
    for line in unpaired:
        case, _, kind = line.partition(": ")
        groups.setdefault(kind, []).append(case)
    lines = []
    for kind, cases in groups.items():
        more = f" and {len(cases) - shown} more" if len(cases) > shown else ""
        lines.append(f"{kind}: {len(cases)} case{'s' * (len(cases) != 1)} ({', '.join(cases[:shown])}{more})")
    return lines


# ---------------------------------------------------------------------------
# Summaries and formatting
# ---------------------------------------------------------------------------


def segmentation_summary(evaluation: Evaluation) -> dict[str, dict[str, float]]:
    """Mean over cases per class name and 'Total', skipping undefined (NaN) values; ``cases`` counts Dice values."""
    summary = {}
    for name in (*label_scheme().names, "Total"):
        values = {
            metric: [scores[name][metric] for scores in evaluation.segmentation.values()]
            for metric in SEGMENTATION_METRICS
        }
        summary[name] = {metric: _nanmean(column) for metric, column in values.items()}
        summary[name]["cases"] = float(np.count_nonzero(~np.isnan(values["dice"])))
    return summary


def landmark_tables(evaluation: Evaluation) -> dict[str, dict[str, float]]:
    """The study's two landmark tables over every point of every case: 'all' and 'within_10mm'."""
    errors = np.concatenate([case.errors_mm for case in evaluation.landmarks.values()] or [np.zeros(0)])
    return {
        "all": landmark_error_table(errors),
        "within_10mm": landmark_error_table(errors, exclude_beyond_mm=EXCLUDE_BEYOND_MM),
    }


def _nanmean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else float("nan")


def _number(value: float, digits: int, signed: bool = False) -> str:
    if math.isnan(value):
        return "–"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def segmentation_markdown(summary: dict[str, dict[str, float]]) -> str:
    """Rows Dice / Sensitivity / ASD (mm) / VS, one column per class and Total (the study's layout)."""
    names = list(summary)
    lines = [
        "| | " + " | ".join(name.replace("_", " ") for name in names) + " |",
        "|---|" + "---|" * len(names),
    ]
    digits = {"dice": 3, "sensitivity": 3, "asd_mm": 2, "volume_similarity": 3}
    for metric, label in _ROW_LABELS.items():
        cells = [_number(summary[n][metric], digits[metric], signed=metric == "volume_similarity") for n in names]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def landmark_markdown(table: dict[str, float]) -> str:
    """One landmark table: Points | Median | Mean ± SD | O_2 | O_4 | O_10 (distances in mm)."""
    outliers = [f"O_{radius:g}" for radius in (2, 4, 10)]
    mean_sd = f"{_number(table['mean_mm'], 2)} ± {_number(table['sd_mm'], 2)}"
    cells = [str(table["points"]), _number(table["median_mm"], 2), mean_sd]
    cells += [f"{_number(table[key], 2)}%" for key in outliers]
    return "\n".join(
        [
            "| Points | Median (mm) | Mean ± SD (mm) | " + " | ".join(outliers) + " |",
            "|---|---|---|---|---|---|",
            "| " + " | ".join(cells) + " |",
        ]
    )


def markdown_tables(evaluation: Evaluation) -> str:
    """The whole report: segmentation table, the two landmark tables, unpaired cases."""
    parts = ["# Evaluation", "", f"Predictions `{evaluation.predictions}` against reference `{evaluation.reference}`."]
    cases = len(evaluation.segmentation)
    parts += ["", f"## Segmentation (mean over {cases} case{'s' * (cases != 1)})", ""]
    if cases:
        summary = segmentation_summary(evaluation)
        undefined_asd = sum(
            1
            for scores in evaluation.segmentation.values()
            for name in label_scheme().names
            if not math.isnan(scores[name]["dice"]) and math.isnan(scores[name]["asd_mm"])
        )
        parts += [
            segmentation_markdown(summary),
            "",
            "Dice, sensitivity and VS (positive: over-segmentation) are means over the cases in which a class is "
            "present in the prediction or the reference; Total Dice is the micro total per case. "
            f"ASD is undefined where one mask is empty: {undefined_asd} case-class pair(s), which score Dice 0.",
        ]
    else:
        parts.append("No segmentation pairs.")
    tables = landmark_tables(evaluation)
    cases = len(evaluation.landmarks)
    everything, within = tables["all"], tables["within_10mm"]
    parts += ["", f"## Landmarks ({cases} case{'s' * (cases != 1)}, IPE over all points)", ""]
    if cases:
        parts += [
            landmark_markdown(everything),
            "",
            f"{everything['missing']} point(s) missing in the prediction or the reference are not counted."
            + (" No point was on both sides, so there is no IPE to report." if not everything["points"] else ""),
            "",
            f"## Landmarks without points beyond {EXCLUDE_BEYOND_MM:g} mm ({within['excluded']} excluded)",
            "",
            landmark_markdown(within),
        ]
    else:
        parts.append("No landmark pairs.")
    if evaluation.unpaired:
        parts += ["", "## Unpaired cases (not scored)", ""]
        parts += [f"- {line}" for line in unpaired_summary(evaluation.unpaired)]
    return "\n".join(parts) + "\n"


def _cell(value: float, digits: int = 6) -> str:
    return "" if math.isnan(value) else f"{value:.{digits}f}"


def segmentation_csv(evaluation: Evaluation) -> str:
    """case, class, dice, sensitivity, asd_mm, volume_similarity, predicted_voxels, reference_voxels."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["case", "class", *SEGMENTATION_METRICS, "predicted_voxels", "reference_voxels"])
    for case, scores in evaluation.segmentation.items():
        for name, values in scores.items():
            counts = [str(int(values["predicted_voxels"])), str(int(values["reference_voxels"]))]
            writer.writerow([case, name, *(_cell(values[m]) for m in SEGMENTATION_METRICS), *counts])
    return buffer.getvalue()


def landmarks_csv(evaluation: Evaluation) -> str:
    """case, landmark, ipe_mm (empty when missing), missing (prediction / reference / both / empty)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["case", "landmark", "ipe_mm", "missing"])
    for case, comparison in evaluation.landmarks.items():
        for name, error, missing in zip(comparison.names, comparison.errors_mm, comparison.missing, strict=True):
            writer.writerow([case, name, _cell(float(error)), missing])
    return buffer.getvalue()


def write_evaluation(evaluation: Evaluation, output: Path | str, overwrite: bool = False) -> list[Path]:
    """Write evaluation.md, segmentation.csv and landmarks.csv into ``output`` (created if missing).

    Every text is built before anything is written, and existing outputs are refused up front
    unless ``overwrite``, so a failure leaves no partial set of files.
    """
    output = Path(output)
    texts = dict(
        zip(
            OUTPUT_FILES,
            (markdown_tables(evaluation), segmentation_csv(evaluation), landmarks_csv(evaluation)),
            strict=True,
        )
    )
    existing = [str(output / name) for name in OUTPUT_FILES if (output / name).exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{', '.join(existing)} already exist; choose another output folder or overwrite.")
    output.mkdir(parents=True, exist_ok=True)
    return [write_text_atomic(output / name, text, overwrite=overwrite) for name, text in texts.items()]
