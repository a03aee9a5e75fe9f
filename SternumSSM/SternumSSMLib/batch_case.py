"""One case of a batch, as an engine worker runs it: read the CT, segment, QA, landmarks, uncertainty, write.

The steps are objects the caller hands in. Segmentation is the core's own; the landmark step
comes from ``SternumLandmarksLib`` (this package never imports it) and follows :class:`LandmarkStep`.

Models load once per worker process: :func:`cached_model` keeps each loaded model under its
step, a frozen value that holds the model's id (a hash of its files) and its settings.

A case's four files appear together, from one attempt, or not at all. They are written into
``.staging/<case>.<token>/`` first; then, under a lock on the staging folder, the first three
are moved to their final names and ``<case>.json`` last. That file is the commit: an attempt
that finds it (an earlier attempt finished before its worker died, or a duplicate ran) leaves
everything as it is. Files of an attempt killed before its commit are never outputs: the next
attempt replaces them.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
import uuid
from collections.abc import Hashable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .atomic import fsync_directory, write_text_atomic
from .dataset import check_case_id, dataset_lock, sha256_file
from .geometry import PointSet, Volume
from .image_files import read_ct
from .landmark_files import write_landmarks_csv
from .markups import write_landmarks_markups
from .provenance import model_id, tool_version, volume_sha256
from .roi import Box
from .segmentation_inference import ModelFolder, PredictionSettings, SegmentationModel
from .segmentation_nodes import write_segmentation_file

STAGING = ".staging"
OUTPUT_SUFFIXES = (".seg.nrrd", ".mrk.json", ".csv", ".json")
# A voxel whose top class probability is below 0.95 counts as uncertain (the module's overlay threshold).
UNCERTAIN_ABOVE = 0.05


@dataclass(frozen=True)
class PlacedLandmarks:
    """A landmark step's result: protocol points in LPS (NaN rows unplaced), confidence in [0, 1], flags."""

    points: PointSet
    confidence: np.ndarray
    flags: list[str]
    record: dict


class LandmarkStep(Protocol):
    """Places landmarks on a predicted segmentation. Implementations are frozen dataclasses (hashable,
    picklable) naming their model by ``model_id``; ``load`` runs once per worker."""

    model_id: str

    def load(self) -> Any: ...

    def place(self, model: Any, labels: Volume, ct: Volume) -> PlacedLandmarks: ...


@dataclass(frozen=True)
class SegmentationStep:
    """An nnU-Net model folder with its settings resolved, identified by the hash of its files."""

    model_folder: str
    settings: PredictionSettings
    model_id: str

    @classmethod
    def create(cls, model_folder: Path | str, settings: PredictionSettings) -> SegmentationStep:
        """Resolve the preset and hash the model once, on the machine that plans the batch."""
        folder = ModelFolder.open(model_folder, settings.checkpoint_name)
        resolved = settings.resolve(folder)
        return cls(str(folder.path), resolved, model_id(folder.path, resolved.checkpoint_name))

    def load(self) -> SegmentationModel:
        return SegmentationModel(self.model_folder, self.settings)


@dataclass(frozen=True)
class CaseSteps:
    """Everything a worker needs besides the case: both steps, the optional ROI and torch's thread count."""

    segmentation: SegmentationStep
    landmarks: LandmarkStep
    roi: Box | None = None
    torch_threads: int | None = None


@dataclass(frozen=True)
class CaseJob:
    """One CT to predict. ``source`` is a path and never leaves the planning machine's private index."""

    case_id: str
    source: str
    series_uid: str | None = None


_MODELS: dict[Hashable, Any] = {}


def cached_model(step: SegmentationStep | LandmarkStep) -> tuple[Any, bool]:
    """The step's model, loaded on this worker's first use; True when this call loaded it."""
    if step not in _MODELS:
        _MODELS[step] = step.load()
        return _MODELS[step], True
    return _MODELS[step], False


def worker_id() -> str:
    """Host and process of this worker: models are counted per process."""
    return f"{socket.gethostname()}:{os.getpid()}"


def output_paths(output: Path, case_id: str) -> dict[str, Path]:
    return {suffix: output / f"{case_id}{suffix}" for suffix in OUTPUT_SUFFIXES}


def is_committed(output: Path, case_id: str) -> bool:
    return (output / f"{case_id}.json").is_file()


def run_case(job: CaseJob, steps: CaseSteps, output: str) -> dict:
    """Predict one case and publish its files; never raises for a bad case: the result says failed and why."""
    started = time.perf_counter()
    folder = Path(output)
    result = {"case_id": job.case_id, "worker": worker_id(), "models_loaded": []}
    if is_committed(folder, job.case_id):
        return result | {"status": "done", "note": "committed by an earlier attempt", "seconds": 0.0}
    try:
        if steps.torch_threads:
            import torch

            torch.set_num_threads(steps.torch_threads)
        record, loaded = _predict(job, steps)
        result["models_loaded"] = loaded
        published = _publish(folder, job.case_id, record)
    except Exception as error:  # one bad case (corrupt CT, out of memory, ...) must not stop the batch
        return result | {"status": "failed", "error": error_text(error, job), "seconds": _since(started)}
    note = {} if published else {"note": "another attempt committed first; its files were kept"}
    return result | {"status": "done", "seconds": _since(started), **note}


def error_text(error: BaseException, job: CaseJob) -> str:
    """The error in one line, with the CT's path (which may name a patient) replaced by the case id."""
    message = " ".join(str(error).split()) or type(error).__name__
    for text in sorted({job.source, str(Path(job.source).absolute()), str(Path(job.source).parent)}, key=len)[::-1]:
        if text not in ("", "."):
            message = message.replace(text, f"<CT of {job.case_id}>")
    return f"{type(error).__name__}: {message}"


def _since(started: float) -> float:
    return round(time.perf_counter() - started, 3)


def _predict(job: CaseJob, steps: CaseSteps) -> tuple[dict, list[str]]:
    """Everything of one case in memory: the record plus the arrays and points to write."""
    timings, loaded = {}, []
    clock = time.perf_counter()
    ct = read_ct(Path(job.source), job.series_uid)
    timings["read"] = _since(clock)

    from .segment import segment_ct

    segmentation_model, fresh = cached_model(steps.segmentation)
    loaded += ["segmentation"] if fresh else []
    clock = time.perf_counter()
    outcome = segment_ct(segmentation_model, ct, roi=steps.roi, with_uncertainty=True)
    timings["segmentation"] = _since(clock)

    landmark_model, fresh = cached_model(steps.landmarks)
    loaded += ["landmarks"] if fresh else []
    clock = time.perf_counter()
    landmarks = steps.landmarks.place(landmark_model, outcome.labels, ct)
    timings["landmarks"] = _since(clock)

    confidence = np.nan_to_num(landmarks.confidence)
    record = {
        "case_id": job.case_id,
        "tool": tool_version(),
        "image_sha256": volume_sha256(ct),
        "image": {"size": list(ct.geometry.size), "spacing_mm": [round(s, 6) for s in ct.geometry.spacing]},
        **{key: value for key, value in outcome.record.items() if key != "model_folder"},
        "model_name": Path(steps.segmentation.model_folder).name,
        "settings": asdict(steps.segmentation.settings) | {"torch_threads": steps.torch_threads},
        "landmark_model_sha256": steps.landmarks.model_id,
        "landmarks": {
            "coordinate_system": "LPS",
            "placed": int(landmarks.points.defined.sum()),
            "mean_confidence": round(float(confidence.mean()), 4) if len(confidence) else 0.0,
            "confidence": dict(zip(landmarks.points.names, confidence.round(3).tolist(), strict=True)),
            "flags": landmarks.flags,
            **landmarks.record,
        },
        "uncertainty": uncertainty_summary(outcome.uncertainty, outcome.labels),
        "timings_s": timings,
    }
    return {"record": record, "labels": outcome.labels, "points": landmarks.points}, loaded


def uncertainty_summary(uncertainty: Volume, labels: Volume) -> dict:
    """Voxel uncertainty (1 - top class probability) over the predicted structures and the voxels in doubt.

    ``uncertain_fraction`` = uncertain voxels / (labelled or uncertain voxels): the share of the
    structure the model was unsure about, 0 for a sure prediction, in [0, 1].
    """
    values = uncertainty.array
    uncertain = values > UNCERTAIN_ABOVE
    region = uncertain | (labels.array > 0)
    voxel_ml = float(np.prod(labels.geometry.spacing)) / 1000.0
    return {
        "uncertain_above": UNCERTAIN_ABOVE,
        "uncertain_ml": round(float(uncertain.sum()) * voxel_ml, 3),
        "uncertain_fraction": round(float(uncertain.sum()) / max(int(region.sum()), 1), 4),
        "mean_in_region": round(float(values[region].mean()), 4) if region.any() else 0.0,
    }


def _publish(output: Path, case_id: str, prediction: dict) -> bool:
    """Write the four files beside the outputs, then move them into place with ``<case>.json`` last.

    Returns False when another attempt had committed the case first; its files stay.
    """
    check_case_id(case_id)
    staging = output / STAGING / f"{case_id}.{uuid.uuid4().hex[:8]}"
    staging.mkdir(parents=True)
    try:
        staged = output_paths(staging, case_id)
        clock = time.perf_counter()
        write_segmentation_file(prediction["labels"], staged[".seg.nrrd"], name=case_id)
        write_landmarks_markups(prediction["points"], staged[".mrk.json"])
        write_landmarks_csv(staged[".csv"], prediction["points"], "LPS")
        record = prediction["record"]
        record["files"] = {suffix: sha256_file(staged[suffix]) for suffix in OUTPUT_SUFFIXES[:3]}
        record["timings_s"]["write"] = _since(clock)
        record["timings_s"]["total"] = round(sum(record["timings_s"].values()), 3)
        write_text_atomic(staged[".json"], json.dumps(record, indent=1) + "\n")
        with dataset_lock(output / STAGING):
            if is_committed(output, case_id):
                return False
            for suffix, target in output_paths(output, case_id).items():
                os.replace(staged[suffix], target)  # ".json" comes last: it commits the case
            fsync_directory(output)
        return True
    finally:
        shutil.rmtree(staging, ignore_errors=True)
