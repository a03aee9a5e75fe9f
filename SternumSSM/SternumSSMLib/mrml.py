"""MRML scenes and module logics that behave the same inside Slicer and headless.

Inside Slicer the application owns the scene and the module logics: library code
receives ``slicer.mrmlScene`` and gets ``slicer.modules.<name>.logic()``. Headless
(tests, command line) the ``slicer-core`` wheel has the same C++ classes but no
application, so :func:`new_scene` builds what the logics need and
:func:`module_logic` binds one instance of each logic to that scene.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import slicer

# Name in slicer.modules -> (logic class, name under which Slicer's application logic registers it).
_HEADLESS_LOGICS = {
    "volumes": ("vtkSlicerVolumesLogic", "Volumes"),
    "segmentations": ("vtkSlicerSegmentationsModuleLogic", "Segmentations"),
    "markups": ("vtkSlicerMarkupsLogic", "Markups"),
}
LOGIC_NAMES = tuple(_HEADLESS_LOGICS)
_SESSION_ATTRIBUTE = "_sternum_ssm_session"


@dataclass
class _HeadlessSession:
    """What Slicer's application would own for a scene. Module logics keep only a raw
    pointer to the application logic, so it must live as long as they do."""

    application: slicer.vtkSlicerApplicationLogic
    logics: dict = field(default_factory=dict)


def new_scene() -> slicer.vtkMRMLScene:
    """A headless scene with default colour tables and the volumes, segmentations and
    markups logics bound to it. Release it with :func:`close_scene`."""
    scene = slicer.vtkMRMLScene()
    for name in LOGIC_NAMES:
        module_logic(scene, name)
    return scene


def module_logic(scene: slicer.vtkMRMLScene, name: str) -> slicer.vtkMRMLAbstractLogic:
    """The logic of module ``name`` (as in ``slicer.modules``) working on ``scene``.

    Inside Slicer, for the application's scene, this is ``slicer.modules.<name>.logic()``.
    For any other scene it is one headless instance per scene, created on first use.
    """
    if _is_application_scene(scene):
        return getattr(slicer.modules, name).logic()
    if name not in _HEADLESS_LOGICS:
        raise ValueError(f"No headless logic for module {name!r}; available: {', '.join(LOGIC_NAMES)}.")
    session = _session(scene)
    if name not in session.logics:
        session.logics[name] = _bind_logic(scene, session.application, name)
    return session.logics[name]


def close_scene(scene: slicer.vtkMRMLScene) -> None:
    """Empty a headless scene and release its logics so that both can be freed.

    Each logic holds a reference to the scene and the scene holds the logics, so
    without this call a headless scene and its data live until the process ends.
    """
    session = getattr(scene, _SESSION_ATTRIBUTE, None)
    if session is None:
        return
    scene.Clear(True)
    delattr(scene, _SESSION_ATTRIBUTE)
    # Module logics go before the application logic, to which they keep a raw pointer.
    session.logics.clear()


@contextlib.contextmanager
def headless_scene() -> Iterator[slicer.vtkMRMLScene]:
    """A :func:`new_scene` for one read or write without a user scene, closed on leaving the block."""
    scene = new_scene()
    try:
        yield scene
    finally:
        close_scene(scene)


@contextlib.contextmanager
def scratch_nodes(scene: slicer.vtkMRMLScene) -> Iterator[list]:
    """Remove, on leaving the block, every node added to ``scene`` inside it.

    Yields a list: nodes appended to it survive a successful block, with their display
    nodes. Imports and exports through intermediate nodes need this: they leave display
    nodes and colour tables that removing the intermediate node does not remove.
    """
    before = {node.GetID() for node in _nodes(scene)}
    keep: list = []
    try:
        yield keep
    except BaseException:
        keep.clear()
        raise
    finally:
        protected = before | {node.GetID() for owner in keep for node in (owner, *_display_nodes(owner))}
        for node in reversed(_nodes(scene)):
            if node.GetID() not in protected and scene.IsNodePresent(node):
                scene.RemoveNode(node)


def _is_application_scene(scene: slicer.vtkMRMLScene) -> bool:
    return getattr(slicer, "app", None) is not None and scene is getattr(slicer, "mrmlScene", None)


def _nodes(scene: slicer.vtkMRMLScene) -> list:
    return [scene.GetNthNode(index) for index in range(scene.GetNumberOfNodes())]


def _display_nodes(node) -> list:
    return [node.GetNthDisplayNode(index) for index in range(node.GetNumberOfDisplayNodes())]


def _session(scene: slicer.vtkMRMLScene) -> _HeadlessSession:
    session = getattr(scene, _SESSION_ATTRIBUTE, None)
    if session is None:
        application = slicer.vtkSlicerApplicationLogic()
        application.SetMRMLScene(scene)
        colors = application.GetColorLogic()
        # Binding the colour logic adds the default colour tables to the scene; the volumes
        # logic looks it up as "Colors" to give new volumes their display colour table.
        colors.SetMRMLScene(scene)
        application.SetModuleLogic("Colors", colors)
        session = _HeadlessSession(application)
        setattr(scene, _SESSION_ATTRIBUTE, session)
    return session


def _bind_logic(scene: slicer.vtkMRMLScene, application: slicer.vtkSlicerApplicationLogic, name: str):
    class_name, registered_name = _HEADLESS_LOGICS[name]
    logic = getattr(slicer, class_name)()
    # Same order as Slicer's application: application logic first, then the scene
    # (which registers the module's node classes and, for segmentations, the converter rules).
    logic.SetMRMLApplicationLogic(application)
    logic.SetMRMLScene(scene)
    application.SetModuleLogic(registered_name, logic)
    return logic
