"""A batch output folder as `sternum-ssm batch` writes it, for worklist tests that need no model run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from SternumSSMLib.batch import SOURCES
from SternumSSMLib.batch_case import uncertainty_summary
from SternumSSMLib.geometry import Volume
from SternumSSMLib.markups import write_landmarks_markups
from SternumSSMLib.provenance import volume_sha256
from SternumSSMLib.segmentation_nodes import write_segmentation_file


def write_batch_case(batch: Path, case_id: str, phantom, ct_path: Path) -> None:
    """A committed case as the batch writes it: segmentation, landmarks, record; the CT in the private index."""
    batch.mkdir(exist_ok=True)
    write_segmentation_file(phantom.labels, batch / f"{case_id}.seg.nrrd", name=case_id)
    write_landmarks_markups(phantom.landmarks, batch / f"{case_id}.mrk.json")
    confidence = dict.fromkeys(phantom.landmarks.names, 0.9)
    record = {
        "case_id": case_id, "image_sha256": volume_sha256(phantom.image), "qa_flags": [],
        "model_sha256": "e" * 64, "preset": "fast", "predicted_at": "2026-01-02T03:04:05+00:00",
        "uncertainty": uncertainty_summary(Volume(np.zeros_like(phantom.labels.array, np.float32),
                                                  phantom.labels.geometry), phantom.labels),
        "landmarks": {"mean_confidence": 0.9, "placed": len(confidence), "flags": [], "confidence": confidence},
    }  # fmt: skip
    (batch / f"{case_id}.json").write_text(json.dumps(record))
    sources = json.loads((batch / SOURCES).read_text()) if (batch / SOURCES).is_file() else {}
    (batch / SOURCES).write_text(json.dumps(sources | {case_id: {"source": str(ct_path), "series_uid": None}}))
