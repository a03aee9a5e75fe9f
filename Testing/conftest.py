"""Fixtures that give tests the real MRML of the slicer-core wheel, without the Slicer application."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from types import SimpleNamespace

import numpy as np
import pytest
import slicer
from SternumSSMLib.geometry import ImageGeometry, Volume, orientation_direction, rotation_matrix
from SternumSSMLib.mrml import LOGIC_NAMES, close_scene, module_logic, new_scene

# The Slicer harness's fixtures (harness, hidden_packages) for every test module. Registered here, before any test
# module imports slicer_harness, so that pytest rewrites its asserts (a test module's own line came too late).
pytest_plugins = ["slicer_harness"]


@pytest.fixture
def mrml_scene() -> Iterator[slicer.vtkMRMLScene]:
    """A fresh headless scene per test, emptied and released afterwards."""
    scene = new_scene()
    yield scene
    close_scene(scene)


@pytest.fixture
def slicer_globals(mrml_scene: slicer.vtkMRMLScene, monkeypatch: pytest.MonkeyPatch) -> slicer.vtkMRMLScene:
    """``slicer.mrmlScene`` and ``slicer.modules.<name>.logic()`` for code that needs them
    (e.g. ``slicer.util.arrayFromSegmentBinaryLabelmap``); both are removed after the test.

    ``slicer.app`` stays absent, so library code still takes its headless path.
    """
    modules = SimpleNamespace(
        **{name: SimpleNamespace(logic=lambda name=name: module_logic(mrml_scene, name)) for name in LOGIC_NAMES}
    )
    monkeypatch.setattr(slicer, "mrmlScene", mrml_scene, raising=False)
    monkeypatch.setattr(slicer, "modules", modules, raising=False)
    return mrml_scene


@pytest.fixture
def oblique_geometry() -> ImageGeometry:
    """A small LPS grid that is axis-permuted, mirrored (left-handed) and rotated off every
    axis, with anisotropic spacing: any mix-up of LPS/RAS, axis order or flips shows."""
    direction = rotation_matrix([1.0, 2.0, 3.0], 23.0) @ orientation_direction("PIL")
    return ImageGeometry(
        origin_lps=[-12.5, 30.25, 101.0], spacing=[0.7, 1.3, 2.1], direction_lps=direction, size=(7, 5, 4)
    )


@pytest.fixture
def assert_same_image() -> Callable[[Volume, Volume, float], None]:
    """Check that two volumes hold the same value at the same LPS point for every voxel
    (or a random sample of a large volume's voxels), however their arrays are indexed:
    Slicer reverses k of mirrored grids on reading."""
    return _assert_same_image


def _assert_same_image(actual: Volume, expected: Volume, tolerance_mm: float = 1e-6, samples: int = 20000) -> None:
    assert actual.geometry.size == expected.geometry.size
    ijk = np.indices(expected.geometry.size).reshape(3, -1).T
    if len(ijk) > samples:
        ijk = ijk[np.random.default_rng(0).choice(len(ijk), samples, replace=False)]
    points_lps = expected.geometry.index_to_lps(ijk)
    actual_ijk = np.rint(actual.geometry.lps_to_index(points_lps)).astype(int)
    np.testing.assert_allclose(actual.geometry.index_to_lps(actual_ijk), points_lps, atol=tolerance_mm)
    np.testing.assert_array_equal(actual.array[tuple(actual_ijk[:, ::-1].T)], expected.array[tuple(ijk[:, ::-1].T)])
