"""Import study-style data into a training dataset: the study's four preparation scripts as one call.

Input folders, matched by case name (file name without extensions, or DICOM series folder name):

- CTs: DICOM series folders, NRRD or NIfTI files;
- label maps: ``.seg.nrrd`` (values taken from segment *names*, with an alias map for misspellings
  such as ``Sternum_body``) or plain label maps (standard values, or a value map);
- landmark CSVs, in a coordinate system the user states; the first 34 rows are the protocol and
  extra rows are kept.

Optionally every case is cropped to one common box: the union of all label extents (in patient
coordinates) plus a margin. Each case is accepted or refused with a reason; nothing is guessed.
DICOM tags are never read into file names or the manifest; sources are recorded by hash only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .anatomy import default_protocol
from .dataset import check_case_id
from .export import export_case
from .geometry import CoordinateSystem, PointSet, Volume
from .image_files import CT_SUFFIXES, IMAGE_SUFFIXES, ct_name, files_by_case, read_ct_with_source, read_labels
from .landmark_files import read_landmarks_csv
from .roi import Box, crop, index_slices


@dataclass
class ImportReport:
    accepted: list[tuple[str, str, int]] = field(default_factory=list)  # (source name, case id, version)
    refused: list[tuple[str, str]] = field(default_factory=list)  # (source name, reason)
    notes: list[str] = field(default_factory=list)

    def text(self) -> str:
        lines = [f"Accepted {len(self.accepted)} case(s), refused {len(self.refused)}."]
        lines += [f"  accepted {name} as {case_id} (version {version})" for name, case_id, version in self.accepted]
        lines += [f"  refused  {name}: {reason}" for name, reason in self.refused]
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)


@dataclass
class _Case:
    name: str
    image: Path
    label: Path | None
    landmarks: Path | None


# ---------------------------------------------------------------------------
# Reading a case (files through image_files)
# ---------------------------------------------------------------------------


def _whole_numbers_as_int16(volume: Volume) -> Volume:
    """A float CT whose values are all whole numbers in the int16 range (a rescaled NIfTI) stored as int16."""
    array = volume.array
    if array.dtype.kind == "f" and np.all(np.mod(array, 1) == 0) and array.min() >= -32768 and array.max() <= 32767:
        return Volume(array=array.astype(np.int16), geometry=volume.geometry)
    return volume


def study_landmarks(path: Path, coordinate_system: CoordinateSystem) -> PointSet:
    """A study CSV in LPS, its first rows renamed to the protocol ids; extra rows keep their names."""
    points = read_landmarks_csv(path, coordinate_system).to("LPS")
    ids = default_protocol().ids
    if len(points.names) < len(ids):
        raise ValueError(f"{path.name} has {len(points.names)} landmark rows; the protocol needs {len(ids)}")
    extra = [name if name not in ids else f"extra_{name}" for name in points.names[len(ids) :]]
    return PointSet(names=(*ids, *extra), positions=points.positions, coordinate_system="LPS")


# ---------------------------------------------------------------------------
# Common crop
# ---------------------------------------------------------------------------


def label_box_lps(labels: Volume) -> np.ndarray | None:
    """(2, 3) min and max LPS corner of the labelled voxels (voxel edges included), or None if empty."""
    nonzero = np.argwhere(labels.array > 0)
    if len(nonzero) == 0:
        return None
    lo, hi = nonzero.min(axis=0)[::-1] - 0.5, nonzero.max(axis=0)[::-1] + 0.5  # (i, j, k)
    corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    points = labels.geometry.index_to_lps(corners)
    return np.stack([points.min(axis=0), points.max(axis=0)])


# ---------------------------------------------------------------------------
# The import
# ---------------------------------------------------------------------------


def import_study(
    images: Path | str,
    labels: Path | str,
    dataset_folder: Path | str,
    landmarks: Path | str | None = None,
    landmark_coordinate_system: CoordinateSystem | None = None,
    aliases: Mapping[str, str] | None = None,
    value_names: Mapping[int, str] | None = None,
    crop_margin_mm: float | None = None,
    annotator: str = "",
    split: str = "train",
    case_prefix: str | None = None,
    file_ending: str | None = None,
) -> ImportReport:
    """Import every case found under ``images`` into the dataset and report each one.

    Case ids are the source names, or ``<case_prefix>_0001`` ... in name order when a prefix is
    given (use one when names hold patient identifiers). ``crop_margin_mm`` crops every case to
    the union of all label extents plus that margin.
    """
    if landmarks is not None and landmark_coordinate_system not in ("LPS", "RAS"):
        raise ValueError("State the landmark files' coordinate system (LPS or RAS); study CSVs do not say it.")
    report = ImportReport()
    cases = _find_cases(Path(images), Path(labels), Path(landmarks) if landmarks else None, report)
    if not cases:
        raise FileNotFoundError(
            f"No CT found in {images}: looked for DICOM series folders and image files ending in "
            f"{', '.join(CT_SUFFIXES)}. Give the folder that holds the CTs as --images."
        )
    case_ids = _case_ids(cases, case_prefix, report)
    box = None
    if crop_margin_mm is not None:
        box = _common_box(cases, aliases, value_names, report)
        if box is not None:
            box = box + np.array([[-crop_margin_mm] * 3, [crop_margin_mm] * 3])
            report.notes.append(f"cropped to LPS box {np.round(box, 1).tolist()} (label union + {crop_margin_mm} mm)")
    refused = {name for name, _ in report.refused}
    for case in cases:
        if case.name in refused or case.name not in case_ids:
            continue
        try:
            version = _import_case(case, case_ids[case.name], dataset_folder, box, landmark_coordinate_system,
                                   aliases, value_names, annotator, split, file_ending, crop_margin_mm)  # fmt: skip
        except (ValueError, OSError, RuntimeError) as error:
            report.refused.append((case.name, str(error)))
        else:
            report.accepted.append((case.name, case_ids[case.name], version))
    return report


def _import_case(case, case_id, dataset_folder, box, coordinate_system, aliases, value_names, annotator, split,
                 file_ending, margin) -> int:  # fmt: skip
    image, source = read_ct_with_source(case.image)
    image = _whole_numbers_as_int16(image)
    labels = read_labels(case.label, aliases, value_names, grid=image.geometry)
    points = study_landmarks(case.landmarks, coordinate_system) if case.landmarks else None
    if box is not None:
        try:
            slices = index_slices(image.geometry, Box(box[0], box[1]))
        except ValueError:
            raise ValueError("the common box does not overlap this CT, or covers under two voxels across") from None
        image, labels = crop(image, slices), crop(labels, slices)
    imported = {"crop_margin_mm": margin, "landmark_file_coordinate_system": coordinate_system if points else None}
    result = export_case(
        dataset_folder, case_id, image, labels, points, annotator=annotator, split=split, source=source,
        file_ending=file_ending, extra_provenance={"import": imported},
    )  # fmt: skip
    return result.record["version"]


def _find_cases(images: Path, labels: Path, landmarks: Path | None, report: ImportReport) -> list[_Case]:
    for folder in (images, labels, landmarks):
        if folder is not None and not folder.is_dir():
            raise FileNotFoundError(f"Folder {folder} does not exist.")
    label_files = files_by_case(labels, (), IMAGE_SUFFIXES)
    landmark_files = files_by_case(landmarks, (), (".csv",)) if landmarks else {}
    cases = []
    for path in sorted(images.iterdir()):
        name = path.name if path.is_dir() else ct_name(path)
        if name is None or name.startswith("."):
            continue
        cases.append(_Case(name, path, label_files.get(name), landmark_files.get(name)))
        if name not in label_files:
            report.refused.append((name, "no label map with this name"))
        elif landmarks and name not in landmark_files:
            report.notes.append(f"{name} has no landmark file; imported without landmarks")
    for name in sorted(set(label_files) - {c.name for c in cases}):
        report.refused.append((name, "label map without a CT of the same name"))
    return cases


def _case_ids(cases: list[_Case], prefix: str | None, report: ImportReport) -> dict[str, str]:
    refused = {name for name, _ in report.refused}
    usable = [c.name for c in cases if c.name not in refused]
    if prefix:
        return {name: check_case_id(f"{prefix}_{number:04d}") for number, name in enumerate(usable, start=1)}
    ids = {}
    for name in usable:
        try:
            ids[name] = check_case_id(name)
        except ValueError as error:
            report.refused.append((name, f"{error} Give a case prefix to number the cases instead."))
    return ids


def _common_box(cases, aliases, value_names, report) -> np.ndarray | None:
    boxes = []
    refused = {name for name, _ in report.refused}
    for case in cases:
        if case.name in refused:
            continue
        try:
            box = label_box_lps(read_labels(case.label, aliases, value_names))
        except (ValueError, OSError, RuntimeError) as error:
            report.refused.append((case.name, str(error)))
            continue
        if box is None:
            report.refused.append((case.name, "the label map is empty"))
        else:
            boxes.append(box)
    if not boxes:
        return None
    stacked = np.stack(boxes)
    return np.stack([stacked[:, 0].min(axis=0), stacked[:, 1].max(axis=0)])
