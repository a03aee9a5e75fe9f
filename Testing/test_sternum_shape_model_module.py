"""The real SternumShapeModel module file (Widget, Logic, self-test) on the real MRML scene, driven as a user
drives it: choose a dataset, build in the worker process, move the mode sliders, show a case, export.

Stand-ins (Testing/slicer_harness.py) only for Qt, CTK, qMRML widgets, the application, dialogs,
ScriptedLoadableModule, parameterNodeWrapper and i18n.
"""

from __future__ import annotations

import numpy as np
import pytest
import slicer.util
from slicer_harness import REPOSITORY
from SternumShapeModelLib.evaluation import write_phantom_dataset
from SternumShapeModelLib.mesh_io import read_mesh
from SternumShapeModelLib.shape_panel import CASE_NODE_NAME
from SternumSSMLib.phantom import random_parameters

SHAPE_MODULE_FILE = REPOSITORY / "SternumShapeModel" / "SternumShapeModel.py"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("shape_module") / "dataset"
    write_phantom_dataset(
        root, [random_parameters(seed, hard_cases=False, spacing=(2.0, 2.0, 2.0)) for seed in range(4)]
    )
    return root


@pytest.mark.slow
def test_build_in_background_then_explore_and_export(harness, dataset, tmp_path):
    _, widget = harness.open(SHAPE_MODULE_FILE)
    ui = widget.ui
    assert not ui.buildButton.enabled and ui.statusLabel.text == "Choose the dataset folder."
    ui.datasetPathLineEdit.currentPath = str(dataset)
    ui.outputPathLineEdit.currentPath = str(tmp_path / "model")
    assert ui.buildButton.enabled and not ui.mode1Slider.enabled

    harness.click(ui.buildButton)
    assert ui.cancelButton.enabled and not ui.buildButton.enabled
    assert harness.tick(until=lambda: not ui.cancelButton.enabled, timeout=300)
    assert ui.progressBar.value == 100 and (tmp_path / "model" / "model.npz").is_file()
    assert ui.caseComboBox.count == 4 and ui.mode1Slider.enabled
    assert "4 cases" in ui.summaryTextEdit.plainText

    mean = widget.panel.mean_node
    before = slicer.util.arrayFromModelPoints(mean).copy()
    ui.mode1Slider.value = 2.0
    moved = slicer.util.arrayFromModelPoints(mean)
    assert np.abs(moved - before).max() > 1.0

    harness.click(ui.showCaseButton)
    case_node = widget.panel.case_node
    assert case_node.GetName() == f"{CASE_NODE_NAME} {ui.caseComboBox.currentText}"
    assert case_node.GetDisplayNode().GetScalarVisibility()

    ui.exportPathLineEdit.currentPath = str(tmp_path / "shape.k")
    harness.click(ui.exportButton)
    exported = read_mesh(tmp_path / "shape.k")
    np.testing.assert_allclose(exported.points_lps, moved * [-1, -1, 1], atol=1e-4)
    assert harness.errors() == []

    # The model folder now exists: a second build into it is blocked before it starts.
    assert not ui.buildButton.enabled and "never overwritten" in ui.buildButton.toolTip


@pytest.mark.slow
def test_module_self_test_passes(harness):
    module = harness.load(SHAPE_MODULE_FILE)
    module.SternumShapeModelTest().runTest()
    assert ("delay", "Shape model test passed") in harness.dialogs


def test_reload_forgets_every_library_package(harness, monkeypatch):
    """Slicer's reload re-reads only the module file; the shape model's Lib sits on both other packages."""
    import sys

    from SternumSSMLib.module_reload import library_modules

    _, widget = harness.open(SHAPE_MODULE_FILE)
    loaded = library_modules()
    packages = {name.partition(".")[0] for name in loaded}
    assert packages == {"SternumSSMLib", "SternumLandmarksLib", "SternumShapeModelLib"}
    for name in loaded:
        monkeypatch.setitem(sys.modules, name, sys.modules[name])  # the other tests keep the modules they imported
    widget.onReload()
    assert harness.app.reloaded == ["SternumShapeModel"] and not library_modules()
