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
import SimpleITK as sitk
import slicerio

from .anatomy import default_protocol, label_scheme
from .case_files import check_case_id
from .dicom_series import read_series, series_files
from .export import export_case
from .geometry import CoordinateSystem, ImageGeometry, PointSet, Volume
from .landmark_files import read_landmarks_csv
from .provenance import source_sha256

IMAGE_SUFFIXES = (".nrrd", ".nhdr", ".nii.gz", ".nii", ".mha", ".mhd")
LABEL_SUFFIXES = (".seg.nrrd", ".nrrd", ".nii.gz", ".nii")


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
# Readers
# ---------------------------------------------------------------------------


def read_image(path: Path) -> tuple[Volume, dict]:
    """A CT from a DICOM series folder or an image file, and its source record (kind, format, hash)."""
    if path.is_dir():
        files = series_files(path)
        image = read_series(files)
        source = {"kind": "dicom", "format": "dicom", "sha256": source_sha256(files)}
    else:
        image = sitk.ReadImage(str(path))
        source = {"kind": "file", "format": _suffix(path, IMAGE_SUFFIXES), "sha256": source_sha256([path])}
    volume = Volume.from_sitk(image)
    array = volume.array
    if array.dtype.kind == "f" and np.all(np.mod(array, 1) == 0) and array.min() >= -32768 and array.max() <= 32767:
        volume = Volume(array=array.astype(np.int16), geometry=volume.geometry)
    return volume, source


def read_segmentation_file(
    path: Path, aliases: Mapping[str, str] | None = None, value_names: Mapping[int, str] | None = None
) -> Volume:
    """A label map with the standard values from a segmentation or label map file.

    Files with segment metadata (Slicer ``.seg.nrrd``) are matched by segment name, through
    ``aliases`` for other names; their own label values do not matter. Plain label maps must use
    the standard values, or ``value_names`` maps their values to standard names.
    """
    scheme = label_scheme()
    aliases = dict(aliases or {})
    if path.name.endswith(".nrrd"):
        segmentation = slicerio.read_segmentation(str(path))
        if segmentation.get("segments"):
            return _labels_from_segments(segmentation, aliases)
    labels = Volume.from_sitk(sitk.ReadImage(str(path)))
    values = {v for v in np.unique(labels.array).tolist() if v != scheme.background_value}
    names = {int(value): aliases.get(name, name) for value, name in (value_names or {}).items()}
    bad_names = sorted(set(names.values()) - set(scheme.names))
    if bad_names:
        raise ValueError(f"the value map names {bad_names}, which are not standard ({', '.join(scheme.names)})")
    mapping = {v: scheme.by_name(names[v]).value for v in values if v in names} if names else {v: v for v in values}
    unknown = sorted(v for v in values if mapping.get(v) not in scheme.values)
    if unknown:
        raise ValueError(
            f"label values {unknown} have no standard name; give a value map (e.g. 5=Cartilage) "
            f"to the standard names {', '.join(scheme.names)}"
        )
    standard = np.zeros(labels.array.shape, dtype=np.uint8)
    for value, target in mapping.items():
        standard[labels.array == value] = target
    return Volume(array=standard, geometry=labels.geometry)


def _labels_from_segments(segmentation: dict, aliases: Mapping[str, str]) -> Volume:
    scheme = label_scheme()
    segments = segmentation["segments"]
    names = [aliases.get(s["name"], s["name"]) for s in segments]
    unknown = sorted({s["name"] for s, n in zip(segments, names, strict=True) if n not in scheme.names})
    if unknown:
        raise ValueError(
            f"segments {unknown} are not standard names ({', '.join(scheme.names)}); add them to the alias map"
        )
    doubled = sorted({n for n in names if names.count(n) > 1})
    if doubled:
        raise ValueError(f"more than one segment maps to {doubled}")
    masks = {name: slicerio.segment_mask(segmentation, s["id"]) for s, name in zip(segments, names, strict=True)}
    standard = np.zeros(segmentation["voxels"].shape[-3:], dtype=np.uint8)
    for name, mask in masks.items():
        if np.any(standard[mask]):
            raise ValueError(
                f"segment {name} overlaps another segment in {int(np.count_nonzero(standard[mask]))} voxels"
            )
        standard[mask] = scheme.by_name(name).value
    ijk_to_lps = np.asarray(segmentation["ijkToLPS"], dtype=float)
    spacing = np.linalg.norm(ijk_to_lps[:3, :3], axis=0)
    geometry = ImageGeometry(
        origin_lps=ijk_to_lps[:3, 3], spacing=spacing, direction_lps=ijk_to_lps[:3, :3] / spacing, size=standard.shape
    )
    return Volume(array=np.ascontiguousarray(standard.transpose(2, 1, 0)), geometry=geometry)


def on_image_grid(labels: Volume, image: ImageGeometry) -> Volume:
    """The label map placed on the image's grid without interpolation.

    Slicer crops ``.seg.nrrd`` files to the segments, so a label grid may be a part of the image
    grid (same spacing and axes, whole-voxel offset). Any other grid is refused: resampling labels
    is a decision for the user.
    """
    if labels.geometry.same_grid(image):
        return labels
    offset = image.lps_to_index(labels.geometry.origin_lps[None])[0]
    aligned = (
        np.allclose(labels.geometry.spacing, image.spacing, rtol=1e-5)
        and np.allclose(labels.geometry.direction_lps, image.direction_lps, atol=1e-5)
        and np.allclose(offset, np.round(offset), atol=1e-3)
    )
    if not aligned:
        raise ValueError("the label map's voxel grid differs from the CT's (spacing, axes or half-voxel shift)")
    start = np.round(offset).astype(int)  # (i, j, k) of the label's first voxel in the image
    result = np.zeros(image.shape_kji, dtype=np.uint8)
    source = labels.array
    src, dst = [], []
    for axis_ijk, axis_kji in ((0, 2), (1, 1), (2, 0)):
        lo, hi = start[axis_ijk], start[axis_ijk] + source.shape[axis_kji]
        clip_lo, clip_hi = max(lo, 0), min(hi, image.size[axis_ijk])
        dst.append(slice(clip_lo, clip_hi))
        src.append(slice(clip_lo - lo, clip_hi - lo))
    src_kji, dst_kji = tuple(src[::-1]), tuple(dst[::-1])
    outside = int(np.count_nonzero(source)) - int(np.count_nonzero(source[src_kji]))
    if outside:
        raise ValueError(f"{outside} labelled voxels lie outside the CT")
    result[dst_kji] = source[src_kji]
    return Volume(array=result, geometry=image)


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


def crop_to_box(volume: Volume, box_lps: np.ndarray) -> Volume:
    """The voxels of ``volume`` whose centres fall within the LPS box's footprint on its grid."""
    corners = np.array([[x, y, z] for x in box_lps[:, 0] for y in box_lps[:, 1] for z in box_lps[:, 2]])
    index = volume.geometry.lps_to_index(corners)
    lo = np.clip(np.ceil(index.min(axis=0) - 1e-6), 0, np.asarray(volume.geometry.size) - 1).astype(int)
    hi = np.clip(np.floor(index.max(axis=0) + 1e-6), 0, np.asarray(volume.geometry.size) - 1).astype(int)
    if np.any(index.max(axis=0) < 0) or np.any(index.min(axis=0) > np.asarray(volume.geometry.size) - 1):
        raise ValueError("the common box does not overlap this CT")
    array = volume.array[lo[2] : hi[2] + 1, lo[1] : hi[1] + 1, lo[0] : hi[0] + 1]
    geometry = ImageGeometry(
        origin_lps=volume.geometry.index_to_lps(lo[None].astype(float))[0],
        spacing=volume.geometry.spacing,
        direction_lps=volume.geometry.direction_lps,
        size=array.shape[::-1],
    )
    return Volume(array=np.ascontiguousarray(array), geometry=geometry)


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
    image, source = read_image(case.image)
    labels = on_image_grid(read_segmentation_file(case.label, aliases, value_names), image.geometry)
    points = study_landmarks(case.landmarks, coordinate_system) if case.landmarks else None
    if box is not None:
        image, labels = crop_to_box(image, box), crop_to_box(labels, box)
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
    label_files = _by_name(labels, LABEL_SUFFIXES)
    landmark_files = _by_name(landmarks, (".csv",)) if landmarks else {}
    cases = []
    for path in sorted(images.iterdir()):
        name = path.name if path.is_dir() else _stem(path, IMAGE_SUFFIXES)
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
            box = label_box_lps(read_segmentation_file(case.label, aliases, value_names))
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


def _by_name(folder: Path, suffixes: tuple[str, ...]) -> dict[str, Path]:
    found = {}
    for path in sorted(folder.iterdir()):
        name = _stem(path, suffixes) if path.is_file() else None
        if name is not None and not name.startswith("."):
            found[name] = path
    return found


def _suffix(path: Path, suffixes: tuple[str, ...]) -> str | None:
    return next((s for s in sorted(suffixes, key=len, reverse=True) if path.name.lower().endswith(s)), None)


def _stem(path: Path, suffixes: tuple[str, ...]) -> str | None:
    suffix = _suffix(path, suffixes)
    return path.name[: -len(suffix)] if suffix else None
