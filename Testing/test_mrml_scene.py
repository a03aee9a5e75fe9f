"""The headless scene and the module-logic helper that library code shares with Slicer."""

from __future__ import annotations

import gc
from types import SimpleNamespace

import numpy as np
import pytest
import slicer
from SternumSSMLib.geometry import ImageGeometry, Volume
from SternumSSMLib.mrml import LOGIC_NAMES, close_scene, module_logic, new_scene, scratch_nodes
from SternumSSMLib.volume_nodes import volume_node_from_volume
from vtkmodules.vtkCommonCore import vtkCommand


def test_new_scene_has_colour_tables_and_bound_logics(mrml_scene):
    assert mrml_scene.GetNodeByID("vtkMRMLColorTableNodeGrey") is not None
    assert mrml_scene.GetNodeByID("vtkMRMLSelectionNodeSingleton") is not None
    for name in LOGIC_NAMES:
        assert module_logic(mrml_scene, name).GetMRMLScene() is mrml_scene


def test_one_logic_per_scene_and_name(mrml_scene):
    other = new_scene()
    try:
        assert module_logic(mrml_scene, "markups") is module_logic(mrml_scene, "markups")
        assert module_logic(other, "markups") is not module_logic(mrml_scene, "markups")
        assert module_logic(other, "markups").GetMRMLScene() is other
    finally:
        close_scene(other)


def test_unknown_module_name_lists_the_available_ones(mrml_scene):
    with pytest.raises(ValueError, match="volumes, segmentations, markups"):
        module_logic(mrml_scene, "dicom")


def test_inside_slicer_the_application_scene_uses_the_application_logics(mrml_scene, monkeypatch):
    application_logic = object()
    modules = SimpleNamespace(volumes=SimpleNamespace(logic=lambda: application_logic))
    monkeypatch.setattr(slicer, "app", object(), raising=False)
    monkeypatch.setattr(slicer, "mrmlScene", mrml_scene, raising=False)
    monkeypatch.setattr(slicer, "modules", modules, raising=False)
    assert module_logic(mrml_scene, "volumes") is application_logic
    private_scene = new_scene()
    try:
        assert module_logic(private_scene, "volumes").GetMRMLScene() is private_scene
    finally:
        close_scene(private_scene)


def test_closed_scene_is_freed():
    scene = new_scene()
    deleted = []
    scene.AddObserver(vtkCommand.DeleteEvent, lambda *_: deleted.append(True))
    close_scene(scene)
    del scene
    gc.collect()
    assert deleted, "the logics still hold the scene"


def test_scratch_nodes_removes_what_the_block_added_except_what_it_keeps(mrml_scene):
    volume = Volume(np.zeros((2, 3, 4), np.uint8), ImageGeometry([0, 0, 0], [1, 1, 1], np.eye(3), (4, 3, 2)))
    before = mrml_scene.GetNumberOfNodes()
    with scratch_nodes(mrml_scene) as keep:
        kept = volume_node_from_volume(mrml_scene, volume, "kept")
        volume_node_from_volume(mrml_scene, volume, "scratch", labelmap=True)
        keep.append(kept)
    assert mrml_scene.GetNumberOfNodes() == before + 2
    assert mrml_scene.IsNodePresent(kept) and mrml_scene.IsNodePresent(kept.GetDisplayNode())

    with pytest.raises(RuntimeError), scratch_nodes(mrml_scene) as keep:
        keep.append(volume_node_from_volume(mrml_scene, volume, "failed"))
        raise RuntimeError
    assert mrml_scene.GetNumberOfNodes() == before + 2
