"""Write phantom cases in the study's own formats, one folder per kind of file.

Layout under the output folder::

    images/<case>.<nrrd|nii.gz>          CT in HU, int16
    labels/<case>.<seg.nrrd|nrrd|nii.gz> label map with the standard values 0-4
    landmarks/<case>.csv                 name, X, Y, Z with the coordinate system declared
    landmarks/<case>.mrk.json            the same points as Slicer markups (file in LPS)
    parameters/<case>.json               the phantom knobs that made the case

This is the layout the dataset import reads. Existing files are never replaced.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING

import SimpleITK as sitk

from .atomic import atomic_output_path, write_text_atomic
from .dataset import check_case_id
from .geometry import CoordinateSystem, Volume
from .landmark_files import write_landmarks_csv

if TYPE_CHECKING:  # the phantom module pulls in scipy; writing a volume should not
    from .phantom import Phantom

IMAGE_FORMATS = ("nrrd", "nii.gz")
LABEL_FORMATS = ("seg.nrrd", "nrrd", "nii.gz")


def case_paths(folder: Path | str, case_id: str, image_format: str = "nrrd", label_format: str = "seg.nrrd"):
    """Where ``write_case`` puts each file of a case."""
    if image_format not in IMAGE_FORMATS:
        raise ValueError(f"Image format {image_format!r} is not supported; use one of {IMAGE_FORMATS}.")
    if label_format not in LABEL_FORMATS:
        raise ValueError(f"Label format {label_format!r} is not supported; use one of {LABEL_FORMATS}.")
    folder = Path(folder)
    case_id = check_case_id(case_id)
    return {
        "image": folder / "images" / f"{case_id}.{image_format}",
        "labels": folder / "labels" / f"{case_id}.{label_format}",
        "landmarks_csv": folder / "landmarks" / f"{case_id}.csv",
        "landmarks_mrk": folder / "landmarks" / f"{case_id}.mrk.json",
        "parameters": folder / "parameters" / f"{case_id}.json",
    }


def write_volume(volume: Volume, path: Path | str, overwrite: bool = False) -> Path:
    """Write a volume with its LPS geometry through SimpleITK (format from the extension)."""
    with atomic_output_path(path, overwrite=overwrite) as temporary:
        sitk.WriteImage(volume.to_sitk(), str(temporary), useCompression=True)
    return Path(path)


def write_case(
    phantom: Phantom,
    folder: Path | str,
    case_id: str,
    image_format: str = "nrrd",
    label_format: str = "seg.nrrd",
    landmark_coordinate_system: CoordinateSystem = "LPS",
) -> dict[str, Path]:
    """Write every file of one phantom case; refuses before writing anything if one exists."""
    paths = case_paths(folder, case_id, image_format, label_format)
    existing = [str(path) for path in paths.values() if path.exists()]
    if existing:
        raise FileExistsError(f"Case {case_id!r} already has files ({', '.join(existing)}); choose another case id.")
    for path in paths.values():
        path.parent.mkdir(parents=True, exist_ok=True)

    write_volume(phantom.image, paths["image"])
    if label_format != "seg.nrrd":
        write_volume(phantom.labels, paths["labels"])
    write_landmarks_csv(paths["landmarks_csv"], phantom.landmarks, landmark_coordinate_system)
    _write_slicer_files(phantom, paths, write_segmentation_file=label_format == "seg.nrrd")
    parameters = dataclasses.asdict(phantom.parameters)
    parameters["expected_cartilage_pieces_per_side"] = phantom.cartilage_pieces_per_side
    write_text_atomic(paths["parameters"], json.dumps(parameters, indent=1) + "\n")
    return paths


def _write_slicer_files(phantom: Phantom, paths: dict[str, Path], write_segmentation_file: bool) -> None:
    """The .seg.nrrd and .mrk.json go through Slicer's own MRML writers (headless scene)."""
    from .markups import create_landmarks_node, set_landmark_positions, write_markups
    from .mrml import headless_scene
    from .segmentation_nodes import segmentation_from_labelmap, write_segmentation

    with headless_scene() as scene:
        if write_segmentation_file:
            segmentation = segmentation_from_labelmap(scene, phantom.labels, name=paths["labels"].name.split(".")[0])
            write_segmentation(segmentation, paths["labels"])
        node = create_landmarks_node(scene, name=paths["landmarks_mrk"].name.split(".")[0])
        set_landmark_positions(node, phantom.landmarks)
        write_markups(node, paths["landmarks_mrk"])
