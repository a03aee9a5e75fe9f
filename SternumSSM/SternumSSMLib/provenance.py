"""Where a case came from and how much the annotator had to change: hashes, tool version, correction effort.

Correction effort compares the model's prediction with the corrected result:

- per class: Dice and the number of voxels whose membership in the class changed;
- per landmark: the distance in mm between the predicted and the final position;
- the time from prediction to export.

No field here holds a patient identifier: sources are identified by content hashes.
"""

from __future__ import annotations

import hashlib
import math
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import numpy as np

from .anatomy import label_scheme
from .geometry import PointSet, Volume

TOOL_NAME = "sternum-ssm"
_SKIPPED_PARTS = {"__pycache__", ".git"}


def sha256_file(path: Path | str) -> str:
    digest = hashlib.sha256()
    _add_file(digest, Path(path))
    return digest.hexdigest()


def _add_file(digest: hashlib._Hash, path: Path) -> None:
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)


def tool_version() -> dict[str, str]:
    try:
        version = metadata.version(TOOL_NAME)
    except metadata.PackageNotFoundError:
        version = "unknown"
    return {"name": TOOL_NAME, "version": version}


def volume_sha256(volume: Volume) -> str:
    """Hash of the voxel values, their type and the grid (rounded to 1 µm), independent of file format."""
    digest = hashlib.sha256()
    array = np.ascontiguousarray(volume.array)
    digest.update(f"{array.dtype.str}|{array.shape}|".encode())
    geometry = volume.geometry
    for values in (geometry.origin_lps, geometry.spacing, geometry.direction_lps.ravel()):
        digest.update(np.round(np.asarray(values, dtype=float), 6).tobytes())
    digest.update(array.tobytes())
    return digest.hexdigest()


# A model folder may hold a coarse nnU-Net model under this name: the localiser of the automatic ROI.
LOCALISER_FOLDER = "localiser"


def model_id(folder: Path | str, checkpoint_name: str = "checkpoint_final.pth") -> str:
    """The one id of an nnU-Net model folder, as the module, ``predict``, the batch and the export record it.

    SHA-256 over dataset.json, plans.json and every ``fold_<n>/<checkpoint_name>``, each file's name and then
    its bytes, then the same files of a ``localiser/`` model inside it, each by its path there. Notes,
    evaluations and validation outputs beside them leave the id alone, and so does the preset: one model is
    one id whichever folds a run used (the record's preset says which).
    """
    folder = Path(folder)
    files = _model_files(folder, checkpoint_name)
    if not files:
        raise FileNotFoundError(f"{folder} holds no dataset.json, plans.json or fold_*/{checkpoint_name}.")
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.name.encode())
        _add_file(digest, file)
    # The automatic ROI's localiser decides where the model runs.
    for file in _model_files(folder / LOCALISER_FOLDER, checkpoint_name):
        digest.update(file.relative_to(folder).as_posix().encode())
        _add_file(digest, file)
    return digest.hexdigest()


def _model_files(folder: Path, checkpoint_name: str) -> list[Path]:
    files = [folder / "dataset.json", folder / "plans.json", *sorted(folder.glob(f"fold_*/{checkpoint_name}"))]
    return [file for file in files if file.is_file()]


def folder_sha256(folder: Path | str) -> str:
    """Hash of every file's relative path and content under ``folder`` (e.g. a model folder)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"Folder {folder} does not exist.")
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and not _SKIPPED_PARTS.intersection(p.parts)):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        digest.update(sha256_file(path).encode())
    return digest.hexdigest()


def source_sha256(paths: list[Path]) -> str:
    """Hash of a source: one file, or the files of a DICOM series in the given order."""
    if len(paths) == 1:
        return sha256_file(paths[0])
    digest = hashlib.sha256()
    for path in paths:
        digest.update(sha256_file(path).encode())
    return digest.hexdigest()


def segmentation_effort(prediction: Volume, correction: Volume) -> dict:
    """Per-class Dice and changed voxels between a predicted and a corrected label map on one grid.

    Dice is ``None`` for a class absent from both. ``changed_voxels`` counts voxels that entered or
    left the class; ``changed_voxels_total`` counts voxels whose label changed.
    """
    if not prediction.geometry.same_grid(correction.geometry):
        raise ValueError(
            "The prediction and the corrected segmentation are on different voxel grids; "
            "correction effort compares them voxel by voxel, so export on the prediction's grid."
        )
    dice, changed = {}, {}
    for segment_class in label_scheme().classes:
        predicted = prediction.array == segment_class.value
        corrected = correction.array == segment_class.value
        total = int(predicted.sum()) + int(corrected.sum())
        dice[segment_class.name] = None if total == 0 else round(2.0 * int((predicted & corrected).sum()) / total, 6)
        changed[segment_class.name] = int((predicted ^ corrected).sum())
    return {
        "dice": dice,
        "changed_voxels": changed,
        "changed_voxels_total": int((prediction.array != correction.array).sum()),
        "voxel_volume_mm3": float(np.prod(correction.geometry.spacing)),
    }


def landmark_displacement(predicted: PointSet, final: PointSet) -> dict:
    """Distance in mm from each predicted landmark to its final position, matched by name.

    A landmark missing in either set has ``None``; the summary counts only landmarks in both.
    """
    final_lps = final.to("LPS")
    predicted_by_name = dict(zip(predicted.names, predicted.to("LPS").positions, strict=True))
    distances = {}
    for name, position in zip(final_lps.names, final_lps.positions, strict=True):
        before = predicted_by_name.get(name)
        if before is None or not (np.all(np.isfinite(before)) and np.all(np.isfinite(position))):
            distances[name] = None
        else:
            distances[name] = round(float(np.linalg.norm(position - before)), 6)
    known = [d for d in distances.values() if d is not None]
    return {
        "displacement_mm": distances,
        "mean_mm": round(float(np.mean(known)), 6) if known else None,
        "max_mm": round(float(np.max(known)), 6) if known else None,
        "moved_over_2mm": sum(d > 2.0 for d in known),
    }


def seconds_between(start_iso: str | None, end: datetime | None = None) -> float | None:
    """Seconds from an ISO time stamp (e.g. when the prediction was made) to ``end`` (now)."""
    if not start_iso:
        return None
    start = datetime.fromisoformat(start_iso)
    if start.tzinfo is None:
        start = start.replace(tzinfo=timezone.utc)
    seconds = ((end or datetime.now(timezone.utc)) - start).total_seconds()
    return None if not math.isfinite(seconds) else round(seconds, 1)
