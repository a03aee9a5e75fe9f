"""The Worklist section's Qt-free controller on real MRML: what Next case needs, a case that cannot be loaded is
given back, the annotator's own open case is shown again instead of loaded twice, and Give case back."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from batch_folder import write_batch_case
from SternumSSMLib.case_files import write_volume
from SternumSSMLib.phantom import PhantomParameters, generate_phantom
from SternumSSMLib.prediction_nodes import prediction_for
from SternumSSMLib.worklist import claim_case, live_claims
from SternumSSMLib.worklist_panel import WorklistPanel


@pytest.fixture(scope="module")
def phantom():
    return generate_phantom(PhantomParameters(spacing=(4.0, 4.0, 4.0)))


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


def test_give_back_releases_her_claim_and_leaves_her_nodes(mrml_scene, phantom, tmp_path):
    batch = tmp_path / "batch"
    write_volume(phantom.image, tmp_path / "ct1.nrrd")
    write_batch_case(batch, "case1", phantom, tmp_path / "ct1.nrrd")
    panel, chosen = WorklistPanel(mrml_scene), parameters(batchFolder=batch, annotator="Ann")
    assert panel.held_case(chosen) is None
    with pytest.raises(ValueError, match="Ann holds no case"):
        panel.give_back(chosen)
    opened = panel.next_case(chosen)
    assert panel.held_case(chosen) is opened and panel.held_case(parameters(annotator="Bob")) is None
    nodes = mrml_scene.GetNumberOfNodes()
    assert panel.give_back(chosen) == "Case case1 is given back for the others to take; its nodes stay in the scene."
    assert live_claims(batch) == {} and panel.open_cases == [] and panel.held_case(chosen) is None
    assert [(e.case_id, e.claimed_by) for e in panel.entries] == [("case1", None)]  # on the list again, unclaimed
    assert mrml_scene.GetNumberOfNodes() == nodes and chosen.inputVolume is opened.volume_node  # her edits stay
    loaded = (opened.volume_node, opened.segmentation_node, opened.landmarks_node)
    assert all(mrml_scene.IsNodePresent(node) for node in loaded)
    again = panel.next_case(parameters(batchFolder=batch, annotator="Bob"))
    assert panel.notice == "" and live_claims(batch)["case1"].annotator == "Bob"
    # the case comes back to this scene: its kept nodes (and any edits in them) open, nothing is loaded twice
    assert (again.volume_node, again.segmentation_node, again.landmarks_node) == loaded
    assert mrml_scene.GetNumberOfNodes() == nodes and panel.given_back == []


def test_give_back_leaves_a_claim_taken_over_meanwhile(mrml_scene, phantom, tmp_path):
    batch = tmp_path / "batch"
    write_volume(phantom.image, tmp_path / "ct1.nrrd")
    write_batch_case(batch, "case1", phantom, tmp_path / "ct1.nrrd")
    panel, chosen = WorklistPanel(mrml_scene, stale_after_s=0.0), parameters(batchFolder=batch, annotator="Ann")
    panel.next_case(chosen)
    taken = claim_case(batch, "case1", "Bob", stale_after_s=0.0)  # her claim went stale; Bob took the case over
    assert panel.give_back(chosen).startswith("The claim on case1 had expired and was taken over")
    assert (batch / "claims" / "case1.json").read_text().count(taken.token) == 1 and panel.open_cases == []
