"""Reading image files, for every command and worker: CTs, segmentations and label maps, by case.

- :data:`IMAGE_SUFFIXES` is the one list of image file endings; a file's case id is its name without
  the longest of them, so ``case.seg.nrrd`` is case ``case``.
- :func:`read_ct` reads a CT from an image file or a DICOM series folder and refuses, from the
  header, anything but one 3D scalar volume; its voxels are checked where they are used
  (``segmentation_inference.check_ct_volume``, shared by segmentation and the dataset export).
- :func:`read_labels` reads a ``.seg.nrrd`` (values by segment *name*) or a plain label map
  (standard values, or a value map) as standard label values.

Slicer crops ``.seg.nrrd`` files to their segments, so a label grid may be part of another grid:
same spacing and axes, offset by whole voxels. :func:`on_image_grid` and :func:`covering_grid`
place label maps without interpolation; any other grid is refused, since resampling labels is
the user's decision.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import slicerio

from .anatomy import label_scheme
from .dicom_series import read_series, series_files, series_uids
from .geometry import ImageGeometry, Volume
from .provenance import source_sha256

SEGMENTATION_SUFFIX = ".seg.nrrd"
IMAGE_SUFFIXES = (SEGMENTATION_SUFFIX, ".nrrd", ".nhdr", ".nii.gz", ".nii", ".mha", ".mhd")
CT_SUFFIXES = tuple(suffix for suffix in IMAGE_SUFFIXES if suffix != SEGMENTATION_SUFFIX)  # for messages


# ---------------------------------------------------------------------------
# Files by case
# ---------------------------------------------------------------------------


def file_suffix(path: Path, suffixes: tuple[str, ...] = IMAGE_SUFFIXES) -> str | None:
    """The longest of ``suffixes`` the file name ends with (in any case), or None."""
    name = path.name.lower()
    return next((s for s in sorted(suffixes, key=len, reverse=True) if name.endswith(s)), None)


def case_name(path: Path, suffixes: tuple[str, ...] = IMAGE_SUFFIXES) -> str | None:
    """The file name without its suffix, or None for other files and hidden ones (such as the
    ``.partial`` files of interrupted atomic writes)."""
    suffix = file_suffix(path, suffixes)
    return path.name[: -len(suffix)] if suffix and not path.name.startswith(".") else None


def ct_name(path: Path) -> str | None:
    """The case of a CT image file; None for segmentations (``.seg.nrrd``), other files and hidden ones."""
    return case_name(path) if file_suffix(path) != SEGMENTATION_SUFFIX else None


def case_id_of(path: Path) -> str:
    """The case of a CT or segmentation: a DICOM series folder's name, or the file name without its suffix."""
    if path.is_dir():
        return path.name
    return case_name(path) or path.stem


def files_by_case(folder: Path | str, subfolders: tuple[str, ...], suffixes: tuple[str, ...]) -> dict[str, Path]:
    """Files by case id in the existing ``subfolders`` of ``folder``, or in ``folder`` itself if none exists."""
    folder = Path(folder)
    searched = [folder / name for name in subfolders if (folder / name).is_dir()] or [folder]
    found: dict[str, Path] = {}
    for directory in searched:
        for path in sorted(directory.iterdir()):
            case = case_name(path, suffixes) if path.is_file() else None
            if case is None:
                continue
            if case in found:
                raise ValueError(
                    f"Case {case!r} has two files, {found[case]} and {path}; keep one of them and run again."
                )
            found[case] = path
    return found


# ---------------------------------------------------------------------------
# CTs
# ---------------------------------------------------------------------------


def ct_files(inputs: list[str]) -> list[Path]:
    """Expand the inputs into the CTs to segment: files, the image files in a folder (non-recursive, not
    segmentations), and DICOM series folders (a folder without image files in which GDCM finds a series)."""
    files = []
    for entry in map(Path, inputs):
        if entry.is_dir():
            images = sorted(p for p in entry.iterdir() if p.is_file() and ct_name(p) is not None)
            files += images or ([entry] if series_uids(entry) else [])
        elif entry.is_file():
            files.append(entry)
        else:
            raise FileNotFoundError(f"Input {entry} does not exist.")
    if not files:
        raise FileNotFoundError(f"No CT files ({', '.join(CT_SUFFIXES)}) or DICOM series found in {', '.join(inputs)}.")
    return files


def dicom_ct_files(folder: Path, series_uid: str | None = None) -> list[Path]:
    """The sorted files of the folder's DICOM series; ``series_uid`` chooses when it holds several."""
    uids = series_uids(folder)
    if len(uids) > 1 and series_uid not in uids:
        raise ValueError(
            f"{folder} holds {len(uids)} DICOM series: {', '.join(uids)}. Choose one with --series-uid UID, "
            "or put each series in its own folder."
        )
    return series_files(folder, series_uid if len(uids) > 1 else None)


def check_ct_file(path: Path, series_uid: str | None = None) -> None:
    """Refuse, from the headers alone, an input that is not one 3D scalar volume."""
    if path.is_dir():
        path = dicom_ct_files(path, series_uid)[0]  # GDCM reads a slice as a 3D image one voxel deep
    dimension, components = _header(path, "Cannot read CT")
    if dimension != 3 or components != 1:
        raise ValueError(
            f"{path} is a {dimension}D image with {components} components; "
            "a CT for segmentation is one 3D scalar volume."
        )


def _header(path: Path, refusal: str) -> tuple[int, int]:
    """The image's dimension and number of components, from its header alone."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as error:
        raise ValueError(f"{refusal} {path}: {str(error).strip().splitlines()[-1]}") from None
    return reader.GetDimension(), reader.GetNumberOfComponents()


def read_ct(path: Path, series_uid: str | None = None) -> Volume:
    """A CT from an image file or a DICOM series folder (``series_uid`` chooses among several series)."""
    return _read_ct_files(path, _checked_ct_files(path, series_uid))


def read_ct_with_source(path: Path, series_uid: str | None = None) -> tuple[Volume, dict]:
    """:func:`read_ct` and the CT's source record: kind, format and a content hash (of the file, or of the
    series' files in slice order), never names or paths."""
    files = _checked_ct_files(path, series_uid)
    if path.is_dir():
        return _read_ct_files(path, files), {"kind": "dicom", "format": "dicom", "sha256": source_sha256(files)}
    return _read_ct_files(path, files), file_source(path)


def _checked_ct_files(path: Path, series_uid: str | None) -> list[Path]:
    """The files that hold the CT (the file, or the series' files in slice order), checked from the header."""
    if not path.exists():
        raise FileNotFoundError(f"CT {path} does not exist.")
    files = dicom_ct_files(path, series_uid) if path.is_dir() else [path]
    check_ct_file(files[0])
    return files


def _read_ct_files(path: Path, files: list[Path]) -> Volume:
    return Volume.from_sitk(read_series(files) if path.is_dir() else sitk.ReadImage(str(path)))


def file_source(path: Path) -> dict:
    """The source record of an image file: its format (suffix) and content hash, never its name."""
    suffix = file_suffix(path) or "".join(path.suffixes[-2:])
    return {"kind": "file", "format": suffix, "sha256": source_sha256([path])}


# ---------------------------------------------------------------------------
# Segmentations and label maps
# ---------------------------------------------------------------------------


def check_segmentation_file(path: Path) -> bool:
    """Refuse, from the header, a file that is not one 3D label map or ``.seg.nrrd``.

    Returns whether the file has named segments (a Slicer ``.seg.nrrd``) rather than plain label values."""
    dimension, components = _header(path, "cannot read")
    # Segment layers of a .seg.nrrd read as components; a plain label map has one.
    named = dimension == 3 and _has_named_segments(path)
    if dimension != 3 or (components != 1 and not named):
        raise ValueError(
            f"{path.name} is a {dimension}D image with {components} component(s); a segmentation must be a 3D "
            "label map (or .seg.nrrd) of the whole CT volume, not a slice"
        )
    return named


def read_labels(
    path: Path,
    aliases: Mapping[str, str] | None = None,
    value_names: Mapping[int, str] | None = None,
    grid: ImageGeometry | None = None,
) -> Volume:
    """A label map with the standard values from a segmentation or label map file (LPS); errors name the file.

    Files with segment metadata (Slicer ``.seg.nrrd``) are matched by segment name, through
    ``aliases`` for other names; their own label values do not matter. Plain label maps must use
    the standard values, or ``value_names`` maps their values to standard names. With ``grid``
    the labels are placed on it (see :func:`on_image_grid`).
    """
    named = check_segmentation_file(path)
    try:
        if named:
            labels = _labels_from_segments(slicerio.read_segmentation(str(path)), aliases or {})
        else:
            labels = _standard_values(Volume.from_sitk(sitk.ReadImage(str(path))), aliases or {}, value_names or {})
        return labels if grid is None else on_image_grid(labels, grid)
    except (RuntimeError, OSError) as error:
        raise ValueError(f"Cannot read segmentation {path}: {error}") from None
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None


def _has_named_segments(path: Path) -> bool:
    """Whether the file is a segmentation with segment metadata (a Slicer ``.seg.nrrd``), not a plain label map."""
    return path.name.endswith(".nrrd") and bool(slicerio.read_segmentation(str(path), skip_voxels=True).get("segments"))


def _standard_values(labels: Volume, aliases: Mapping[str, str], value_names: Mapping[int, str]) -> Volume:
    scheme = label_scheme()
    values = {v for v in np.unique(labels.array).tolist() if v != scheme.background_value}
    names = {int(value): aliases.get(name, name) for value, name in value_names.items()}
    bad_names = sorted(set(names.values()) - set(scheme.names))
    if bad_names:
        raise ValueError(f"the value map names {bad_names}, which are not standard ({', '.join(scheme.names)})")
    mapping = {v: scheme.by_name(names[v]).value for v in values if v in names} if names else {v: v for v in values}
    unknown = sorted(v for v in values if mapping.get(v) not in scheme.values)
    if unknown:
        raise ValueError(
            f"label values {unknown} have no standard name; give a value map (e.g. --label-value 5=Cartilage) "
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


# ---------------------------------------------------------------------------
# Grids that differ by whole voxels
# ---------------------------------------------------------------------------


def whole_voxel_offset(grid: ImageGeometry, other: ImageGeometry) -> np.ndarray | None:
    """(i, j, k) of ``other``'s first voxel in ``grid`` when the two share spacing and axes and differ by
    whole voxels only; None for any other pair of grids."""
    offset = grid.lps_to_index(other.origin_lps[None])[0]
    aligned = (
        np.allclose(grid.spacing, other.spacing, rtol=1e-5)
        and np.allclose(grid.direction_lps, other.direction_lps, atol=1e-5)
        and np.allclose(offset, np.round(offset), atol=1e-3)
    )
    return np.round(offset).astype(int) if aligned else None


def on_image_grid(labels: Volume, image: ImageGeometry) -> Volume:
    """The label map placed on the image's grid without interpolation: the grids must differ by whole
    voxels only, and no labelled voxel may fall outside the image."""
    if labels.geometry.same_grid(image):
        return labels
    start = whole_voxel_offset(image, labels.geometry)  # (i, j, k) of the label's first voxel in the image
    if start is None:
        raise ValueError("the label map's voxel grid differs from the CT's (spacing, axes or half-voxel shift)")
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


def covering_grid(a: ImageGeometry, b: ImageGeometry) -> ImageGeometry | None:
    """The grid covering both when they differ by whole voxels only (same spacing and axes), else None."""
    offset = whole_voxel_offset(a, b)
    if offset is None:
        return None
    low = np.minimum(0, offset)
    high = np.maximum(np.asarray(a.size), offset + np.asarray(b.size))
    return ImageGeometry(
        origin_lps=a.index_to_lps(low[None].astype(float))[0],
        spacing=a.spacing,
        direction_lps=a.direction_lps,
        size=tuple(high - low),
    )
