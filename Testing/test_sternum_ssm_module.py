"""The real SternumSSM module file driven through the annotator's workflow on the real scene (see slicer_harness):
pick a CT, Segment with the real worker and nnU-Net, QA flags, 3D and views, export, leaving mid-run, first use
without torch, reload, the module's own self-test, and the Worklist over real batch outputs."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import slicer
from batch_folder import write_batch_case
from slicer_harness import SSM_MODULE_FILE, SlicerHarness, hide_packages
from SternumLandmarksLib.batch_landmarks import scn_landmark_step
from SternumSSMLib.anatomy import label_scheme
from SternumSSMLib.batch import SOURCES
from SternumSSMLib.batch_case import CaseJob, CaseSteps, SegmentationStep, run_case
from SternumSSMLib.case_files import write_volume
from SternumSSMLib.dataset import current_records, read_manifest
from SternumSSMLib.devices import DEVICES
from SternumSSMLib.geometry import Volume
from SternumSSMLib.image_files import file_source, read_ct
from SternumSSMLib.markups import landmark_points, read_landmarks_markups
from SternumSSMLib.phantom import PhantomParameters, generate_phantom, random_parameters
from SternumSSMLib.prediction_nodes import prediction_for
from SternumSSMLib.provenance import volume_sha256
from SternumSSMLib.roi import crop, index_slices
from SternumSSMLib.scene_contract import PREDICTION_MARKUPS_ID, UNEDITED_PREDICTION_ATTRIBUTE
from SternumSSMLib.segmentation_inference import BUNDLED_MODEL, PredictionSettings
from SternumSSMLib.segmentation_nodes import labelmap_from_segmentation
from SternumSSMLib.segmentation_panel import SELF_TEST_BOX, SELF_TEST_SEED
from SternumSSMLib.views import REVIEW_LAYOUT
from SternumSSMLib.volume_nodes import volume_from_node, volume_node_from_volume
from SternumSSMLib.worklist import CaseClaimedError, claim_case, live_claims, rank_cases

RUN_TIMEOUT = 240.0


@pytest.fixture(scope="module")
def small_ct() -> tuple[Volume, Volume]:
    """The module self-test's phantom (70 x 94 x 93 voxels at 3 mm): its CT and true labels. The cut through the
    costal cartilages keeps the run to a few tiles, and QA flags the cartilage as cut by the scan boundary."""
    phantom = generate_phantom(random_parameters(SELF_TEST_SEED, hard_cases=False, spacing=(3.0, 3.0, 3.0)))
    slices = index_slices(phantom.image.geometry, SELF_TEST_BOX)
    return crop(phantom.image, slices), crop(phantom.labels, slices)


@pytest.fixture(scope="module")
def batch_output(tmp_path_factory) -> Path:
    """A batch output folder written by the batch's own per-case pipeline (the bundled nnU-Net and SCN models,
    in-process) for two self-test phantoms; tests copy it, since claims are written into it."""
    folder = tmp_path_factory.mktemp("batch")
    steps = CaseSteps(
        SegmentationStep.create(BUNDLED_MODEL, PredictionSettings(device="cpu")), scn_landmark_step(device="cpu")
    )
    sources = {}
    for seed in (SELF_TEST_SEED, SELF_TEST_SEED + 1):
        phantom = generate_phantom(random_parameters(seed, hard_cases=False, spacing=(3.0, 3.0, 3.0)))
        ct = write_volume(crop(phantom.image, index_slices(phantom.image.geometry, SELF_TEST_BOX)),
                          folder.parent / f"ct{seed}.nrrd")  # fmt: skip
        result = run_case(CaseJob(f"case{seed}", str(ct)), steps, str(folder / "out"))
        assert result["status"] == "done", result
        sources[f"case{seed}"] = {"source": str(ct), "series_uid": None}
    (folder / "out" / SOURCES).write_text(json.dumps(sources))  # what run_batch writes beside the cases
    return folder / "out"


def run_folders(harness: SlicerHarness) -> list[Path]:
    return sorted(Path(harness.app.temporaryPath).glob("SternumSSM-run-*"))


def centre_ras(labels, values) -> np.ndarray:
    """Centre of mass (RAS) of the voxels with these label values."""
    kji = np.argwhere(np.isin(labels.array, values))
    return labels.geometry.index_to_lps(kji[:, ::-1]).mean(axis=0) * [-1.0, -1.0, 1.0]


def segment(harness: SlicerHarness, widget) -> None:
    """Press Segment and let the poll timer tick until the run has ended."""
    harness.click(widget.ui.segmentButton)
    assert widget.ui.cancelButton.enabled and not widget.ui.segmentButton.enabled
    assert harness.tick(until=lambda: not widget.logic.panel.running, timeout=RUN_TIMEOUT), "the run did not end"


def test_segment_is_enabled_exactly_when_the_inputs_are_valid(harness, small_ct, tmp_path):
    """Defect 1: the old panel left Segment disabled forever (the .ui disables it, only a finished run enabled it)."""
    module, widget = harness.open(SSM_MODULE_FILE)
    assert not widget.ui.segmentButton.enabled
    assert widget.ui.statusLabel.text == "Choose the CT volume to segment."
    ct = volume_node_from_volume(harness.scene, small_ct[0], "CT")
    # The CT selector does not allow "None", so like Slicer's it picks the first CT as soon as there is one.
    assert widget.ui.inputVolumeSelector.currentNode() is ct and widget._parameterNode.inputVolume is ct
    assert widget.ui.segmentButton.enabled and not widget.ui.cancelButton.enabled
    widget.ui.modelFolderPathLineEdit.currentPath = str(tmp_path)  # the user picks a folder without a model
    assert not widget.ui.segmentButton.enabled
    assert "no dataset.json" in widget.ui.statusLabel.text
    widget.ui.modelFolderPathLineEdit.currentPath = ""
    assert widget.ui.segmentButton.enabled
    assert widget.ui.deviceComboBox.items == list(DEVICES)  # mps included, from the one definition
    assert (
        "5.10" in module.parent.helpText
        and 'href="https://' in module.parent.helpText
        and "README" in (module.parent.helpText)
    )


@pytest.mark.slow
def test_annotator_workflow_segment_review_and_export(harness, small_ct, tmp_path):
    _, widget = harness.open(SSM_MODULE_FILE)
    ui = widget.ui
    ct = volume_node_from_volume(harness.scene, small_ct[0], "CT")
    harness.select(ui.inputVolumeSelector, ct)
    segment(harness, widget)

    assert harness.errors() == []
    segmentation = prediction_for(harness.scene, ct)
    assert segmentation is not None and widget.logic.panel.result_node is segmentation
    assert ui.progressBar.value == 100 and ui.statusLabel.text.startswith("Done in")
    assert ui.segmentButton.enabled and not ui.cancelButton.enabled and ui.segmentEditorButton.enabled
    flags = widget.logic.panel.flags
    assert flags and [item.text() for item in ui.qaFlagsListWidget.items] == [f["message"] for f in flags]
    assert run_folders(harness) == []  # the CT copy of the run is gone

    # Shown in 3D, in the layout with the 3D and slice views, centred on the sternum.
    assert segmentation.GetSegmentation().ContainsRepresentation("Closed surface")
    assert segmentation.GetDisplayNode().GetPreferredDisplayRepresentationName3D() == "Closed surface"
    assert harness.app.layoutManager().layout == REVIEW_LAYOUT
    red = harness.scene.GetSingletonNode("Red", "vtkMRMLSliceNode")
    camera = harness.scene.GetFirstNodeByClass("vtkMRMLCameraNode")
    predicted = labelmap_from_segmentation(segmentation, small_ct[0].geometry)
    sternum = centre_ras(predicted, (1, 2, 3))
    np.testing.assert_allclose(camera.GetFocalPoint(), sternum, atol=1e-6)
    assert red.GetSliceToRAS().GetElement(2, 3) == pytest.approx(sternum[2], abs=1e-6)

    # A QA flag click centres the views on the structure it names.
    values = {c.name: c.value for c in label_scheme().classes}
    present = [(i, f) for i, f in enumerate(flags) if f["segment"] and np.any(predicted.array == values[f["segment"]])]
    assert present, flags
    row, flag = present[0]
    ui.qaFlagsListWidget.emit("itemClicked(QListWidgetItem*)", ui.qaFlagsListWidget.item(row))
    flagged = centre_ras(predicted, (values[flag["segment"]],))
    assert np.linalg.norm(flagged - sternum) > 5.0  # a different place, so the views did move
    np.testing.assert_allclose(camera.GetFocalPoint(), flagged, atol=1e-6)
    assert red.GetSliceToRAS().GetElement(2, 3) == pytest.approx(flagged[2], abs=1e-6)

    harness.click(ui.segmentEditorButton)
    editor = slicer.modules.segmenteditor.widgetRepresentation().self().editor
    assert editor.segmentationNode is segmentation and editor.sourceVolumeNode is ct

    # Export the (here uncorrected) result into a new dataset.
    harness.select(ui.exportSegmentationSelector, segmentation)
    ui.datasetFolderPathLineEdit.currentPath = str(tmp_path / "Dataset501_Sternum")
    assert not ui.exportButton.enabled  # no case id yet
    harness.click(ui.suggestCaseIdButton)
    assert ui.caseIdLineEdit.text and ui.exportButton.enabled
    harness.click(ui.exportButton)
    assert harness.errors() == [], harness.errors()
    assert ui.caseIdLineEdit.text in ui.exportResultTextEdit.plainText
    assert list((tmp_path / "Dataset501_Sternum" / "labelsTr").glob(f"{ui.caseIdLineEdit.text}*"))

    # The user deletes the result: nothing left to correct or to focus on.
    harness.scene.RemoveNode(segmentation)
    state = widget.logic.panel.state(widget._parameterNode)
    assert not state.has_result and state.flags == [] and not widget.logic.panel.focus_flag(row)


@pytest.mark.slow
def test_a_result_arriving_after_exit_or_after_a_new_ct_choice_lands_on_the_captured_ct(harness, small_ct):
    """Defect 4: the old exit() dropped the parameter node, so the late result raised AttributeError and was
    lost; and the result went to whatever CT the panel showed when it arrived."""
    _, widget = harness.open(SSM_MODULE_FILE)
    first = volume_node_from_volume(harness.scene, small_ct[0], "first CT")
    second = volume_node_from_volume(harness.scene, small_ct[0], "second CT")
    harness.select(widget.ui.inputVolumeSelector, first)
    harness.click(widget.ui.segmentButton)
    harness.exit(widget)  # the user opens another module while the worker runs
    assert harness.tick(until=lambda: not widget.logic.panel.running, timeout=RUN_TIMEOUT)
    assert harness.errors() == []
    assert prediction_for(harness.scene, first) is not None

    harness.enter(widget)
    assert widget.ui.segmentButton.enabled and widget.ui.statusLabel.text.startswith("Done in")
    harness.click(widget.ui.segmentButton)
    harness.select(widget.ui.inputVolumeSelector, second)  # changes the panel, not the running request
    assert harness.tick(until=lambda: not widget.logic.panel.running, timeout=RUN_TIMEOUT)
    assert harness.errors() == []
    assert prediction_for(harness.scene, second) is None
    assert widget.logic.panel.result_node is prediction_for(harness.scene, first)
    assert run_folders(harness) == []


def test_cancel_ends_the_run_removes_its_folder_and_reenables_segment(harness, small_ct):
    _, widget = harness.open(SSM_MODULE_FILE)
    volume_node_from_volume(harness.scene, small_ct[0], "CT")
    harness.click(widget.ui.segmentButton)
    assert len(run_folders(harness)) == 1
    harness.click(widget.ui.cancelButton)
    assert run_folders(harness) == []  # defect 9: the CT copy used to stay in Slicer's temporary folder
    assert widget.ui.segmentButton.enabled and not widget.ui.cancelButton.enabled
    assert widget.ui.statusLabel.text == "Cancelled." and harness.errors() == []
    assert not widget.pollTimer.isActive() and not widget.logic.panel.worker.running


def test_a_failing_worker_shows_the_error_and_removes_the_run_folder(harness, small_ct, tmp_path):
    _, widget = harness.open(SSM_MODULE_FILE)
    volume_node_from_volume(harness.scene, small_ct[0], "CT")
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "dataset.json").write_text("{}")  # passes the panel's check; the worker cannot load it
    widget.ui.modelFolderPathLineEdit.currentPath = str(broken)
    harness.click(widget.ui.segmentButton)
    assert harness.tick(until=lambda: not widget.logic.panel.running, timeout=120)
    assert len(harness.errors()) == 1 and "Segmentation failed" in harness.errors()[0]
    assert run_folders(harness) == []
    assert widget.ui.segmentButton.enabled and widget.ui.statusLabel.text == "Segmentation failed."


def test_first_use_without_torch_the_panel_works_and_segment_asks_for_pytorch(harness, hidden_packages, small_ct):
    """Defect 2's SternumSSM side: nothing at setup or enter may import torch or nnunetv2."""
    _, widget = harness.open(SSM_MODULE_FILE)
    volume_node_from_volume(harness.scene, small_ct[0], "CT")
    assert widget.ui.segmentButton.enabled and harness.errors() == []
    harness.click(widget.ui.segmentButton)
    assert len(harness.errors()) == 1
    assert "PyTorch extension" in harness.errors()[0] and "Extensions Manager" in harness.errors()[0]
    assert [type(error).__name__ for error in harness.take_escaped()] == ["DependencyError"]  # printed, as Slicer does
    assert not widget.logic.panel.running and run_folders(harness) == []
    assert harness.app.cursor_depth == 0


def test_dataset_summary_asks_before_installing_matplotlib(harness, monkeypatch, tmp_path):
    """Defect 8: Slicer does not ship matplotlib; the summary goes through the first-use check."""
    _, widget = harness.open(SSM_MODULE_FILE)
    widget.ui.datasetFolderPathLineEdit.currentPath = str(tmp_path)
    with hide_packages(monkeypatch, ("matplotlib",)):
        harness.answers.append(False)  # the user declines the install
        harness.click(widget.ui.datasetSummaryButton)
    assert [kind for kind, _ in harness.dialogs] == ["confirm"]
    assert "matplotlib" in harness.dialogs[0][1]
    assert widget.ui.exportResultTextEdit.plainText == ""


def test_reload_forgets_the_library_packages(harness, monkeypatch):
    """Defect 11: Slicer's reload re-reads only the module file; edits to the Lib needed a restart."""
    import sys

    import SternumSSMLib.segmentation_panel as before
    from SternumSSMLib.module_reload import library_modules

    _, widget = harness.open(SSM_MODULE_FILE)
    for name in library_modules():
        monkeypatch.setitem(sys.modules, name, sys.modules[name])  # the other tests keep the modules they imported
    widget.onReload()
    assert harness.app.reloaded == ["SternumSSM"]
    assert "SternumSSMLib.segmentation_panel" not in sys.modules and not library_modules()
    import SternumSSMLib.segmentation_panel as after

    assert after is not before


@pytest.mark.slow
def test_the_module_self_test_segments_a_phantom(harness):
    """Defect 12: the self-test asserted constants only; now it segments a phantom with the bundled model."""
    harness.open(SSM_MODULE_FILE)
    sys.modules["SternumSSM"].SternumSSMTest().runTest()
    assert ("delay", "Phantom segmented") in harness.dialogs


def test_closing_the_scene_mid_run_cancels_it_and_rebinds_a_fresh_parameter_node(harness, small_ct):
    _, widget = harness.open(SSM_MODULE_FILE)
    volume_node_from_volume(harness.scene, small_ct[0], "CT")
    harness.click(widget.ui.segmentButton)
    harness.scene.Clear(0)  # File > Close Scene
    assert not widget.logic.panel.running and run_folders(harness) == []
    assert widget._parameterNode is not None and widget._parameterNode.inputVolume is None
    assert not widget.ui.segmentButton.enabled and widget.ui.statusLabel.text == "Choose the CT volume to segment."
    assert harness.tick(timeout=0.5) is False and harness.errors() == []


@pytest.mark.slow  # the batch_output fixture runs the bundled nnU-Net and SCN models on two phantoms (~20 s)
def test_worklist_next_case_loads_a_claimed_case_and_export_takes_it_off_the_list(harness, batch_output, tmp_path):
    batch, dataset = tmp_path / "batch", tmp_path / "Dataset501_Sternum"
    shutil.copytree(batch_output, batch)
    _, widget = harness.open(SSM_MODULE_FILE)
    ui = widget.ui
    ui.batchFolderPathLineEdit.currentPath = str(batch)
    ui.datasetFolderPathLineEdit.currentPath = str(dataset)
    ranked = [entry.case_id for entry in rank_cases(batch, dataset)]
    assert [item.text().split(" ")[1] for item in ui.worklistListWidget.items] == ranked and len(ranked) == 2
    assert all("landmark confidence" in item.text() for item in ui.worklistListWidget.items)  # with its reasons
    assert not ui.nextCaseButton.enabled and "Annotator" in ui.worklistStatusLabel.text

    ui.annotatorLineEdit.text = "Ann"
    harness.click(ui.nextCaseButton)
    assert harness.errors() == []
    first = ui.caseIdLineEdit.text
    assert first == ranked[0]
    ct = widget._parameterNode.inputVolume
    files = {suffix: batch / f"{first}{suffix}" for suffix in (".json", ".seg.nrrd", ".mrk.json")}
    record = json.loads(files[".json"].read_text())
    # The CT's voxels are the batch's (same image hash), and its segmentation is linked as its prediction.
    assert volume_sha256(volume_from_node(ct)) == record["image_sha256"]
    source = Path(json.loads((batch / SOURCES).read_text())[first]["source"])
    np.testing.assert_array_equal(volume_from_node(ct).array, read_ct(source).array)
    segmentation = prediction_for(harness.scene, ct)
    assert segmentation is widget._parameterNode.exportSegmentation
    assert segmentation.GetAttribute(UNEDITED_PREDICTION_ATTRIBUTE)
    landmarks = widget._parameterNode.exportLandmarks
    expected = read_landmarks_markups(files[".mrk.json"])
    np.testing.assert_allclose(landmark_points(landmarks).positions, expected.positions, atol=1e-4)
    assert landmarks.GetAttribute(PREDICTION_MARKUPS_ID)
    assert "claimed by Ann" in ui.worklistListWidget.item(0).text()

    # A second annotator: the first case is refused to her, Next case gives her the other one.
    ui.annotatorLineEdit.text = "Bob"
    with pytest.raises(CaseClaimedError, match="claimed by Ann"):
        claim_case(batch, first, "Bob")
    harness.click(ui.nextCaseButton)
    second = ui.caseIdLineEdit.text
    assert second == ranked[1] != first and widget._parameterNode.inputVolume is not ct

    # Bob exports his (here uncorrected) case: correction effort is measured against the batch's prediction,
    # his claim is released and the case leaves the list.
    harness.click(ui.exportButton)
    assert harness.errors() == [], harness.errors()
    (exported,) = current_records(read_manifest(dataset))
    assert exported["case_id"] == second and exported["annotator"] == "Bob"
    assert exported["source"] == file_source(Path(json.loads((batch / SOURCES).read_text())[second]["source"]))
    assert exported["correction"]["segmentation"] and exported["correction"]["landmarks"]["max_mm"] == 0.0
    assert exported["prediction"]["model_sha256"] == json.loads((batch / f"{second}.json").read_text())["model_sha256"]
    assert "claim is released" in ui.exportResultTextEdit.plainText
    assert not (batch / "claims" / f"{second}.json").exists()
    assert [item.text().split(" ")[1] for item in ui.worklistListWidget.items] == [first]
    assert "claimed by Ann" in ui.worklistListWidget.item(0).text()
    assert not ui.nextCaseButton.enabled  # nothing left for Bob


def test_worklist_give_case_back_returns_the_case_to_the_list_and_keeps_the_nodes(harness, tmp_path):
    """Before Give case back, an opened case stayed claimed (blocking the others for 4 h) until it was exported."""
    phantom = generate_phantom(PhantomParameters(spacing=(4.0, 4.0, 4.0)))
    batch = tmp_path / "batch"
    write_volume(phantom.image, tmp_path / "ct.nrrd")
    for case_id in ("case1", "case2"):  # the same scores: ranked by case id
        write_batch_case(batch, case_id, phantom, tmp_path / "ct.nrrd")
    _, widget = harness.open(SSM_MODULE_FILE)
    ui = widget.ui
    ui.batchFolderPathLineEdit.currentPath = str(batch)
    ui.annotatorLineEdit.text = "Ann"
    assert not ui.giveBackButton.enabled  # nothing claimed yet

    harness.click(ui.nextCaseButton)
    assert ui.caseIdLineEdit.text == "case1" and ui.giveBackButton.enabled
    ct, nodes = widget._parameterNode.inputVolume, harness.scene.GetNumberOfNodes()
    harness.click(ui.giveBackButton)
    assert harness.errors() == [] and not ui.giveBackButton.enabled and live_claims(batch) == {}
    assert ui.worklistStatusLabel.text.startswith("Case case1 is given back for the others to take")
    assert harness.scene.GetNumberOfNodes() == nodes and widget._parameterNode.inputVolume is ct  # her edits stay
    assert "claimed by" not in ui.worklistListWidget.item(0).text()

    ui.annotatorLineEdit.text = "Bob"  # a colleague's Next case gets the case Ann gave back
    assert not ui.giveBackButton.enabled
    harness.click(ui.nextCaseButton)
    assert harness.errors() == [] and ui.caseIdLineEdit.text == "case1" and ui.giveBackButton.enabled
    # the case comes back to this scene: the nodes Ann left (with any edits) open again, nothing is loaded twice
    assert live_claims(batch)["case1"].annotator == "Bob" and widget._parameterNode.inputVolume is ct
    assert harness.scene.GetNumberOfNodes() == nodes
