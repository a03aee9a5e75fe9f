"""``sternum-ssm predict``: segment CTs with an nnU-Net model, headless.

Inputs are image files (NRRD, NIfTI, MetaImage), folders of them, and DICOM series
folders. For each CT it writes ``<case>.seg.nrrd`` (standard names and values) and
``<case>.json`` (settings, timing, post-processing, QA flags, model hash); the case of
a DICOM series is its folder's name.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .atomic import write_text_atomic
from .dicom_series import read_series, series_files, series_uids
from .geometry import Volume
from .roi import Box
from .segmentation_inference import BUNDLED_MODEL, PredictionSettings, SegmentationModel

CT_SUFFIXES = (".nrrd", ".nii.gz", ".nii", ".mha", ".mhd")


def case_id_of(path: Path) -> str:
    name = path.name
    if path.is_dir():
        return name
    for suffix in CT_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def ct_files(inputs: list[str]) -> list[Path]:
    """Expand the inputs into the CTs to segment: files, the image files in a folder (non-recursive),
    and DICOM series folders (a folder without image files in which GDCM finds a series)."""
    files = []
    for entry in map(Path, inputs):
        if entry.is_dir():
            images = sorted(
                p for p in entry.iterdir() if p.name.endswith(CT_SUFFIXES) and not p.name.endswith(".seg.nrrd")
            )
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
            f"{folder} holds {len(uids)} DICOM series: {', '.join(uids)}. Choose one with --series-uid UID."
        )
    return series_files(folder, series_uid if len(uids) > 1 else None)


def check_ct_file(path: Path, series_uid: str | None = None) -> None:
    """Refuse, from the headers alone, an input that is not one 3D scalar volume."""
    if path.is_dir():
        path = dicom_ct_files(path, series_uid)[0]  # GDCM reads a slice as a 3D image one voxel deep
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as error:
        raise ValueError(f"Cannot read CT {path}: {str(error).strip().splitlines()[-1]}") from None
    dimension, components = reader.GetDimension(), reader.GetNumberOfComponents()
    if dimension != 3 or components != 1:
        raise ValueError(
            f"{path} is a {dimension}D image with {components} components; "
            "a CT for segmentation is one 3D scalar volume."
        )


def read_ct(path: Path, series_uid: str | None = None) -> Volume:
    """A CT from an image file or a DICOM series folder."""
    if path.is_dir():
        files = dicom_ct_files(path, series_uid)
        check_ct_file(files[0])
        return Volume.from_sitk(read_series(files))
    check_ct_file(path)
    return Volume.from_sitk(sitk.ReadImage(str(path)))


def write_prediction(labels: Volume, record: dict, segmentation_path: Path, record_path: Path) -> None:
    """The .seg.nrrd (standard names and values, via Slicer's writer) and its JSON record."""
    from .mrml import close_scene, new_scene
    from .segmentation_nodes import segmentation_from_labelmap, write_segmentation

    scene = new_scene()
    try:
        write_segmentation(segmentation_from_labelmap(scene, labels, name=record_path.stem), segmentation_path)
    finally:
        close_scene(scene)
    write_text_atomic(record_path, json.dumps(record, indent=1) + "\n")


def _progress_bar(name: str):
    def show(done: int, total: int) -> None:
        filled = int(30 * done / max(total, 1))
        print(
            f"\r{name}: [{'#' * filled}{'.' * (30 - filled)}] {done}/{total} tiles", end="", file=sys.stderr, flush=True
        )
        if done == total:
            print(file=sys.stderr)

    return show


def command_predict(args: argparse.Namespace) -> int:
    from .segment import segment_ct

    files = ct_files(args.inputs)
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    targets = {path: (output / f"{case_id_of(path)}.seg.nrrd", output / f"{case_id_of(path)}.json") for path in files}
    for path in files:
        check_ct_file(path, args.series_uid)
    existing = [str(t) for pair in targets.values() for t in pair if t.exists()]
    if existing:
        raise FileExistsError(f"Output files exist ({', '.join(existing[:4])}); choose another --output folder.")
    print(f"Loading model {args.model} (checkpoints are only loaded from folders you chose)", file=sys.stderr)
    settings = PredictionSettings(
        preset=args.preset,
        device=args.device,
        trust_pickled_checkpoint=args.trust_model,
        folds=tuple(args.folds) if args.folds else None,
    )
    model = SegmentationModel(args.model, settings)
    roi = Box(np.array(args.roi[:3]), np.array(args.roi[3:])) if args.roi else None
    for path, (segmentation_path, record_path) in targets.items():
        outcome = segment_ct(model, read_ct(path, args.series_uid), roi=roi, progress=_progress_bar(path.name))
        record = outcome.record | {"input": str(path), "model_load_seconds": round(model.load_seconds, 3)}
        write_prediction(outcome.labels, record, segmentation_path, record_path)
        flags = "; ".join(flag.message for flag in outcome.flags) or "no QA flags"
        print(f"{path.name}: {segmentation_path.name} in {outcome.record['total_seconds']:.1f} s; {flags}")
    return 0


def add_predict_parser(commands) -> None:
    predict = commands.add_parser("predict", help="segment CT files with an nnU-Net v2 model")
    predict.add_argument("inputs", nargs="+", help="CT files, folders of CT files and/or DICOM series folders")
    predict.add_argument("--output", required=True, help="folder for <case>.seg.nrrd and <case>.json")
    predict.add_argument("--model", default=str(BUNDLED_MODEL), help="nnU-Net v2 model folder (default: bundled demo)")
    predict.add_argument("--preset", choices=("fast", "accurate"), default="fast")
    predict.add_argument("--device", choices=("auto", "cuda", "mps", "cpu"), default="auto")
    predict.add_argument("--folds", nargs="+", help="override the preset's folds, e.g. 0 1 or all")
    predict.add_argument(
        "--roi", type=float, nargs=6, metavar=("L0", "P0", "S0", "L1", "P1", "S1"), help="LPS box (mm) to segment"
    )
    predict.add_argument(
        "--series-uid", metavar="UID", help="Series Instance UID to read from a DICOM folder that holds several series"
    )
    predict.add_argument(
        "--trust-model",
        action="store_true",
        help="allow checkpoints that need full unpickling (runs code from the file)",
    )
    predict.set_defaults(run=command_predict)
