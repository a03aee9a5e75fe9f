"""The harness's stand-ins cannot hide a mistake: parameters live on the real node with Slicer's semantics and
reject wrong types, widgets come from the real .ui, unknown signals or properties and disabled buttons fail."""

# No `from __future__ import annotations`: the wrapper class below is local, and typing.get_type_hints (as Slicer's
# wrapper uses it) resolves string annotations in module globals only.
import sys
from pathlib import Path
from typing import Annotated

import pytest
import slicer
from slicer_harness import SSM_MODULE_FILE


def wrapper_class():
    from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper

    @parameterNodeWrapper
    class Parameters:
        volume: slicer.vtkMRMLScalarVolumeNode
        folder: Path
        mode: Annotated[str, Choice(["fast", "accurate"])] = "fast"
        count: Annotated[int, WithinRange(1, 5)] = 2
        flag: bool = False
        name: str = ""

    return Parameters


def test_parameters_live_on_the_real_node_with_slicer_semantics(harness):
    node = harness.scene.AddNewNodeByClass("vtkMRMLScriptedModuleNode")
    parameters = wrapper_class()(node)
    # Defaults are written on wrap, as text, as Slicer's serializers write them.
    assert [node.GetParameter(n) for n in ("mode", "count", "flag", "name", "folder")] == [
        "fast",
        "2",
        "False",
        "",
        ".",
    ]
    assert parameters.volume is None and parameters.folder == Path()
    ct = harness.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode")
    parameters.volume = ct
    assert node.GetNodeReference("volume") is ct
    parameters.flag = True
    assert node.GetParameter("flag") == "True" and wrapper_class()(node).flag is True


@pytest.mark.parametrize(
    ("name", "value", "error"),
    [
        ("mode", "slow", ValueError),  # Choice
        ("count", 9, ValueError),  # WithinRange
        ("count", "3", TypeError),
        ("flag", "True", TypeError),
        ("folder", "/tmp", TypeError),  # a str is not a Path
        ("name", None, ValueError),
        ("volume", "vtkMRMLScalarVolumeNode1", TypeError),
    ],
)
def test_a_wrong_value_is_refused(harness, name, value, error):
    parameters = wrapper_class()(harness.scene.AddNewNodeByClass("vtkMRMLScriptedModuleNode"))
    with pytest.raises(error):
        setattr(parameters, name, value)


def test_a_node_of_another_class_is_refused(harness):
    parameters = wrapper_class()(harness.scene.AddNewNodeByClass("vtkMRMLScriptedModuleNode"))
    with pytest.raises(TypeError):
        parameters.volume = harness.scene.AddNewNodeByClass("vtkMRMLSegmentationNode")


def test_widgets_signals_and_buttons_are_those_of_the_real_ui(harness):
    _, widget = harness.open(SSM_MODULE_FILE)
    with pytest.raises(AttributeError):
        widget.ui.applyButton  # noqa: B018 - not in SternumSSM.ui
    with pytest.raises(AttributeError, match="no signal"):
        widget.ui.segmentButton.connect("activated()", print)
    with pytest.raises(AttributeError, match="no property"):
        widget.ui.segmentButton.enabeld = True
    with pytest.raises(AssertionError, match="disabled"):
        harness.click(widget.ui.segmentButton)  # no CT in the scene
    assert widget.ui.inputVolumeSelector.mrmlScene() is harness.scene  # through the .ui's connections
    assert sys.modules["qt"].QTimer is type(widget.pollTimer)


def test_ui_properties_tables_and_read_only_properties_are_checked(harness, tmp_path):
    from slicer_harness import REPOSITORY, load_ui_file

    ui = tmp_path / "Bad.ui"
    ui.write_text(
        '<ui version="4.0"><widget class="qMRMLWidget" name="Bad">'
        '<widget class="QLabel" name="label"><property name="wordWarp"><bool>true</bool></property></widget>'
        "</widget></ui>"
    )
    with pytest.raises(AttributeError, match="wordWarp"):  # Qt would keep a misspelt property as a dead dynamic one
        load_ui_file(ui)
    top = load_ui_file(REPOSITORY / "SternumLandmarks" / "Resources" / "UI" / "SternumLandmarks.ui")
    table = next(child for child in top.findChildren() if child.name == "landmarksTableWidget")
    assert table.columnCount == 4  # the .ui's <column> entries
    table.setRowCount(1)
    with pytest.raises(IndexError):  # Qt drops an item outside the table
        table.setItem(0, 4, sys.modules["qt"].QTableWidgetItem("x"))
    with pytest.raises(AttributeError, match="read-only"):
        table.width = 10
