"""Export a corrected case into a training dataset: image, standard label map, landmarks and provenance.

Two entry points:

- :func:`export_case` takes arrays (``Volume``, ``PointSet``); the study import uses it;
- :func:`export_from_scene` takes Slicer nodes; the module's "Export to dataset" button and the
  ``sternum-ssm export`` command use it.

The prediction a case started from is found through attributes that the segmentation step sets
on the nodes it creates (``PREDICTION_*`` below). When it is known, the manifest records the
correction effort: Dice and changed voxels per class, landmark displacement, time spent.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

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
from .geometry import CoordinateSystem, PointSet, Volume
from .landmark_files import write_landmarks_csv
from .prediction_nodes import UNEDITED_PREDICTION_ATTRIBUTE, prediction_record
from .provenance import (
    folder_sha256,
    landmark_displacement,
    seconds_between,
    segmentation_effort,
    sha256_file,
    tool_version,
    volume_sha256,
)

# Node attributes through which the segmentation and landmark steps tell the export what they predicted.
# The node holding the unedited prediction; prediction_nodes sets it when it shows a result.
PREDICTION_SEGMENTATION_ID = UNEDITED_PREDICTION_ATTRIBUTE
PREDICTION_FILE = "SternumSSM.PredictionFile"  # or the prediction on disk (.seg.nrrd or label map)
PREDICTION_MARKUPS_ID = "SternumSSM.PredictionMarkupsID"  # on the landmarks node: the predicted points
MODEL_FOLDER = "SternumSSM.ModelFolder"
MODEL_SHA256 = "SternumSSM.ModelSHA256"
PRESET = "SternumSSM.Preset"
PREDICTED_AT = "SternumSSM.PredictedAt"  # ISO 8601, UTC
POSTPROCESSING = "SternumSSM.Postprocessing"  # JSON list of steps
QA_FLAGS = "SternumSSM.QAFlags"  # JSON list of flags


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
            model_sha256 = folder_sha256(self.model_folder)
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
) -> ExportResult:
    """Write one case (a new version if the case exists) and its manifest record.

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
    scheme = label_scheme()
    unknown = sorted(set(np.unique(labels.array).tolist()) - {scheme.background_value, *scheme.values})
    if unknown:
        raise ValueError(f"Label values {unknown} are not standard ({scheme.values}).")
    labels = Volume(array=labels.array.astype(np.uint8), geometry=labels.geometry)
    present = set(np.unique(labels.array).tolist())
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
        "correction": _correction(prediction, labels, landmarks),
        **dict(extra_provenance or {}),
    }
    case = CaseVersion(case_id, split, writers, volume_sha256(image), provenance)
    record = add_case_version(dataset_folder, case, replace=replace, file_ending=file_ending)
    return ExportResult(record=record, dataset_folder=open_dataset(dataset_folder).root, empty_segments=empty)


def _correction(prediction: Prediction | None, labels: Volume, landmarks: PointSet | None) -> dict | None:
    if prediction is None:
        return None
    correction = {
        "segmentation": None,
        "landmarks": None,
        "seconds_from_prediction": seconds_between(prediction.predicted_at),
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
    from SternumLandmarksLib.markups import write_landmarks_markups

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
# Scene to dataset
# ---------------------------------------------------------------------------


def export_from_scene(
    volume_node,
    segmentation_node,
    dataset_folder: Path | str,
    case_id: str,
    annotator: str = "",
    landmarks_node=None,
    segment_names: Mapping[str, str] | None = None,
    prediction: Prediction | None = None,
    split: str = "train",
    replace: bool = False,
    landmark_coordinate_system: CoordinateSystem = "LPS",
    file_ending: str | None = None,
    pseudo_landmarks_node=None,
) -> ExportResult:
    """Export the CT ``volume_node`` with the corrected ``segmentation_node`` (and landmarks,
    and pseudo-landmarks from their own node).

    Label values come from segment names (through ``segment_names`` for other names), on the
    CT's own grid. Unknown names and overlapping segments are errors; empty ones are reported.
    Without ``prediction`` the prediction is looked up through the nodes' attributes.
    """
    from SternumLandmarksLib.markups import landmark_points, write_markups

    from .segmentation_nodes import labelmap_from_segmentation, segment_masks
    from .volume_nodes import volume_from_node

    image = volume_from_node(volume_node)
    masks = segment_masks(segmentation_node, image.geometry, segment_names)
    check_overlaps(masks)
    labels = labelmap_from_segmentation(segmentation_node, image.geometry, segment_names)
    landmarks = None
    if landmarks_node is not None:
        if landmarks_node.GetParentTransformNode() is not None:
            raise ValueError(f"Landmarks {landmarks_node.GetName()!r} are under a transform; harden it first.")
        landmarks = landmark_points(landmarks_node, "LPS")
    if prediction is None:
        prediction = prediction_from_scene(segmentation_node, landmarks_node, image)
    return export_case(
        dataset_folder,
        case_id,
        image,
        labels,
        landmarks,
        annotator=annotator,
        split=split,
        prediction=prediction,
        source=source_of_node(volume_node),
        replace=replace,
        landmark_coordinate_system=landmark_coordinate_system,
        file_ending=file_ending,
        markups_writer=None if landmarks_node is None else (lambda path: write_markups(landmarks_node, path)),
        pseudo_landmarks=None if pseudo_landmarks_node is None else landmark_points(pseudo_landmarks_node, "LPS"),
    )


def check_overlaps(masks: Mapping[str, np.ndarray]) -> None:
    """Refuse segments that share voxels, naming each pair and its voxel count."""
    names = list(masks)
    overlaps = []
    for first_index, first in enumerate(names):
        for second in names[first_index + 1 :]:
            shared = int(np.count_nonzero(masks[first] & masks[second]))
            if shared:
                overlaps.append(f"{first} and {second} share {shared} voxels")
    if overlaps:
        raise ValueError(
            "Overlapping segments: " + "; ".join(overlaps) + ". A label map holds one class per voxel; "
            "remove the overlap in the Segment Editor (e.g. with 'Logical operators' / 'Subtract')."
        )


def source_of_node(volume_node) -> dict:
    """The CT's source as content hashes only: its file, or its DICOM instances; never names or paths."""
    uids = volume_node.GetAttribute("DICOM.instanceUIDs")
    if uids:
        import hashlib

        return {"kind": "dicom", "sha256": hashlib.sha256(" ".join(sorted(uids.split())).encode()).hexdigest()}
    storage = volume_node.GetStorageNode()
    file_name = storage.GetFileName() if storage is not None else None
    if file_name and Path(file_name).is_file():
        return {"kind": "file", "format": "".join(Path(file_name).suffixes[-2:]), "sha256": sha256_file(file_name)}
    return {"kind": "scene", "sha256": None}


def prediction_from_scene(segmentation_node, landmarks_node, image: Volume) -> Prediction | None:
    """The prediction recorded on the nodes' ``SternumSSM.*`` attributes, or None when there is none."""
    from SternumLandmarksLib.markups import landmark_points

    from .segmentation_nodes import labelmap_from_segmentation

    attribute = segmentation_node.GetAttribute
    scene = segmentation_node.GetScene()
    labels = None
    node_id, file_name = attribute(PREDICTION_SEGMENTATION_ID), attribute(PREDICTION_FILE)
    if node_id:
        predicted_node = scene.GetNodeByID(node_id)
        if predicted_node is None:
            raise DatasetError(f"The prediction node {node_id} recorded on {segmentation_node.GetName()!r} is gone.")
        labels = labelmap_from_segmentation(predicted_node, image.geometry)
    elif file_name:
        labels = read_label_file(Path(file_name), image)
    predicted_landmarks = None
    if landmarks_node is not None and landmarks_node.GetAttribute(PREDICTION_MARKUPS_ID):
        predicted_node = scene.GetNodeByID(landmarks_node.GetAttribute(PREDICTION_MARKUPS_ID))
        if predicted_node is not None:
            predicted_landmarks = landmark_points(predicted_node, "LPS")
    # The segmentation step stores its run record (model hash, preset, ...) as JSON on the node it
    # creates; the single attributes above, where set, take precedence.
    record = prediction_record(segmentation_node) or {}
    from_record = {MODEL_FOLDER: "model_folder", MODEL_SHA256: "model_sha256", PRESET: "preset",
                   PREDICTED_AT: "predicted_at", POSTPROCESSING: "postprocessing", QA_FLAGS: "qa_flags"}  # fmt: skip
    metadata = {}
    for key, record_key in from_record.items():
        value = attribute(key) if attribute(key) else record.get(record_key)
        metadata[key] = json.dumps(value) if isinstance(value, (list, dict)) else value
    if labels is None and predicted_landmarks is None and not any(metadata.values()):
        return None
    return Prediction(
        labels=labels,
        landmarks=predicted_landmarks,
        model_folder=metadata[MODEL_FOLDER],
        model_sha256=metadata[MODEL_SHA256],
        preset=metadata[PRESET],
        predicted_at=metadata[PREDICTED_AT],
        postprocessing=json.loads(metadata[POSTPROCESSING] or "[]"),
        qa_flags=json.loads(metadata[QA_FLAGS] or "[]"),
    )


def read_label_file(path: Path, image: Volume) -> Volume:
    """A standard label map from a ``.seg.nrrd`` (values by segment name) or a plain label map, on the image grid."""
    if not path.is_file():
        raise FileNotFoundError(f"Prediction file {path} does not exist.")
    if path.name.endswith(".seg.nrrd"):
        from .study_import import read_segmentation_file

        labels = read_segmentation_file(path)
    else:
        labels = Volume.from_sitk(sitk.ReadImage(str(path)))
    if not labels.geometry.same_grid(image.geometry):
        raise ValueError(
            f"Prediction {path.name} is not on the CT's voxel grid, so it cannot be compared voxel by voxel."
        )
    return labels


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


def export_from_files(
    image: Path | str,
    segmentation: Path | str,
    dataset_folder: Path | str,
    case_id: str,
    landmarks: Path | str | None = None,
    landmark_file_coordinate_system: CoordinateSystem | None = None,
    prediction_attributes: Mapping[str, str] | None = None,
    **options,
) -> ExportResult:
    """:func:`export_from_scene` for files on disk (the command line): CT, segmentation, optional
    landmarks (``.mrk.json``, or a CSV in a declared or stated system). ``prediction_attributes``
    (``PREDICTION_FILE``, ``MODEL_FOLDER``, ... to values) describe the prediction it started from."""
    from SternumLandmarksLib.markups import create_landmarks_node, read_markups, set_landmark_positions

    from .landmark_files import read_landmarks_csv
    from .mrml import close_scene, new_scene
    from .segmentation_nodes import read_segmentation
    from .volume_nodes import load_volume_node

    scene = new_scene()
    try:
        volume_node = load_volume_node(scene, image)
        segmentation_node = read_segmentation(scene, segmentation)
        landmarks_node = None
        if landmarks is not None and str(landmarks).endswith(".csv"):
            points = protocol_subset(read_landmarks_csv(landmarks, landmark_file_coordinate_system))
            landmarks_node = create_landmarks_node(scene)
            set_landmark_positions(landmarks_node, points)
        elif landmarks is not None:
            landmarks_node = read_markups(scene, landmarks)
        for key, value in (prediction_attributes or {}).items():
            if value is not None:
                segmentation_node.SetAttribute(key, str(value))
        return export_from_scene(
            volume_node, segmentation_node, dataset_folder, case_id, landmarks_node=landmarks_node, **options
        )
    finally:
        close_scene(scene)
