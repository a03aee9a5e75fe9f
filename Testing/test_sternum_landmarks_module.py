"""The real SternumLandmarks module file (Widget, Logic, self-test) on the real MRML scene, driven as an
annotator drives it: pick a segmentation, place landmarks with the bundled SCN in its worker process,
drag a point and watch the QA table, export, leave mid-run, and do it all first without torch.

Stand-ins (Testing/slicer_harness.py) only for Qt, CTK, qMRML widgets, the application, dialogs,
ScriptedLoadableModule, parameterNodeWrapper and i18n.
"""

from __future__ import annotations

import sys

import pytest
from slicer_harness import LANDMARKS_MODULE_FILE, hide_packages
from SternumLandmarksLib.landmark_session import landmarks_node_for
from SternumSSMLib.dependencies import DependencyError
from SternumSSMLib.markups import set_landmark_positions
from SternumSSMLib.module_reload import library_modules
from SternumSSMLib.phantom import PhantomParameters, generate_phantom
from SternumSSMLib.prediction_nodes import show_prediction
from SternumSSMLib.scene_contract import SOURCE_SEGMENTATION_REFERENCE
from SternumSSMLib.volume_nodes import volume_node_from_volume

RUN_TIMEOUT_S = 120.0


@pytest.fixture(scope="module")
def phantom():
    # 2 mm, the bundled landmark model's grid spacing.
    return generate_phantom(PhantomParameters(spacing=(2.0, 2.0, 2.0)))


def add_case(scene, phantom, name: str = "CT"):
    """A CT and the SternumSSM segmentation of it (the phantom's truth labels), as after Segment."""
    ct = volume_node_from_volume(scene, phantom.image, name)
    return ct, show_prediction(scene, phantom.labels, ct, record={})


def table_column(table, column: int) -> list[str]:
    return [table.item(row, column).text() for row in range(table.rowCount)]


def move_anterior(node, index: int, millimetres: float) -> None:
    """Drag point ``index`` towards the front (A is +y in RAS), off the bone."""
    x, y, z = node.GetNthControlPointPositionWorld(index)
    node.SetNthControlPointPositionWorld(index, x, y + millimetres, z)


def test_place_landmarks_check_a_dragged_point_and_export(harness, phantom, tmp_path):
    _, segmentation = add_case(harness.scene, phantom)
    _, widget = harness.open(LANDMARKS_MODULE_FILE)
    ui = widget.ui
    # enter() chose the newest SternumSSM segmentation; its CT comes with it.
    assert ui.inputSegmentationSelector.currentNode() is segmentation
    assert ui.placeLandmarksButton.enabled and not ui.cancelButton.enabled

    harness.click(ui.placeLandmarksButton)
    assert ui.cancelButton.enabled and not ui.placeLandmarksButton.enabled
    assert ui.statusLabel.text == "Loading the landmark model..."
    assert harness.tick(until=lambda: not ui.cancelButton.enabled, timeout=RUN_TIMEOUT_S)
    assert harness.errors() == []
    landmarks = ui.landmarksSelector.currentNode()
    assert landmarks.GetNumberOfControlPoints() == 34
    assert landmarks.GetNodeReference(SOURCE_SEGMENTATION_REFERENCE) is segmentation
    assert ui.statusLabel.text.startswith("34 of 34 landmarks placed") and ui.progressBar.value == 100
    assert ui.placeLandmarksButton.enabled
    table = ui.landmarksTableWidget
    assert table.rowCount == 34 and table_column(table, 0)[:2] == ["L01", "L02"]
    assert all(text != "" for text in table_column(table, 2))  # every point has its distance to the bone

    # The user drags L10 15 mm off the bone: its row says so while the point is still in the air.
    move_anterior(landmarks, 9, 15.0)
    assert table.item(9, 3).text().startswith("moved, surface")
    assert float(table.item(9, 2).text()) > 5.0
    assert table.item(9, 0).background is not None  # highlighted for a look
    table.emit("cellClicked(int,int)", 9, 0)  # centres the slice views on L10
    red = harness.scene.GetSingletonNode("Red", "vtkMRMLSliceNode")
    assert red.GetSliceOffset() == pytest.approx(landmarks.GetNthControlPointPositionWorld(9)[2], abs=1e-3)

    harness.click(ui.pseudoLandmarksButton)
    assert ui.statusLabel.text.startswith("102 pseudo-landmarks in")  # 3 between each of 34 neighbour pairs

    ui.datasetFolderPathLineEdit.currentPath = str(tmp_path / "dataset")
    ui.caseIdLineEdit.text = "case_001"
    assert ui.exportButton.enabled and "case_001" in ui.exportPlanLabel.text
    harness.click(ui.exportButton)
    assert harness.errors() == []
    assert (tmp_path / "dataset" / "landmarks" / "case_001.csv").is_file()
    assert "case_001" in ui.exportResultTextEdit.plainText

    ui.landmarksFolderPathLineEdit.currentPath = str(tmp_path)
    ui.csvCoordinateSystemComboBox.currentIndex = 1  # RAS
    harness.click(ui.exportLandmarksButton)
    assert (tmp_path / "case_001.csv").read_text().startswith("# coordinate_system = RAS")
    assert (tmp_path / "case_001_pseudo.mrk.json").is_file()
    harness.click(ui.exportLandmarksButton)  # the files exist now: asked first, then replaced
    assert harness.dialogs[-1] == (
        "confirm",
        "case_001.csv, case_001.mrk.json, case_001_pseudo.csv, case_001_pseudo.mrk.json already exist. Replace them?",
    )

    # A second run on the same segmentation asks before replacing the moved point.
    harness.answers.append(False)
    harness.click(ui.placeLandmarksButton)
    assert "You moved 1 landmarks of this segmentation (L10)" in harness.dialogs[-1][1]
    assert not widget.pollTimer.isActive()


def test_leaving_mid_run_the_result_lands_on_the_segmentation_it_started_from(harness, phantom):
    _, first = add_case(harness.scene, phantom, "CT 1")
    _, widget = harness.open(LANDMARKS_MODULE_FILE)
    ui = widget.ui
    harness.click(ui.placeLandmarksButton)
    _, second = add_case(harness.scene, phantom, "CT 2")
    harness.select(ui.inputSegmentationSelector, second)  # the user moves on to the next case...
    harness.exit(widget)  # ...and leaves the module while the first run is still going
    assert widget._parameterNode is not None and widget.pollTimer.isActive()  # exit() only disconnects the GUI

    assert harness.tick(until=lambda: not widget.pollTimer.isActive(), timeout=RUN_TIMEOUT_S)
    assert harness.errors() == []
    placed = landmarks_node_for(first)
    assert placed is not None and placed.GetNumberOfControlPoints() == 34
    assert landmarks_node_for(second) is None
    parameters = widget.logic.getParameterNode()
    assert parameters.inputSegmentation is second and parameters.landmarks is None  # not attached to CT 2

    harness.enter(widget)
    assert ui.inputSegmentationSelector.currentNode() is second
    assert "no longer selected" in ui.statusLabel.text and ui.placeLandmarksButton.enabled


def test_cancel_stops_the_worker_and_the_panel_is_ready_again(harness, phantom):
    add_case(harness.scene, phantom)
    _, widget = harness.open(LANDMARKS_MODULE_FILE)
    ui = widget.ui
    harness.click(ui.placeLandmarksButton)
    process = widget.panel.worker.run.process
    harness.click(ui.cancelButton)
    assert harness.tick(until=lambda: not widget.pollTimer.isActive(), timeout=30)
    assert process.poll() is not None
    assert ui.statusLabel.text == "Cancelled." and ui.placeLandmarksButton.enabled and not ui.cancelButton.enabled
    assert harness.errors() == []


def test_first_use_without_torch_the_panel_the_table_and_live_qa_work(harness, phantom, monkeypatch):
    # A Slicer that never installed torch or landmarker; the landmark library is imported afresh under it.
    with hide_packages(monkeypatch):
        for name in [name for name in sys.modules if name.startswith("SternumLandmarksLib")]:
            monkeypatch.delitem(sys.modules, name)
        _, segmentation = add_case(harness.scene, phantom)
        _, widget = harness.open(LANDMARKS_MODULE_FILE)
        ui = widget.ui
        assert ui.inputSegmentationSelector.currentNode() is segmentation
        assert ui.placeLandmarksButton.enabled

        harness.click(ui.createEmptyButton)
        landmarks = ui.landmarksSelector.currentNode()
        table = ui.landmarksTableWidget
        assert set(table_column(table, 3)) == {"not placed"}
        # The annotator places the points by hand (here: where the phantom's truth has them); live QA follows.
        set_landmark_positions(landmarks, phantom.landmarks)
        assert table_column(table, 3).count("ok") >= 30
        move_anterior(landmarks, 9, 15.0)
        assert "surface" in table.item(9, 3).text()
        assert harness.errors() == []
        assert "torch" not in sys.modules and "landmarker" not in sys.modules

        # Place landmarks asks for torch through the PyTorch extension, which this Slicer lacks: say so.
        harness.click(ui.placeLandmarksButton)
        # tryWithErrorDisplay shows the dialog, then re-raises; PythonQt prints it to the console.
        assert [type(error) for error in harness.take_escaped()] == [DependencyError]
        assert "Install the PyTorch extension from the Extensions Manager" in harness.errors()[-1]
        assert not widget.pollTimer.isActive()


def test_module_self_test_places_landmarks_for_real(harness):
    module = harness.load(LANDMARKS_MODULE_FILE)
    module.SternumLandmarksTest().runTest()
    delays = [text for kind, text in harness.dialogs if kind == "delay"]
    assert "Place landmarks on a phantom" in delays
    assert harness.errors() == []


def test_help_names_slicer_5_10_and_links_the_readme_and_reload_reloads_both_libraries(harness, monkeypatch):
    description, widget = harness.open(LANDMARKS_MODULE_FILE)
    help_text = description.parent.helpText
    assert "3D Slicer 5.10 or later" in help_text
    assert 'href="https://github.com/sternum-ssm/SlicerSternumSSM#readme"' in help_text

    libraries = library_modules()
    assert "SternumLandmarksLib.landmark_panel" in libraries and "SternumSSMLib.anatomy" in libraries
    for name in libraries:  # restored after the test, so other tests keep the modules they imported
        monkeypatch.setitem(sys.modules, name, sys.modules[name])
    widget.onReload()
    assert harness.app.reloaded == ["SternumLandmarks"]
    assert not [name for name in libraries if name in sys.modules]  # the next import reads the files again
