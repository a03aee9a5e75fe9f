"""Export a corrected case into a training dataset: image, standard label map, landmarks and provenance.

- :func:`export_case` takes arrays (``Volume``, ``PointSet``); every export ends here, the study
  import included;
- :func:`export_from_files` reads files on disk (``sternum-ssm export``) through ``image_files``;
- ``export_nodes.export_from_scene`` reads Slicer nodes (the modules' "Export to dataset" buttons).

The prediction a case started from is described by the scene contract's attributes
(:func:`prediction_from_attributes`). When it is known, the manifest records the correction
effort: Dice and changed voxels per class, landmark displacement, time spent.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from .anatomy import default_protocol, label_scheme
from .case_files import write_volume
from .dataset import (
    MANIFEST,
    CaseVersion,
    DatasetError,
    add_case_version,
    current_records,
    open_dataset,
    read_manifest,
)
from .geometry import CoordinateSystem, ImageGeometry, PointSet, Volume
from .image_files import case_name, check_segmentation_file, read_ct_with_source, read_labels
from .landmark_files import read_landmarks_csv, write_landmarks_csv
from .provenance import (
    landmark_displacement,
    model_id,
    seconds_between,
    segmentation_effort,
    tool_version,
    volume_sha256,
)
from .scene_contract import (
    MODEL_FOLDER,
    MODEL_SHA256,
    POSTPROCESSING,
    PREDICTED_AT,
    PREDICTION_FILE,
    PRESET,
    QA_FLAGS,
)
from .segmentation_inference import check_ct_volume

# How far (mm) beyond the CT's outer voxel edges a landmark may lie: an annotator may extrapolate a
# point just past a truncated scan, but a point farther out is in the wrong file or coordinate system.
LANDMARK_MARGIN_MM = 10.0
# The scene contract's attributes that describe a prediction -> the run record's (and Prediction's) fields.
PREDICTION_ATTRIBUTES = {
    MODEL_FOLDER: "model_folder",
    MODEL_SHA256: "model_sha256",
    PRESET: "preset",
    PREDICTED_AT: "predicted_at",
    POSTPROCESSING: "postprocessing",
    QA_FLAGS: "qa_flags",
}

Clock = Callable[[], datetime]


def utc_clock() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class Prediction:
    """What a model produced for the case: for provenance, and for correction effort when the
    predicted label map or landmarks are known."""

    labels: Volume | None = None
    landmarks: PointSet | None = None
    model_folder: str | None = None
    model_sha256: str | None = None
    preset: str | None = None
    predicted_at: str | None = None
    postprocessing: list = field(default_factory=list)
    qa_flags: list = field(default_factory=list)

    def provenance(self) -> dict:
        """Manifest fields; the model folder is identified by its hash, not its path."""
        model_sha256 = self.model_sha256
        if model_sha256 is None and self.model_folder and Path(self.model_folder).is_dir():
            model_sha256 = model_id(self.model_folder)
        return {
            "model_sha256": model_sha256,
            "model_name": Path(self.model_folder).name if self.model_folder else None,
            "preset": self.preset,
            "predicted_at": self.predicted_at,
            "postprocessing": list(self.postprocessing),
            "qa_flags": list(self.qa_flags),
        }


@dataclass
class ExportResult:
    record: dict
    dataset_folder: Path
    empty_segments: list[str]

    @property
    def paths(self) -> dict[str, Path]:
        return {role: self.dataset_folder / entry["path"] for role, entry in self.record["files"].items()}

    def summary(self) -> str:
        """A few lines for the user: what was written and how much the correction changed."""
        record = self.record
        lines = [
            f"Case {record['case_id']} version {record['version']} ({record['split']}) "
            f"written to {self.dataset_folder}:"
        ]
        lines += [f"  {entry['path']}" for entry in record["files"].values()]
        if record["version"] > 1:
            lines.append(f"  earlier versions are kept under archive/{record['case_id']}/")
        if self.empty_segments:
            lines.append(f"  empty segments: {', '.join(self.empty_segments)}")
        lines += correction_lines(record.get("correction"))
        return "\n".join(lines)


def correction_lines(correction: dict | None) -> list[str]:
    if not correction:
        return ["  correction effort: unknown (no prediction recorded)"]
    lines = []
    segmentation = correction.get("segmentation")
    if segmentation:
        dice = ", ".join(
            f"{name} {value:.3f}" if value is not None else f"{name} -" for name, value in segmentation["dice"].items()
        )
        lines.append(f"  Dice prediction vs correction: {dice}")
        lines.append(f"  changed voxels: {segmentation['changed_voxels_total']}")
    landmarks = correction.get("landmarks")
    if landmarks and landmarks["mean_mm"] is not None:
        lines.append(f"  landmark displacement: mean {landmarks['mean_mm']:.2f} mm, max {landmarks['max_mm']:.2f} mm")
    if correction.get("seconds_from_prediction") is not None:
        lines.append(f"  time from prediction to export: {correction['seconds_from_prediction'] / 60:.1f} min")
    return lines


# ---------------------------------------------------------------------------
# Arrays to dataset
# ---------------------------------------------------------------------------


def export_case(
    dataset_folder: Path | str,
    case_id: str,
    image: Volume,
    labels: Volume,
    landmarks: PointSet | None = None,
    annotator: str = "",
    split: str = "train",
    prediction: Prediction | None = None,
    source: dict | None = None,
    replace: bool = False,
    landmark_coordinate_system: CoordinateSystem = "LPS",
    file_ending: str | None = None,
    markups_writer: Callable[[Path], object] | None = None,
    extra_provenance: Mapping | None = None,
    pseudo_landmarks: PointSet | None = None,
    allow_empty_segmentation: bool = False,
    clock: Clock = utc_clock,
) -> ExportResult:
    """Write one case (a new version if the case exists) and its manifest record.

    Refused before anything is written: a CT that ``predict`` would refuse (see
    :func:`check_ct_volume`), landmarks more than ``LANDMARK_MARGIN_MM`` outside the CT, and a
    label map that is all background unless ``allow_empty_segmentation`` (a CT without sternum
    added on purpose). ``clock`` gives "now" for the time spent correcting.

    ``pseudo_landmarks`` (points between the anatomical ones) go to ``<landmarks>/pseudo/<case>.csv``
    in the same coordinate system, recorded in the manifest as pseudo, never mixed with the protocol.

    ``labels`` must hold standard values on exactly the image grid: nothing is resampled.
    ``landmarks`` go to a CSV in ``landmark_coordinate_system`` and, for the protocol's points,
    to a ``.mrk.json`` (through ``markups_writer`` when the caller has a node to write).
    """
    if not labels.geometry.same_grid(image.geometry):
        raise ValueError(
            "The label map is not on the image's voxel grid; export writes both unchanged, so resample "
            "the segmentation onto the image first if that is intended."
        )
    check_ct_volume(image)
    scheme = label_scheme()
    present = set(np.unique(labels.array).tolist())
    unknown = sorted(present - {scheme.background_value, *scheme.values})
    if unknown:
        raise ValueError(f"Label values {unknown} are not standard ({scheme.values}).")
    if present <= {scheme.background_value} and not allow_empty_segmentation:
        raise ValueError(
            "The segmentation is empty: every voxel is background, so the case would teach the model that this CT "
            "has no sternum. Label the sternum first, or, to add such a CT on purpose, export it with "
            "--allow-empty-segmentation."
        )
    for points in (landmarks, pseudo_landmarks):
        if points is not None:
            check_points_inside(points, image.geometry)
    labels = Volume(array=labels.array.astype(np.uint8), geometry=labels.geometry)
    empty = [c.name for c in scheme.classes if c.value not in present]

    writers: dict[str, Callable[[Path], object]] = {
        "image": lambda path: write_volume(image, path),
        "labels": lambda path: write_volume(labels, path),
    }
    if landmarks is not None:
        writers["landmarks_csv"] = lambda path: write_landmarks_csv(path, landmarks, landmark_coordinate_system)
        writers["landmarks_mrk"] = markups_writer or (lambda path: _write_markups_file(landmarks, path))
    if pseudo_landmarks is not None:
        writers["pseudo_landmarks_csv"] = lambda path: write_landmarks_csv(
            path, pseudo_landmarks, landmark_coordinate_system
        )

    provenance = {
        "annotator": annotator,
        "tool": tool_version(),
        "source": source or {"kind": "unknown"},
        "image": {"size": list(image.geometry.size), "spacing_mm": [round(s, 6) for s in image.geometry.spacing]},
        "segments": {"empty": empty},
        "landmarks": None if landmarks is None else _landmark_summary(landmarks, landmark_coordinate_system),
        "pseudo_landmarks": None if pseudo_landmarks is None else {
            "points": len(pseudo_landmarks.names), "placed": int(pseudo_landmarks.defined.sum()), "pseudo": True},
        "prediction": prediction.provenance() if prediction else None,
        "correction": _correction(prediction, labels, landmarks, clock()),
        **dict(extra_provenance or {}),
    }
    case = CaseVersion(case_id, split, writers, volume_sha256(image), provenance)
    record = add_case_version(dataset_folder, case, replace=replace, file_ending=file_ending)
    return ExportResult(record=record, dataset_folder=open_dataset(dataset_folder).root, empty_segments=empty)


def check_points_inside(points: PointSet, geometry: ImageGeometry, margin_mm: float = LANDMARK_MARGIN_MM) -> None:
    """Refuse points more than ``margin_mm`` beyond the image's outer voxel edges, naming each of them."""
    defined = np.flatnonzero(points.defined)
    index = geometry.lps_to_index(points.to("LPS").positions[defined])
    half_extent = np.asarray(geometry.size) / 2.0
    # Distance (mm) outside the box of voxel edges along each image axis; 0 inside.
    beyond_mm = np.maximum(np.abs(index - (half_extent - 0.5)) - half_extent, 0.0) * geometry.spacing
    distance = np.linalg.norm(beyond_mm, axis=1)
    outside = np.flatnonzero(distance > margin_mm)
    if len(outside):
        listed = ", ".join(f"{points.names[defined[i]]} ({distance[i]:.0f} mm)" for i in outside[:8])
        more = f" and {len(outside) - 8} more" if len(outside) > 8 else ""
        raise ValueError(
            f"{len(outside)} landmark(s) lie outside the CT, more than {margin_mm:g} mm beyond its edge: "
            f"{listed}{more}. Check that the landmarks belong to this CT and that their coordinate system "
            "(LPS or RAS) is the one stated."
        )


def _correction(
    prediction: Prediction | None, labels: Volume, landmarks: PointSet | None, now: datetime
) -> dict | None:
    if prediction is None:
        return None
    correction = {
        "segmentation": None,
        "landmarks": None,
        "seconds_from_prediction": seconds_between(prediction.predicted_at, now),
    }
    if prediction.labels is not None:
        correction["segmentation"] = segmentation_effort(prediction.labels, labels)
    if prediction.landmarks is not None and landmarks is not None:
        correction["landmarks"] = landmark_displacement(prediction.landmarks, landmarks)
    return correction


def _landmark_summary(landmarks: PointSet, coordinate_system: str) -> dict:
    protocol_count = len(default_protocol())
    return {
        "rows": len(landmarks.names),
        "placed": int(landmarks.defined.sum()),
        "protocol_rows": min(protocol_count, len(landmarks.names)),
        "csv_coordinate_system": coordinate_system,
    }


def _write_markups_file(points: PointSet, path: Path) -> None:
    """The protocol's landmarks (the first rows, or those named by protocol id) as a ``.mrk.json``."""
    from .markups import write_landmarks_markups

    write_landmarks_markups(protocol_subset(points), path)


def protocol_subset(points: PointSet) -> PointSet:
    """The protocol's landmarks, by id when the points carry the ids, otherwise the first rows in order.

    Study files have the 34 protocol landmarks first and may have more rows after them.
    """
    ids = default_protocol().ids
    if set(ids) <= set(points.names):
        index = [points.names.index(i) for i in ids]
    elif len(points.names) >= len(ids):
        index = list(range(len(ids)))
    else:
        raise ValueError(f"{len(points.names)} landmark rows, but the protocol has {len(ids)} landmarks.")
    return PointSet(names=ids, positions=points.positions[index], coordinate_system=points.coordinate_system)


# ---------------------------------------------------------------------------
# The prediction a case started from
# ---------------------------------------------------------------------------


def prediction_from_attributes(
    attributes: Mapping[str, str | None], labels: Volume | None = None, landmarks: PointSet | None = None
) -> Prediction | None:
    """The prediction that scene-contract attribute values describe (``MODEL_FOLDER``, ``PRESET``, ...;
    lists as JSON text), with its label map and landmarks where known; None when nothing is known."""
    values = {field_name: attributes.get(key) or None for key, field_name in PREDICTION_ATTRIBUTES.items()}
    if labels is None and landmarks is None and not any(values.values()):
        return None
    return Prediction(
        labels=labels,
        landmarks=landmarks,
        model_folder=values["model_folder"],
        model_sha256=values["model_sha256"],
        preset=values["preset"],
        predicted_at=values["predicted_at"],
        postprocessing=json.loads(values["postprocessing"] or "[]"),
        qa_flags=json.loads(values["qa_flags"] or "[]"),
    )


def record_attributes(
    record: Mapping[str, object], overrides: Mapping[str, object | None] | None = None
) -> dict[str, str | None]:
    """The scene contract's prediction attributes that a run record (``<case>.json`` of ``predict`` or the batch,
    or the record on a predicted segmentation node) describes, lists as JSON text; values set in ``overrides``
    (attribute -> value, None = not set) win."""
    attributes = {}
    for key, record_key in PREDICTION_ATTRIBUTES.items():
        value = (overrides or {}).get(key)
        value = record.get(record_key) if value is None else value
        attributes[key] = json.dumps(value) if isinstance(value, (list, dict)) else value
    return attributes


def prediction_record_path(prediction: Path) -> Path:
    """Where ``predict`` and the batch write a prediction's run record: ``X.json`` beside ``X.seg.nrrd``."""
    return prediction.with_name(f"{case_name(prediction) or prediction.stem}.json")


def read_prediction_record(prediction: Path) -> dict | None:
    """The run record beside a prediction file (model id, preset, predicted-at, ...); None when there is none."""
    path = prediction_record_path(prediction)
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except ValueError as error:
        raise ValueError(f"{path} beside the prediction is not a run record: {error}.") from None
    if not isinstance(record, dict):
        raise ValueError(f"{path} beside the prediction is not a run record: it holds no JSON object.")
    return record


def read_prediction_labels(path: Path, grid: ImageGeometry) -> Volume:
    """The model's unedited label map from a file, on the CT's grid, to measure the correction against."""
    if not path.is_file():
        raise FileNotFoundError(f"Prediction file {path} does not exist.")
    return read_labels(path, grid=grid)


# ---------------------------------------------------------------------------
# What an export will do
# ---------------------------------------------------------------------------


def describe_export(dataset_folder: Path | str, case_id: str, split: str = "train", file_ending: str = ".nrrd") -> str:
    """One paragraph saying which files an export of ``case_id`` will write, before it is done."""
    folder = Path(dataset_folder)
    if not str(dataset_folder) or not folder.exists() or not (folder / MANIFEST).is_file():
        if folder.exists() and any(folder.iterdir()) and not (folder / "dataset.json").is_file():
            return f"{folder} holds files but no dataset.json: choose an empty folder or an existing dataset."
        return f"A new dataset will be created in {folder}; case {case_id} becomes version 1."
    try:
        dataset = open_dataset(folder)
    except (DatasetError, OSError) as error:
        return str(error)
    current = [r for r in current_records(read_manifest(folder)) if r["case_id"] == case_id]
    paths = ", ".join(dataset.relative_path(role, case_id, split) for role in ("image", "labels", "landmarks_csv"))
    if current:
        old = current[0]
        return (
            f"Case {case_id} exists (version {old['version']}, {old['split']}). The same CT becomes version "
            f"{old['version'] + 1} and version {old['version']} moves to archive/{case_id}/; a different CT is refused "
            f"unless 'replace' is chosen. Files: {paths}."
        )
    count = len(current_records(read_manifest(folder), "train"))
    return f"New case {case_id} in a dataset of {count} training cases. Files: {paths}."



# ---------------------------------------------------------------------------
# Files to dataset
# ---------------------------------------------------------------------------


def export_from_files(
    image: Path | str,
    segmentation: Path | str,
    dataset_folder: Path | str,
    case_id: str,
    landmarks: Path | str | None = None,
    landmark_file_coordinate_system: CoordinateSystem | None = None,
    prediction_attributes: Mapping[str, object] | None = None,
    segment_names: Mapping[str, str] | None = None,
    label_values: Mapping[int, str] | None = None,
    **options,
) -> ExportResult:
    """:func:`export_case` for files on disk (the command line): CT, segmentation, optional landmarks
    (``.mrk.json``, or a CSV in a declared or stated system). ``prediction_attributes``
    (``PREDICTION_FILE``, ``MODEL_FOLDER``, ... to values) describe the prediction it started from.

    A ``.seg.nrrd`` is read by segment name (``segment_names`` maps other names); a plain label map
    by value: the standard values 1-4, or ``label_values`` (e.g. ``{5: "Cartilage"}``). The labels
    must lie on the CT's grid, up to whole voxels (see ``image_files.on_image_grid``)."""
    segmentation = Path(segmentation)
    if not segmentation.is_file():
        raise FileNotFoundError(f"Segmentation file {segmentation} does not exist.")
    ct, source = read_ct_with_source(Path(image))
    if label_values and check_segmentation_file(segmentation):
        raise ValueError(
            f"{segmentation.name} has named segments, which are matched by name; --label-value is for plain "
            "label maps. Map other segment names with --alias NAME=STANDARD."
        )
    labels = read_labels(segmentation, segment_names, label_values, grid=ct.geometry)
    points = None if landmarks is None else _read_landmark_file(Path(landmarks), landmark_file_coordinate_system)
    attributes = {key: str(value) for key, value in (prediction_attributes or {}).items() if value is not None}
    predicted = attributes.get(PREDICTION_FILE)
    prediction = prediction_from_attributes(
        attributes, read_prediction_labels(Path(predicted), ct.geometry) if predicted else None
    )
    return export_case(dataset_folder, case_id, ct, labels, points, prediction=prediction, source=source, **options)


def _read_landmark_file(path: Path, coordinate_system: CoordinateSystem | None) -> PointSet:
    """The protocol's landmarks (LPS) from a CSV, in its declared or the stated system; all points of a markups file."""
    if path.name.endswith(".csv"):
        return protocol_subset(read_landmarks_csv(path, coordinate_system)).to("LPS")
    from .markups import read_landmarks_markups  # MRML (slicer-core), needed only for .mrk.json

    return read_landmarks_markups(path, "LPS")
