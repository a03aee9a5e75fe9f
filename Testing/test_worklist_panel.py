"""The Worklist section's Qt-free controller on real MRML: what Next case needs, a case that cannot be loaded is
given back, and the annotator's own open case is shown again instead of loaded twice."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from SternumSSMLib.batch import SOURCES
from SternumSSMLib.batch_case import uncertainty_summary
from SternumSSMLib.case_files import write_volume
from SternumSSMLib.geometry import Volume
from SternumSSMLib.markups import write_landmarks_markups
from SternumSSMLib.phantom import PhantomParameters, generate_phantom
from SternumSSMLib.prediction_nodes import prediction_for
from SternumSSMLib.provenance import volume_sha256
from SternumSSMLib.segmentation_nodes import write_segmentation_file
from SternumSSMLib.worklist import live_claims
from SternumSSMLib.worklist_panel import WorklistPanel


@pytest.fixture(scope="module")
def phantom():
    return generate_phantom(PhantomParameters(spacing=(4.0, 4.0, 4.0)))


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


def parameters(**changes) -> SimpleNamespace:
    """The fields of SternumSSMParameterNode that the worklist reads and fills."""
    fields = dict(
        batchFolder=Path(), datasetFolder=Path(), annotator="", inputVolume=None, exportSegmentation=None,
        exportLandmarks=None, caseId="",
    )  # fmt: skip
    return SimpleNamespace(**(fields | changes))


def test_next_case_readiness_says_what_is_missing(mrml_scene, phantom, tmp_path):
    panel = WorklistPanel(mrml_scene)
    assert panel.readiness(parameters()) == (False, "Choose the output folder of a batch (sternum-ssm batch).")
    write_batch_case(tmp_path / "batch", "case1", phantom, tmp_path / "ct1.nrrd")
    can, why = panel.readiness(parameters(batchFolder=tmp_path / "batch"))
    assert not can and "Annotator" in why and [e.case_id for e in panel.entries] == ["case1"]
    assert panel.readiness(parameters(batchFolder=tmp_path / "batch", annotator="Ann")) == (
        True, "1 case(s) waiting; Next case opens case1.",
    )  # fmt: skip
    (tmp_path / "batch" / "case1.json").write_text("{")  # a record someone broke
    with pytest.raises(ValueError):  # Refresh shows the error ...
        panel.ranked(parameters(batchFolder=tmp_path / "batch"), refresh=True)
    assert panel.entries == []  # ... and no stale list stays behind it
    can, why = panel.readiness(parameters(batchFolder=tmp_path / "batch", annotator="Ann"))
    assert not can and why.startswith(f"Cannot rank the cases of {tmp_path / 'batch'}: JSONDecodeError")


def test_a_case_that_cannot_be_loaded_is_given_back(mrml_scene, phantom, tmp_path):
    batch = tmp_path / "batch"
    write_batch_case(batch, "case1", phantom, tmp_path / "moved-away.nrrd")  # the CT is no longer there
    panel, chosen = WorklistPanel(mrml_scene), parameters(batchFolder=batch, annotator="Ann")
    nodes_before = mrml_scene.GetNumberOfNodes()
    with pytest.raises(FileNotFoundError, match=r"moved-away\.nrrd"):
        panel.next_case(chosen)
    assert live_claims(batch) == {} and panel.open_cases == []
    assert mrml_scene.GetNumberOfNodes() == nodes_before and chosen.caseId == ""


def test_her_own_open_case_is_shown_again_not_loaded_twice(mrml_scene, phantom, tmp_path):
    batch = tmp_path / "batch"
    write_volume(phantom.image, tmp_path / "ct1.nrrd")
    write_batch_case(batch, "case1", phantom, tmp_path / "ct1.nrrd")
    panel, chosen = WorklistPanel(mrml_scene), parameters(batchFolder=batch, annotator="Ann")
    first = panel.next_case(chosen)
    assert chosen.caseId == "case1" and prediction_for(mrml_scene, first.volume_node) is first.segmentation_node
    nodes = mrml_scene.GetNumberOfNodes()
    chosen.inputVolume = None  # she picked something else meanwhile
    again = panel.next_case(chosen)
    assert again.volume_node is first.volume_node and chosen.inputVolume is first.volume_node
    assert mrml_scene.GetNumberOfNodes() == nodes and again.claim.token != first.claim.token  # renewed
    assert panel.exported(first.volume_node, chosen) == "Worklist: case case1 is done; its claim is released."
    assert live_claims(batch) == {} and panel.open_cases == []
