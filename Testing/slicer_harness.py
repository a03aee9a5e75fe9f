"""Run the real module files (``SternumSSM/SternumSSM.py``, ``SternumLandmarks/SternumLandmarks.py``,
``SternumShapeModel/SternumShapeModel.py``) under pytest, on the real MRML scene of the slicer-core wheel.

The wheel has MRML, the module logics and the real ``slicer.util``; it lacks Qt, CTK, the qMRML widgets,
``slicer.app``, ``slicer.ScriptedLoadableModule``, ``slicer.parameterNodeWrapper`` and ``slicer.i18n``.
This file provides minimal, *recording* stand-ins for exactly those, so that a test fails on:

- a widget name the code uses that the real ``.ui`` file does not have (widgets are built from the ``.ui`` XML);
- a property or signal a widget class does not have (each stand-in class lists its own);
- a button the user could never press (:meth:`SlicerHarness.click` refuses a disabled one);
- a node selector without the ``.ui``'s ``mrmlSceneChanged`` -> ``setMRMLScene`` connection (it has no scene);
- a parameter of the wrong type (values live on a real ``vtkMRMLScriptedModuleNode`` with Slicer's
  documented semantics: defaults written on wrap, node references, ``Choice``, ``WithinRange``, ``Path``);
- a result delivered by a timer that no longer finds its inputs (:meth:`SlicerHarness.tick` fires timers).

Dialogs record what they would have shown (``harness.dialogs``); ``harness.answers`` scripts the answers of
confirmations. An exception escaping a slot is collected, as PythonQt prints it and carries on; the fixture
fails the test unless the test took it with :meth:`SlicerHarness.take_escaped`.

Use the ``harness`` fixture; ``hidden_packages`` hides torch, landmarker and nnunetv2 (both ``import`` and
the installed-distribution metadata), as in a Slicer that has never installed them.

Typical use::

    module, widget = harness.open(SSM_MODULE_FILE)     # setup() and enter(), as Slicer does
    harness.select(widget.ui.inputVolumeSelector, ct)  # the user picks a node
    harness.click(widget.ui.segmentButton)             # fails if the button is disabled
    harness.tick(until=lambda: not widget.ui.cancelButton.enabled, timeout=240)
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.metadata
import importlib.util
import inspect
import itertools
import logging
import pathlib
import sys
import time
import typing
import unittest
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest
import slicer
import slicer.util
import vtk
from SternumSSMLib.mrml import LOGIC_NAMES, module_logic

REPOSITORY = Path(__file__).resolve().parents[1]
SSM_MODULE_FILE = REPOSITORY / "SternumSSM" / "SternumSSM.py"
LANDMARKS_MODULE_FILE = REPOSITORY / "SternumLandmarks" / "SternumLandmarks.py"
HIDDEN_PACKAGES = ("torch", "landmarker", "nnunetv2")


# ---------------------------------------------------------------------------------------------------------------
# Signals and widgets
# ---------------------------------------------------------------------------------------------------------------


class Signal:
    """One Qt signal: ``connect``/``disconnect`` slots (attribute style, ``widget.clicked.connect``)."""

    def __init__(self, signature: str) -> None:
        self.signature = signature
        self.slots: list[Callable] = []

    def connect(self, slot: Callable) -> None:
        self.slots.append(slot)

    def disconnect(self, slot: Callable | None = None) -> None:
        self.slots = [s for s in self.slots if slot is not None and s != slot]

    # What PythonQt does with an exception that escapes a slot: print it and return to the event loop.
    # The harness collects them; its fixture fails a test that leaves any unacknowledged.
    escaped: typing.ClassVar[list[BaseException]] = []

    def emit(self, *args) -> None:
        for slot in list(self.slots):
            try:
                slot(*args[: _accepted_arguments(slot, len(args))])
            except Exception as error:
                logging.exception("Exception in slot for %s", self.signature)
                Signal.escaped.append(error)


def _accepted_arguments(slot: Callable, given: int) -> int:
    """How many of a signal's arguments PythonQt passes to ``slot``: it drops those the Python callable does
    not take, so ``connect("clicked(bool)", self.onApply)`` calls ``onApply()``, as in Slicer's template."""
    try:
        parameters = inspect.signature(slot).parameters.values()
    except (TypeError, ValueError):
        return given
    if any(parameter.kind == parameter.VAR_POSITIONAL for parameter in parameters):
        return given
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return min(given, sum(parameter.kind in positional for parameter in parameters))


class Widget:
    """Base of the widget stand-ins: named properties (recorded in ``history``), declared signals, children.

    Subclasses declare ``PROPERTIES`` (name -> default) and ``SIGNALS`` (PythonQt signatures); setting an
    undeclared attribute raises, so a misspelt property fails instead of silently doing nothing.
    """

    PROPERTIES: typing.ClassVar[dict] = {"enabled": True, "visible": True, "toolTip": "", "width": 300, "geometry": ""}
    SIGNALS: typing.ClassVar[tuple[str, ...]] = ()
    # Q_PROPERTYs without WRITE (QWidget::width): PythonQt refuses to set them, so the stand-in does too.
    READ_ONLY: typing.ClassVar[frozenset[str]] = frozenset({"width"})

    def __init__(self, name: str = "", parent: Widget | None = None) -> None:
        defaults = {}
        for cls in reversed(type(self).__mro__):
            defaults |= getattr(cls, "PROPERTIES", {})
        signals = [s for cls in type(self).__mro__ for s in getattr(cls, "SIGNALS", ())]
        object.__setattr__(self, "_properties", defaults)
        object.__setattr__(self, "_dynamic", {})
        object.__setattr__(self, "_signals", {s: Signal(s) for s in signals})
        object.__setattr__(self, "_children", [])
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "history", [])
        object.__setattr__(self, "_parent", parent)
        if parent is not None:
            parent._children.append(self)

    def __getattr__(self, name: str):
        properties = object.__getattribute__(self, "_properties")
        if name in properties:
            return properties[name]
        for signature, signal in object.__getattribute__(self, "_signals").items():
            if signature.split("(")[0] == name:
                return signal
        raise AttributeError(f"{type(self).__name__} '{self.name}' has no property, signal or method {name!r}")

    def __setattr__(self, name: str, value) -> None:
        if name not in self._properties:
            raise AttributeError(f"{type(self).__name__} '{self.name}' has no property {name!r}")
        if name in self.READ_ONLY:
            raise AttributeError(f"{type(self).__name__} '{self.name}': property {name!r} is read-only")
        old = self._properties[name]
        self._properties[name] = value
        self.history.append((name, value))
        if old != value:
            self._changed(name, value)

    def _changed(self, name: str, value) -> None:
        """Emit the signal Qt emits when this property changes; subclasses map their properties."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"

    def className(self) -> str:
        return type(self).__name__

    def isWidgetType(self) -> bool:
        return True

    def children(self) -> list[Widget]:
        return list(self._children)

    def findChildren(self, _type=None) -> list[Widget]:
        found = []
        for child in self._children:
            found += [child, *child.findChildren()]
        return found

    def parent(self) -> Widget | None:
        return self._parent

    def property(self, name: str):
        return self._dynamic.get(name, self._properties.get(name))

    def setProperty(self, name: str, value) -> None:
        self._dynamic[name] = value

    def setEnabled(self, enabled: bool) -> None:
        self.enabled = enabled

    def setToolTip(self, text: str) -> None:
        self.toolTip = text

    def show(self) -> None:
        self.visible = True

    def hide(self) -> None:
        self.visible = False

    def connect(self, signature: str, slot: Callable) -> None:
        """PythonQt's string style, ``widget.connect("clicked(bool)", slot)``: the signature must exist."""
        if signature not in self._signals:
            raise AttributeError(f"{type(self).__name__} '{self.name}' has no signal {signature!r}")
        self._signals[signature].connect(slot)

    def disconnect(self, signature: str, slot: Callable | None = None) -> None:
        self._signals[signature].disconnect(slot)

    def emit(self, signature: str, *args) -> None:
        """Emit one signal, and the overloads of the same name whose arguments fit (Qt emits each)."""
        name = signature.split("(")[0]
        for other, signal in self._signals.items():
            if other == signature or (other.split("(")[0] == name and other.endswith("()")):
                signal.emit(*(args if other == signature else ()))

    def connected(self, signature: str) -> list[Callable]:
        return list(self._signals[signature].slots)


class Layout:
    def __init__(self) -> None:
        self.widgets: list = []

    def addWidget(self, widget) -> None:
        self.widgets.append(widget)

    def addStretch(self, stretch: int = 0) -> None:
        self.widgets.append(("stretch", stretch))


class QWidget(Widget):
    def __init__(self, name: str = "", parent: Widget | None = None) -> None:
        super().__init__(name, parent)
        object.__setattr__(self, "_layout", Layout())

    def layout(self) -> Layout:
        return self._layout


class QLabel(QWidget):
    PROPERTIES: typing.ClassVar[dict] = {"text": "", "wordWrap": False, "pixmap": None}

    def setPixmap(self, pixmap) -> None:
        self.pixmap = pixmap

    def setText(self, text: str) -> None:
        self.text = text


class QAbstractButton(QWidget):
    PROPERTIES: typing.ClassVar[dict] = {"text": "", "checkable": False, "checked": False, "icon": None}
    SIGNALS = ("clicked()", "clicked(bool)", "toggled(bool)", "pressed()", "released()")

    def _changed(self, name: str, value) -> None:
        if name == "checked":
            self.emit("toggled(bool)", value)

    def setChecked(self, checked: bool) -> None:
        self.checked = checked


class QPushButton(QAbstractButton):
    pass


class QCheckBox(QAbstractButton):
    SIGNALS = ("stateChanged(int)",)

    def _changed(self, name: str, value) -> None:
        super()._changed(name, value)
        if name == "checked":
            self.emit("stateChanged(int)", 2 if value else 0)


class ctkCollapsibleButton(QAbstractButton):  # noqa: N801 - the real class name
    PROPERTIES: typing.ClassVar[dict] = {"collapsed": False}
    SIGNALS = ("contentsCollapsed(bool)",)


class QComboBox(QWidget):
    PROPERTIES: typing.ClassVar[dict] = {"currentIndex": -1, "editable": False}
    SIGNALS = ("currentIndexChanged(int)", "currentTextChanged(QString)", "activated(int)")

    def __init__(self, name: str = "", parent: Widget | None = None) -> None:
        super().__init__(name, parent)
        object.__setattr__(self, "items", [])

    def _changed(self, name: str, value) -> None:
        if name == "currentIndex":
            self.emit("currentIndexChanged(int)", value)
            self.emit("currentTextChanged(QString)", self.currentText)

    @property
    def currentText(self) -> str:
        return self.items[self.currentIndex] if 0 <= self.currentIndex < len(self.items) else ""

    @property
    def count(self) -> int:
        return len(self.items)

    def clear(self) -> None:
        self.items.clear()
        self.currentIndex = -1

    def addItem(self, text: str, userData=None) -> None:
        self.items.append(text)
        if self.currentIndex == -1:
            self.currentIndex = 0

    def itemText(self, index: int) -> str:
        return self.items[index]


class QLineEdit(QWidget):
    PROPERTIES: typing.ClassVar[dict] = {"text": "", "placeholderText": "", "readOnly": False}
    SIGNALS = ("textChanged(QString)", "editingFinished()", "returnPressed()")

    def _changed(self, name: str, value) -> None:
        if name == "text":
            self.emit("textChanged(QString)", value)


class QPlainTextEdit(QWidget):
    PROPERTIES: typing.ClassVar[dict] = {"plainText": "", "readOnly": False, "placeholderText": ""}
    SIGNALS = ("textChanged()",)

    def _changed(self, name: str, value) -> None:
        if name == "plainText":
            self.emit("textChanged()")

    def setPlainText(self, text: str) -> None:
        self.plainText = text

    def toPlainText(self) -> str:
        return self.plainText

    def appendPlainText(self, text: str) -> None:
        self.plainText = f"{self.plainText}\n{text}" if self.plainText else text


class QProgressBar(QWidget):
    PROPERTIES: typing.ClassVar[dict] = {"value": 0, "minimum": 0, "maximum": 100, "textVisible": True, "format": ""}
    SIGNALS = ("valueChanged(int)",)


class QSpinBox(QWidget):
    PROPERTIES: typing.ClassVar[dict] = {"value": 0, "minimum": 0, "maximum": 99, "singleStep": 1, "suffix": ""}
    SIGNALS = ("valueChanged(int)",)

    def _changed(self, name: str, value) -> None:
        if name == "value":
            self.emit("valueChanged(int)", value)


class QListWidgetItem:
    def __init__(self, text: str = "") -> None:
        self._text = text
        self._data: dict = {}
        self._tooltip = ""

    def text(self) -> str:
        return self._text

    def setText(self, text: str) -> None:
        self._text = text

    def setData(self, role: int, value) -> None:
        self._data[role] = value

    def data(self, role: int):
        return self._data.get(role)

    def setToolTip(self, text: str) -> None:
        self._tooltip = text

    def toolTip(self) -> str:
        return self._tooltip


class QListWidget(QWidget):
    PROPERTIES: typing.ClassVar[dict] = {"currentRow": -1}
    SIGNALS = ("itemClicked(QListWidgetItem*)", "itemDoubleClicked(QListWidgetItem*)", "currentRowChanged(int)")

    def __init__(self, name: str = "", parent: Widget | None = None) -> None:
        super().__init__(name, parent)
        object.__setattr__(self, "items", [])

    @property
    def count(self) -> int:
        return len(self.items)

    def clear(self) -> None:
        self.items.clear()

    def addItem(self, item) -> None:
        self.items.append(item if isinstance(item, QListWidgetItem) else QListWidgetItem(item))

    def item(self, row: int) -> QListWidgetItem | None:
        return self.items[row] if 0 <= row < len(self.items) else None

    def row(self, item: QListWidgetItem) -> int:
        return self.items.index(item)


class QTableWidgetItem(QListWidgetItem):
    background = None  # the QBrush given to setBackground

    def setBackground(self, brush) -> None:
        self.background = brush


class QTableWidget(QWidget):
    PROPERTIES: typing.ClassVar[dict] = {
        "rowCount": 0, "columnCount": 0, "editTriggers": "", "selectionBehavior": "", "selectionMode": "",
    }  # fmt: skip
    SIGNALS = ("cellClicked(int,int)", "cellDoubleClicked(int,int)", "itemSelectionChanged()")

    def __init__(self, name: str = "", parent: Widget | None = None) -> None:
        super().__init__(name, parent)
        object.__setattr__(self, "cells", {})
        object.__setattr__(self, "headers", [])

    def setRowCount(self, rows: int) -> None:
        self.rowCount = rows
        object.__setattr__(self, "cells", {key: item for key, item in self.cells.items() if key[0] < rows})

    def setColumnCount(self, columns: int) -> None:
        self.columnCount = columns

    def setHorizontalHeaderLabels(self, labels) -> None:
        object.__setattr__(self, "headers", list(labels))
        self.columnCount = len(labels)

    def setItem(self, row: int, column: int, item: QTableWidgetItem) -> None:
        # Qt ignores an item outside rowCount x columnCount (columns come from the .ui's <column> entries);
        # the stand-in fails instead, so a cell the real table would drop cannot pass unnoticed.
        if not (0 <= row < self.rowCount and 0 <= column < self.columnCount):
            shape = f"{self.rowCount} x {self.columnCount}"
            raise IndexError(f"QTableWidget '{self.name}' has {shape} cells, no ({row}, {column})")
        self.cells[(row, column)] = item

    def item(self, row: int, column: int) -> QTableWidgetItem | None:
        return self.cells.get((row, column))

    def clearContents(self) -> None:
        self.cells.clear()

    def resizeColumnsToContents(self) -> None:
        """Layout only."""


class ctkSliderWidget(QWidget):  # noqa: N801 - the real class name
    PROPERTIES: typing.ClassVar[dict] = {"value": 0.0, "minimum": 0.0, "maximum": 99.0, "singleStep": 1.0}
    SIGNALS = ("valueChanged(double)",)

    def _changed(self, name: str, value) -> None:
        if name == "value":
            self.emit("valueChanged(double)", value)


class ctkPathLineEdit(QWidget):  # noqa: N801 - the real class name
    PROPERTIES: typing.ClassVar[dict] = {"currentPath": "", "filters": None, "nameFilters": [], "settingKey": ""}
    SIGNALS = ("currentPathChanged(QString)", "validInputChanged(bool)")
    Dirs, Drives, Files, NoDot, NoDotDot, Readable, Writable, Executable = (1, 2, 4, 8, 16, 32, 64, 128)

    def _changed(self, name: str, value) -> None:
        if name == "currentPath":
            self.emit("currentPathChanged(QString)", value)


class qMRMLWidget(QWidget):  # noqa: N801 - the real class name
    SIGNALS = ("mrmlSceneChanged(vtkMRMLScene*)",)

    def __init__(self, name: str = "", parent: Widget | None = None) -> None:
        super().__init__(name, parent)
        object.__setattr__(self, "_scene", None)

    def setMRMLScene(self, scene) -> None:
        object.__setattr__(self, "_scene", scene)
        self.emit("mrmlSceneChanged(vtkMRMLScene*)", scene)

    def mrmlScene(self):
        return self._scene


class ModulePanel(qMRMLWidget):
    """The module's panel (``qSlicerScriptedLoadableModuleWidget``), parent of the widget's layout."""

    PROPERTIES: typing.ClassVar[dict] = {"isEntered": False}


class qMRMLNodeComboBox(qMRMLWidget):  # noqa: N801 - the real class name
    """A node selector: lists the scene's nodes of ``nodeTypes`` (not hidden ones); without ``noneEnabled``
    it selects the first such node as soon as there is one, as the real widget does."""

    PROPERTIES: typing.ClassVar[dict] = {
        "nodeTypes": [], "showChildNodeTypes": True, "noneEnabled": False, "addEnabled": True,
        "removeEnabled": True, "renameEnabled": False, "editEnabled": False, "noneDisplay": "None",
        "showHidden": False, "baseName": "", "selectNodeUponCreation": True, "hideChildNodeTypes": [],
    }  # fmt: skip
    SIGNALS = ("currentNodeChanged(vtkMRMLNode*)", "currentNodeChanged(bool)", "currentNodeIDChanged(QString)")

    instances: typing.ClassVar[list[qMRMLNodeComboBox]] = []

    def __init__(self, name: str = "", parent: Widget | None = None) -> None:
        super().__init__(name, parent)
        object.__setattr__(self, "_current", None)
        object.__setattr__(self, "_observations", [])
        qMRMLNodeComboBox.instances.append(self)

    def setMRMLScene(self, scene) -> None:
        for observed, tag in self._observations:
            observed.RemoveObserver(tag)
        self._observations.clear()
        object.__setattr__(self, "_scene", scene)
        if scene is not None:
            for event in (scene.NodeAddedEvent, scene.NodeRemovedEvent, scene.EndCloseEvent):
                self._observations.append((scene, scene.AddObserver(event, lambda *_: self._refresh())))
        self._refresh()

    def _refresh(self) -> None:
        current = self._current
        if current is not None and (self._scene is None or not self._scene.IsNodePresent(current)):
            current = None
        if current is None and not self.noneEnabled:
            current = next(iter(self.nodes()), None)
        if current is not self._current:
            self.setCurrentNode(current)

    def nodes(self) -> list:
        if self._scene is None:
            return []
        listed = []
        for index in range(self._scene.GetNumberOfNodes()):
            node = self._scene.GetNthNode(index)
            if not self.showHidden and node.GetHideFromEditors():
                continue
            if self.showChildNodeTypes:
                matches = any(node.IsA(node_type) for node_type in self.nodeTypes)
            else:
                matches = node.GetClassName() in self.nodeTypes
            if matches:
                listed.append(node)
        return listed

    def currentNode(self):
        return self._current

    def currentNodeID(self) -> str:
        return self._current.GetID() if self._current is not None else ""

    def setCurrentNode(self, node) -> None:
        if node is not None and node not in self.nodes():
            raise ValueError(f"{self.name} cannot show {node.GetName()!r}: not among its nodes {self.nodes()}")
        if node is self._current:
            return
        object.__setattr__(self, "_current", node)
        self.emit("currentNodeChanged(vtkMRMLNode*)", node)
        self.emit("currentNodeChanged(bool)", node is not None)
        self.emit("currentNodeIDChanged(QString)", self.currentNodeID())

    def setCurrentNodeID(self, node_id: str) -> None:
        self.setCurrentNode(self._scene.GetNodeByID(node_id) if node_id else None)


WIDGET_CLASSES: dict[str, type[Widget]] = {
    cls.__name__: cls
    for cls in (
        QWidget, QLabel, QPushButton, QCheckBox, QComboBox, QLineEdit, QPlainTextEdit, QProgressBar, QSpinBox,
        QListWidget, QTableWidget, ctkCollapsibleButton, ctkPathLineEdit, ctkSliderWidget, qMRMLWidget,
        qMRMLNodeComboBox,
    )
}  # fmt: skip


# ---------------------------------------------------------------------------------------------------------------
# The .ui loader
# ---------------------------------------------------------------------------------------------------------------


def _ui_value(element: ElementTree.Element):
    kind = element[0]
    if kind.tag == "bool":
        return kind.text == "true"
    if kind.tag in ("number", "double"):
        return float(kind.text) if kind.tag == "double" else int(kind.text)
    if kind.tag == "stringlist":
        return [item.text or "" for item in kind]
    return kind.text or ""


def load_ui_file(path: Path | str) -> qMRMLWidget:
    """The widget tree of a Qt Designer file, with its properties and its signal-slot connections."""
    root = ElementTree.parse(path).getroot()
    by_name: dict[str, Widget] = {}

    def build(element: ElementTree.Element, parent: Widget | None) -> None:
        for child in element:
            if child.tag == "widget":
                class_name = child.get("class")
                if class_name not in WIDGET_CLASSES:
                    raise NotImplementedError(f"The harness has no stand-in for {class_name} ({child.get('name')}).")
                widget = WIDGET_CLASSES[class_name](child.get("name"), parent)
                by_name[widget.name] = widget
                for prop in child.findall("property"):
                    if prop.get("stdset") == "0":
                        widget.setProperty(prop.get("name"), _ui_value(prop))
                    elif prop.get("name") in widget._properties:
                        widget._properties[prop.get("name")] = _ui_value(prop)
                    else:  # Qt would keep it as a dynamic property and the setting would do nothing
                        raise AttributeError(f"{class_name} ({child.get('name')}) has no property {prop.get('name')!r}")
                if class_name == "QTableWidget":
                    widget._properties["columnCount"] = len(child.findall("column"))
                build(child, widget)
            else:
                build(child, parent)

    build(root, None)
    top = by_name[root.find("widget").get("name")]
    for connection in root.iter("connection"):
        sender, receiver = by_name[connection.findtext("sender")], by_name[connection.findtext("receiver")]
        slot = getattr(receiver, connection.findtext("slot").split("(")[0])
        sender.connect(connection.findtext("signal"), slot)
    return top


class QFile:
    ReadOnly = 1

    def __init__(self, path) -> None:
        self.path = str(path)

    def exists(self) -> bool:
        return Path(self.path).is_file()

    def open(self, mode: int) -> bool:
        return self.exists()


class QUiLoader:
    def load(self, qfile: QFile) -> qMRMLWidget:
        return load_ui_file(qfile.path)


# ---------------------------------------------------------------------------------------------------------------
# Timers and the small rest of qt
# ---------------------------------------------------------------------------------------------------------------


class QTimer:
    """A timer that fires only when the harness ticks; ``QTimer.singleShot`` callbacks run at the next tick."""

    all_timers: typing.ClassVar[list[QTimer]] = []
    single_shots: typing.ClassVar[list[Callable]] = []

    def __init__(self, parent=None) -> None:
        self.interval = 0
        self.active = False
        self.timeout = Signal("timeout()")
        self._single = False
        QTimer.all_timers.append(self)

    def setInterval(self, milliseconds: int) -> None:
        self.interval = milliseconds

    def setSingleShot(self, single: bool) -> None:
        self._single = single

    def connect(self, signature: str, slot: Callable) -> None:
        if signature != "timeout()":
            raise AttributeError(f"QTimer has no signal {signature!r}")
        self.timeout.connect(slot)

    def start(self, milliseconds: int | None = None) -> None:
        if milliseconds is not None:
            self.interval = milliseconds
        self.active = True

    def stop(self) -> None:
        self.active = False

    def isActive(self) -> bool:
        return self.active

    @staticmethod
    def singleShot(milliseconds: int, callback: Callable) -> None:
        QTimer.single_shots.append(callback)

    @classmethod
    def fire_all(cls) -> None:
        callbacks, cls.single_shots[:] = list(cls.single_shots), []
        for callback in callbacks:
            callback()
        for timer in list(cls.all_timers):
            if timer.active:
                if timer._single:
                    timer.active = False
                timer.timeout.emit()


class QPixmap:
    def __init__(self, path: str = "") -> None:
        self.path = path

    def scaledToWidth(self, width: int) -> QPixmap:
        return self

    def isNull(self) -> bool:
        return not Path(self.path).is_file()


def _qt_module() -> ModuleType:
    qt = ModuleType("qt")
    for name, value in {
        **WIDGET_CLASSES,
        "QFile": QFile, "QUiLoader": QUiLoader, "QTimer": QTimer, "QPixmap": QPixmap,
        "QListWidgetItem": QListWidgetItem, "QTableWidgetItem": QTableWidgetItem, "QVBoxLayout": Layout,
        "QFormLayout": Layout, "QHBoxLayout": Layout,
        "Qt": SimpleNamespace(WaitCursor=3, UserRole=256, DisplayRole=0, ToolTipRole=3, ItemIsEnabled=32),
        "QMessageBox": SimpleNamespace(Ok=1024, Cancel=4194304, Yes=16384, No=65536, Critical=3, Warning=2,
                                       Question=4, Information=1, Retry=524288, Close=2097152),
        "QColor": lambda *args: args,
        "QBrush": lambda color: ("QBrush", color),
    }.items():  # fmt: skip
        setattr(qt, name, value)
    return qt


def _ctk_module() -> ModuleType:
    ctk = ModuleType("ctk")
    ctk.ctkCollapsibleButton = ctkCollapsibleButton
    ctk.ctkPathLineEdit = ctkPathLineEdit
    return ctk


# ---------------------------------------------------------------------------------------------------------------
# slicer.parameterNodeWrapper, following Slicer's documented semantics
# ---------------------------------------------------------------------------------------------------------------


class Choice:
    def __init__(self, choices) -> None:
        self.choices = list(choices)

    def validate(self, value) -> None:
        if value not in self.choices:
            raise ValueError(f"Value is {value}, but must be in one of the following: {self.choices}")


class WithinRange:
    def __init__(self, minimum, maximum) -> None:
        self.minimum, self.maximum = minimum, maximum

    def validate(self, value) -> None:
        if not self.minimum <= value <= self.maximum:
            raise ValueError(f"Value must be within range [{self.minimum}, {self.maximum}], is {value}")


class Default:
    def __init__(self, value) -> None:
        self.value = value


class _Parameter:
    """Reads and writes one typed value as text (or a node reference) on the real scripted module node."""

    def __init__(self, name: str, annotated, default_value) -> None:
        self.name = name
        self.annotated = annotated
        self.type, *annotations = typing.get_args(annotated) or (annotated,)
        self.validators = [a for a in annotations if hasattr(a, "validate")]
        default = next((a for a in annotations if isinstance(a, Default)), None)
        self.is_node = isinstance(self.type, type) and issubclass(self.type, slicer.vtkMRMLNode)
        if self.type not in (bool, int, float, str, Path, pathlib.PurePath) and not self.is_node:
            raise TypeError(f"The harness does not serialize {name}: {annotated}")
        if default_value is not _MISSING:
            self.default = default_value
        elif default is not None:
            self.default = default.value
        else:
            self.default = None if self.is_node else self.type()

    def validate(self, value) -> None:
        if value is None and not self.is_node:
            raise ValueError(f"{self.name} cannot be None")
        accepted = (int, float) if self.type is float else self.type
        if value is not None and (not isinstance(value, accepted) or (self.type is int and isinstance(value, bool))):
            raise TypeError(f"Value must be of type '{self.type}', is type '{type(value)}' value '{value}'")
        for validator in self.validators:
            validator.validate(value)

    def write(self, node, value) -> None:
        self.validate(value)
        if self.is_node:
            with slicer.util.NodeModify(node):
                node.SetParameter(self.name, "")
                node.SetNodeReferenceID(self.name, value.GetID() if value is not None else None)
        elif self.type is bool:
            node.SetParameter(self.name, "True" if value else "False")
        else:
            node.SetParameter(self.name, str(value))

    def read(self, node):
        if not node.HasParameter(self.name):
            self.write(node, self.default)
        if self.is_node:
            return node.GetNodeReference(self.name)
        text = node.GetParameter(self.name)
        return text == "True" if self.type is bool else self.type(text)


_MISSING = object()


def _connector(widget: Widget, parameter: _Parameter):
    """(read, write, change signal) binding a widget to a parameter, as Slicer's GUI connectors do."""
    kind = type(widget).__name__
    if kind == "QCheckBox" and parameter.type is bool:
        return (lambda: widget.checked), (lambda v: setattr(widget, "checked", v)), "toggled(bool)"
    if kind == "QComboBox":
        choice = next((v for v in parameter.validators if isinstance(v, Choice)), None)
        if choice is None:
            raise RuntimeError("ComboBoxToStringableConnector requires the Choice annotation to be used.")
        widget.clear()
        for value in choice.choices:
            widget.addItem(str(value))

        def write_choice(value) -> None:
            widget.currentIndex = choice.choices.index(value)

        return (lambda: choice.choices[widget.currentIndex]), write_choice, "currentIndexChanged(int)"
    if kind == "QLineEdit" and parameter.type is str:
        return (lambda: widget.text), (lambda v: setattr(widget, "text", v)), "textChanged(QString)"
    if kind == "QSpinBox" and parameter.type is int:
        return (lambda: widget.value), (lambda v: setattr(widget, "value", v)), "valueChanged(int)"
    if kind == "ctkPathLineEdit" and parameter.type in (Path, pathlib.PurePath):
        return (
            (lambda: parameter.type(widget.currentPath)),
            (lambda v: setattr(widget, "currentPath", str(v))),
            "currentPathChanged(QString)",
        )
    if kind == "qMRMLNodeComboBox" and parameter.is_node:
        widget.nodeTypes = [parameter.type.__name__]
        return widget.currentNode, widget.setCurrentNode, "currentNodeChanged(vtkMRMLNode*)"
    raise RuntimeError(f"Unable to create GUI connector from datatype '{parameter.annotated}' to widget {widget!r}")


def parameterNodeWrapper(cls):
    """Typed properties stored on a real ``vtkMRMLScriptedModuleNode``; defaults written on wrap."""
    hints = typing.get_type_hints(cls, include_extras=True)
    parameters = {name: _Parameter(name, hint, cls.__dict__.get(name, _MISSING)) for name, hint in hints.items()}

    def initialize(self, node) -> None:
        self.parameterNode = node
        self._guis: dict[int, tuple[list, int]] = {}
        self._tags = itertools.count(1)
        self._updating = False
        for parameter in parameters.values():
            if not node.HasParameter(parameter.name):
                parameter.write(node, parameter.default)

    def make_property(parameter: _Parameter) -> property:
        return property(
            lambda self: parameter.read(self.parameterNode),
            lambda self, value: parameter.write(self.parameterNode, value),
        )

    def update_gui(self) -> None:
        if self._updating:
            return
        self._updating = True
        try:
            for bindings, _ in self._guis.values():
                for name, (_, write, _) in bindings:
                    write(getattr(self, name))
        finally:
            self._updating = False

    def connectGui(self, gui) -> int:
        bindings = []
        for widget in vars(gui).values():
            name = widget.property("SlicerParameterName")
            if not name:
                continue
            if name not in parameters:
                raise ValueError(f"Cannot find a param with the given name: {name}")
            read, write, signal = _connector(widget, parameters[name])
            write(getattr(self, name))

            def on_changed(*_, name=name, read=read) -> None:
                if not self._updating:
                    setattr(self, name, read())

            widget.connect(signal, on_changed)
            bindings.append((name, (read, write, (widget, signal, on_changed))))
        tag = next(self._tags)
        observer = self.parameterNode.AddObserver(vtk.vtkCommand.ModifiedEvent, lambda *_: update_gui(self))
        self._guis[tag] = (bindings, observer)
        return tag

    def disconnectGui(self, tag) -> None:
        if tag not in self._guis:
            return  # as Slicer's: an unknown tag (None after an earlier disconnect) is ignored
        bindings, observer = self._guis.pop(tag)
        for _, (_, _, (widget, signal, slot)) in bindings:
            widget._signals[signal].disconnect(slot)
        self.parameterNode.RemoveObserver(observer)

    members = {
        "__init__": initialize,
        "allParameters": parameters,
        "connectGui": connectGui,
        "disconnectGui": disconnectGui,
        "default": lambda self, name: Default(parameters[name].default),
        "getValue": lambda self, name: getattr(self, name),
        "setValue": lambda self, name, value: setattr(self, name, value),
        "StartModify": lambda self: self.parameterNode.StartModify(),
        "EndModify": lambda self, was: self.parameterNode.EndModify(was),
        "AddObserver": lambda self, event, callback, priority=0.0: self.parameterNode.AddObserver(
            event, callback, priority
        ),
        "RemoveObserver": lambda self, tag: self.parameterNode.RemoveObserver(tag),
        "Modified": lambda self: self.parameterNode.Modified(),
    }
    for name, member in members.items():
        setattr(cls, name, member)
    for name, parameter in parameters.items():
        setattr(cls, name, make_property(parameter))
    return cls


def _parameter_node_wrapper_module() -> ModuleType:
    module = ModuleType("slicer.parameterNodeWrapper")
    for name, value in {
        "parameterNodeWrapper": parameterNodeWrapper, "Choice": Choice, "WithinRange": WithinRange, "Default": Default,
    }.items():  # fmt: skip
        setattr(module, name, value)
    return module


# ---------------------------------------------------------------------------------------------------------------
# slicer.ScriptedLoadableModule and the application object
# ---------------------------------------------------------------------------------------------------------------


class ScriptedLoadableModule:
    def __init__(self, parent) -> None:
        self.parent = parent
        self.moduleName = type(self).__name__

    def resourcePath(self, filename: str) -> str:
        return str(Path(slicer.util.modulePath(self.moduleName)).parent / "Resources" / filename)


class ScriptedLoadableModuleWidget:
    def __init__(self, parent=None) -> None:
        self.moduleName = type(self).__name__.removesuffix("Widget")
        self.parent = parent if parent is not None else ModulePanel(f"{self.moduleName}Panel")
        self.layout = self.parent.layout()

    def resourcePath(self, filename: str) -> str:
        return str(Path(slicer.util.modulePath(self.moduleName)).parent / "Resources" / filename)

    def setup(self) -> None:
        """Slicer adds the developer section here when developer mode is on; the harness leaves it out."""

    def cleanup(self) -> None:
        """Called when the application closes."""

    def onReload(self) -> None:
        slicer.app.reloaded.append(self.moduleName)


class ScriptedLoadableModuleLogic:
    def __init__(self, parent=None) -> None:
        self.moduleName = type(self).__name__.removesuffix("Logic")

    def getParameterNode(self):
        """The module's singleton ``vtkMRMLScriptedModuleNode``, made on first use, as Slicer does."""
        node = slicer.mrmlScene.GetSingletonNode(self.moduleName, "vtkMRMLScriptedModuleNode")
        if node is not None:
            if node.GetAttribute("ModuleName") != self.moduleName:
                node.SetAttribute("ModuleName", self.moduleName)
            return node
        node = slicer.vtkMRMLScriptedModuleNode()
        node.SetSingletonTag(self.moduleName)
        node.SetAttribute("ModuleName", self.moduleName)
        node.SetName(slicer.mrmlScene.GenerateUniqueName(self.moduleName))
        return slicer.mrmlScene.AddNode(node)


class ScriptedLoadableModuleTest(unittest.TestCase):
    def delayDisplay(self, message: str, requestedDelay=None, msec=None) -> None:
        slicer.util.delayDisplay(message)

    def takeScreenshot(self, name: str, description: str, type=-1) -> None:
        self.delayDisplay(description)


def _scripted_loadable_module_module() -> ModuleType:
    module = ModuleType("slicer.ScriptedLoadableModule")
    for cls in (
        ScriptedLoadableModule, ScriptedLoadableModuleWidget, ScriptedLoadableModuleLogic, ScriptedLoadableModuleTest,
    ):  # fmt: skip
        setattr(module, cls.__name__, cls)
    return module


def _i18n_module() -> ModuleType:
    module = ModuleType("slicer.i18n")
    module.tr = lambda text: text
    module.translate = lambda context, text: text
    return module


class ThreeDView:
    def __init__(self, calls: list) -> None:
        self.calls = calls

    def resetFocalPoint(self) -> None:
        self.calls.append("resetFocalPoint")

    def resetCamera(self) -> None:
        self.calls.append("resetCamera")


class LayoutManager:
    """The layout manager switches layouts through the scene's layout node, as the real one does."""

    def __init__(self, scene) -> None:
        self.scene = scene
        self.calls: list = []

    def _layout_node(self):
        return self.scene.GetFirstNodeByClass("vtkMRMLLayoutNode")

    @property
    def layout(self) -> int:
        return self._layout_node().GetViewArrangement()

    def setLayout(self, arrangement: int) -> None:
        self._layout_node().SetViewArrangement(arrangement)

    def threeDWidget(self, index: int) -> SimpleNamespace:
        return SimpleNamespace(threeDView=lambda: ThreeDView(self.calls))

    def sliceViewNames(self) -> list[str]:
        return ["Red", "Yellow", "Green"]


class Application:
    """``slicer.app``: temporary folder, cursor, layout manager; records reloads and overridden cursors."""

    def __init__(self, scene, temporary: Path) -> None:
        self.temporaryPath = str(temporary)
        self.applicationName = "Slicer"
        self.cursor_depth = 0
        self.reloaded: list[str] = []
        self._layout_manager = LayoutManager(scene)

    def testingEnabled(self) -> bool:
        return False

    def setOverrideCursor(self, cursor) -> None:
        self.cursor_depth += 1

    def restoreOverrideCursor(self) -> None:
        self.cursor_depth -= 1

    def processEvents(self) -> None:
        QTimer.fire_all()

    def layoutManager(self) -> LayoutManager:
        return self._layout_manager


def add_view_nodes(scene) -> None:
    """What Slicer's layout creates: a layout node, the Red/Yellow/Green slice views, one 3D view and camera."""
    layout = slicer.vtkMRMLLayoutNode()
    layout.SetSingletonTag("vtkMRMLLayoutNode")
    scene.AddNode(layout)
    # The layout manager registers its layouts' descriptions; here only the ones the modules switch to.
    views = "".join(
        f'<item><view class="{kind}" singletontag="{tag}"/></item>'
        for kind, tag in (("vtkMRMLViewNode", "1"), ("vtkMRMLSliceNode", "Red"),
                          ("vtkMRMLSliceNode", "Yellow"), ("vtkMRMLSliceNode", "Green"))
    )  # fmt: skip
    four_up = slicer.vtkMRMLLayoutNode.SlicerLayoutFourUpView
    layout.AddLayoutDescription(four_up, f'<layout type="vertical">{views}</layout>')
    slicer.vtkMRMLSliceNode.AddDefaultSliceOrientationPresets(scene)
    for name, orientation in (("Red", "Axial"), ("Yellow", "Sagittal"), ("Green", "Coronal")):
        slice_node = scene.CreateNodeByClass("vtkMRMLSliceNode")
        slice_node.UnRegister(None)  # owned by this Python variable, as Slicer's createParameterNode does
        slice_node.SetName(name)
        slice_node.SetLayoutName(name)
        slice_node.SetSingletonTag(name)
        slice_node.SetOrientation(orientation)
        scene.AddNode(slice_node)
        composite = slicer.vtkMRMLSliceCompositeNode()
        composite.SetLayoutName(name)
        composite.SetSingletonTag(name)
        scene.AddNode(composite)
    view = slicer.vtkMRMLViewNode()
    view.SetLayoutName("1")
    view.SetSingletonTag("1")
    scene.AddNode(view)
    camera = slicer.vtkMRMLCameraNode()
    camera.SetLayoutName("1")
    camera.SetSingletonTag("1")
    scene.AddNode(camera)


# ---------------------------------------------------------------------------------------------------------------
# The harness
# ---------------------------------------------------------------------------------------------------------------


class SlicerHarness:
    """One Slicer session on a real scene: load module files, drive widgets, tick timers, record dialogs."""

    def __init__(self, scene, temporary: Path) -> None:
        self.scene = scene
        self.app = Application(scene, temporary)
        self.dialogs: list[tuple[str, str]] = []
        self.answers: list[bool] = []
        self.modules: dict[str, SimpleNamespace] = {}

    def load(self, path: Path) -> ModuleType:
        """Execute a module file as Slicer does (module name = file stem) and register it."""
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[path.stem] = module
        spec.loader.exec_module(module)
        self.modules[path.stem.lower()].path = str(path)
        return module

    def open(self, path: Path) -> tuple[object, object]:
        """Load a module file, create its module and widget objects, ``setup()`` and ``enter()`` the widget."""
        module = self.load(path)
        name = path.stem
        description = getattr(module, name)(SimpleNamespace())
        widget = getattr(module, f"{name}Widget")()
        self.modules[name.lower()].widget = widget
        widget.setup()
        self.enter(widget)
        return description, widget

    def enter(self, widget) -> None:
        widget.parent.isEntered = True
        widget.enter()

    def exit(self, widget) -> None:
        widget.parent.isEntered = False
        widget.exit()

    def click(self, button: QAbstractButton) -> None:
        """The user presses ``button``: fails when it is disabled, as a real click would do nothing.
        An exception escaping its slot is collected, as PythonQt prints it (see :meth:`take_escaped`)."""
        assert button.enabled, f"{button.name} is disabled; the user cannot press it"
        if button.checkable:
            button.checked = not button.checked
        button.emit("clicked(bool)", button.checked)

    def select(self, selector: qMRMLNodeComboBox, node) -> None:
        """The user picks ``node`` in a node selector."""
        assert selector.enabled, f"{selector.name} is disabled"
        selector.setCurrentNode(node)

    def tick(self, until: Callable[[], bool] = lambda: False, timeout: float = 0.0, period: float = 0.05) -> bool:
        """Fire the active timers (and pending single shots) until ``until()`` or ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            QTimer.fire_all()
            if until():
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(period)

    def errors(self) -> list[str]:
        return [text for kind, text in self.dialogs if kind == "error"]

    def take_escaped(self) -> list[BaseException]:
        """Exceptions that escaped slots so far (PythonQt would have printed them); acknowledges them."""
        escaped, Signal.escaped[:] = list(Signal.escaped), []
        return escaped


class _Blocker(importlib.abc.MetaPathFinder):
    def __init__(self, names: tuple[str, ...]) -> None:
        self.names = names

    def find_spec(self, fullname, path, target=None):
        if fullname.split(".")[0] in self.names:
            raise ModuleNotFoundError(f"No module named {fullname!r}", name=fullname)
        return None


@contextlib.contextmanager
def hide_packages(monkeypatch: pytest.MonkeyPatch, names: tuple[str, ...] = HIDDEN_PACKAGES) -> Iterator[None]:
    """Make ``names`` unimportable and uninstalled (metadata too) until the end of the block or test."""
    for module_name in list(sys.modules):
        if module_name.split(".")[0] in names:
            monkeypatch.delitem(sys.modules, module_name)
    blocker = _Blocker(names)
    monkeypatch.setattr(sys, "meta_path", [blocker, *sys.meta_path])
    real_version, real_distribution = importlib.metadata.version, importlib.metadata.distribution

    def version(name: str) -> str:
        if name.lower() in names:
            raise importlib.metadata.PackageNotFoundError(name)
        return real_version(name)

    def distribution(name: str):
        if name.lower() in names:
            raise importlib.metadata.PackageNotFoundError(name)
        return real_distribution(name)

    monkeypatch.setattr(importlib.metadata, "version", version)
    monkeypatch.setattr(importlib.metadata, "distribution", distribution)
    real_distributions = importlib.metadata.distributions
    monkeypatch.setattr(
        importlib.metadata,
        "distributions",
        lambda **kwargs: (d for d in real_distributions(**kwargs) if (d.metadata["Name"] or "").lower() not in names),
    )
    yield


@pytest.fixture
def hidden_packages(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """torch, landmarker and nnunetv2 cannot be imported and are not installed, as in a fresh Slicer."""
    with hide_packages(monkeypatch):
        yield


@pytest.fixture
def harness(slicer_globals, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[SlicerHarness]:
    """A Slicer session on the real scene of ``slicer_globals``, with the stand-ins installed in ``sys.modules``."""
    scene = slicer_globals
    add_view_nodes(scene)
    session = SlicerHarness(scene, tmp_path / "SlicerTemp")
    (tmp_path / "SlicerTemp").mkdir()
    for name, module in {
        "qt": _qt_module(), "ctk": _ctk_module(), "slicer.parameterNodeWrapper": _parameter_node_wrapper_module(),
        "slicer.ScriptedLoadableModule": _scripted_loadable_module_module(), "slicer.i18n": _i18n_module(),
    }.items():  # fmt: skip
        monkeypatch.setitem(sys.modules, name, module)
        if name.startswith("slicer."):
            monkeypatch.setattr(slicer, name.split(".")[1], module, raising=False)
    for module_name in ("SternumSSM", "SternumLandmarks", "SternumShapeModel"):
        monkeypatch.delitem(sys.modules, module_name, raising=False)
    monkeypatch.setattr(QTimer, "all_timers", [])
    monkeypatch.setattr(QTimer, "single_shots", [])
    monkeypatch.setattr(qMRMLNodeComboBox, "instances", [])
    monkeypatch.setattr(Signal, "escaped", [])

    editor = SimpleNamespace(segmentationNode=None, sourceVolumeNode=None)
    editor.setSegmentationNode = lambda node: setattr(editor, "segmentationNode", node)
    editor.setSourceVolumeNode = lambda node: setattr(editor, "sourceVolumeNode", node)
    segment_editor = SimpleNamespace(editor=editor)
    # Bound now, while slicer.app is absent: module_logic takes its headless path instead of asking slicer.modules.
    logics = {name: module_logic(scene, name) for name in LOGIC_NAMES}
    modules = {name: SimpleNamespace(logic=lambda name=name: logics[name]) for name in LOGIC_NAMES}
    modules["segmenteditor"] = SimpleNamespace(
        widgetRepresentation=lambda: SimpleNamespace(self=lambda: segment_editor)
    )
    for own in ("sternumssm", "sternumlandmarks", "sternumshapemodel"):
        modules[own] = SimpleNamespace(path="", widget=None)
    session.modules = modules
    monkeypatch.setattr(slicer, "modules", SimpleNamespace(**modules), raising=False)
    monkeypatch.setattr(slicer, "app", session.app, raising=False)
    monkeypatch.setattr(slicer, "selfTests", {}, raising=False)

    def record(kind: str, result=None):
        def show(text, *args, **kwargs):
            session.dialogs.append((kind, str(text)))
            logging.info("%s dialog: %s", kind, text)
            return session.answers.pop(0) if kind == "confirm" and session.answers else result

        return show

    for name, kind, result in (
        ("errorDisplay", "error", None), ("warningDisplay", "warning", None), ("infoDisplay", "info", None),
        ("confirmOkCancelDisplay", "confirm", True), ("confirmYesNoDisplay", "confirm", True),
        ("delayDisplay", "delay", None), ("messageBox", "message", None),
    ):  # fmt: skip
        monkeypatch.setattr(slicer.util, name, record(kind, result))
    monkeypatch.setattr(slicer.util, "selectModule", lambda name: session.dialogs.append(("select module", name)))
    monkeypatch.setattr(slicer.util, "mainWindow", lambda: None)
    monkeypatch.setattr(slicer.util, "modulePath", lambda name: modules[name.lower()].path)
    yield session
    for entry in ("sternumssm", "sternumlandmarks", "sternumshapemodel"):
        widget = modules[entry].widget
        if widget is not None:
            widget.cleanup()
    for selector in qMRMLNodeComboBox.instances:
        selector.setMRMLScene(None)  # its scene observers would outlive the test
    if Signal.escaped:
        pytest.fail(f"Exceptions escaped Qt slots (PythonQt prints them to the console): {Signal.escaped}")
