"""Volume nodes to and from :class:`Volume` (arrays with LPS geometry).

MRML stores a volume's geometry as the IJKToRAS matrix; ``Volume`` keeps it in LPS.
The flip between them happens here and in ``ImageGeometry.ijk_to_ras()`` only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import slicer
from vtkmodules.vtkCommonMath import vtkMatrix4x4

from .geometry import LPS_RAS_FLIP, ImageGeometry, Volume
from .mrml import module_logic

# Bit 0 of vtkSlicerVolumesLogic.AddArchetypeVolume's loadingOptions.
_LOAD_AS_LABELMAP = 1


def volume_node_from_volume(
    scene: slicer.vtkMRMLScene, volume: Volume, name: str, labelmap: bool = False
) -> slicer.vtkMRMLScalarVolumeNode:
    """Add a scalar (or label map) volume node whose IJKToRAS comes from the volume's LPS geometry."""
    class_name = "vtkMRMLLabelMapVolumeNode" if labelmap else "vtkMRMLScalarVolumeNode"
    node = scene.AddNewNodeByClass(class_name, name)
    update_volume_node(node, volume)
    node.CreateDefaultDisplayNodes()
    return node


def update_volume_node(node: slicer.vtkMRMLVolumeNode, volume: Volume) -> None:
    """Replace the node's voxels and geometry (IJKToRAS from the volume's LPS geometry) in place."""
    node.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(volume.geometry.ijk_to_ras()))
    slicer.util.updateVolumeFromArray(node, volume.array)


def volume_from_node(node: slicer.vtkMRMLVolumeNode) -> Volume:
    """The node's voxels with their world geometry, in LPS.

    A node under a linear parent transform gets that transform applied to its geometry
    (as hardening it would), so the result is where Slicer shows the volume. A
    non-linear transform, or one that shears the voxel grid, cannot be expressed as a
    voxel grid and is refused: harden or resample the volume first.
    """
    ijk_to_world_ras = _ijk_to_world_ras(node)
    ijk_to_lps = LPS_RAS_FLIP @ ijk_to_world_ras[:3]
    spacing = np.linalg.norm(ijk_to_lps[:, :3], axis=0)
    array = slicer.util.arrayFromVolume(node).copy()
    try:
        geometry = ImageGeometry(
            origin_lps=ijk_to_lps[:, 3],
            spacing=spacing,
            direction_lps=ijk_to_lps[:, :3] / spacing,
            size=array.shape[::-1],
        )
    except ValueError as error:
        raise ValueError(f"Volume {node.GetName()!r} has no valid voxel grid in world coordinates: {error}") from error
    return Volume(array=array, geometry=geometry)


def load_volume_node(scene: slicer.vtkMRMLScene, path: Path | str, labelmap: bool = False) -> slicer.vtkMRMLVolumeNode:
    """Read an image file (NRRD, NIfTI, MHA, ...) into a new volume node, as Slicer's "Add data" does.

    Slicer's reader makes the voxel axes right-handed: a mirrored image (negative
    direction determinant) comes back with its slice order (k) reversed. The voxels
    keep their RAS/LPS positions, but the array differs from SimpleITK's by index.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Volume file {path} does not exist.")
    name = Path(path.name.removesuffix(".gz")).stem
    options = _LOAD_AS_LABELMAP if labelmap else 0
    node = module_logic(scene, "volumes").AddArchetypeVolume(str(path), name, options)
    if node is None:
        raise OSError(f"Cannot read {path} as a volume; the reader's messages are in the log above.")
    return node


def _ijk_to_world_ras(node: slicer.vtkMRMLVolumeNode) -> np.ndarray:
    ijk_to_ras = vtkMatrix4x4()
    node.GetIJKToRASMatrix(ijk_to_ras)
    transform_node = node.GetParentTransformNode()
    if transform_node is None:
        return slicer.util.arrayFromVTKMatrix(ijk_to_ras)
    to_world = vtkMatrix4x4()
    if not transform_node.GetMatrixTransformToWorld(to_world):
        raise ValueError(
            f"Volume {node.GetName()!r} is under the non-linear transform {transform_node.GetName()!r}; "
            "harden the transform first."
        )
    return slicer.util.arrayFromVTKMatrix(to_world) @ slicer.util.arrayFromVTKMatrix(ijk_to_ras)
