"""Segmentation nodes with the standard sternum labels, matched by name and never by order.

Segment names, colours, terminology and label values all come from
``anatomy.label_scheme()``. Exports go through a colour table built here from the
scheme, so a segment's value depends only on its name.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import slicer

from .anatomy import label_scheme
from .atomic import atomic_output_path
from .geometry import ImageGeometry, Volume
from .image_files import SEGMENTATION_SUFFIX
from .mrml import headless_scene, module_logic, scratch_nodes
from .roi import crop, occupied_slices
from .volume_nodes import volume_from_node, volume_node_from_volume


def segmentation_from_labelmap(
    scene: slicer.vtkMRMLScene, labels: Volume, name: str = "Segmentation"
) -> slicer.vtkMRMLSegmentationNode:
    """A segmentation node with one segment per label value present in ``labels``.

    Each segment gets the standard name, colour and terminology of its value (2 becomes
    "Sternal_body") and keeps that value when written. Classes without voxels are absent.
    The reference geometry is that of ``labels`` (LPS in, RAS in the scene as usual).
    """
    return _standard_segmentation(scene, labels, name, labelled_box_only=True)


def _standard_segmentation(
    scene: slicer.vtkMRMLScene, labels: Volume, name: str, labelled_box_only: bool
) -> slicer.vtkMRMLSegmentationNode:
    """:func:`segmentation_from_labelmap`; ``labelled_box_only`` imports just the labelled voxels' box (Slicer
    keeps each segment at its own extent anyway, and the reference geometry stays the whole grid): half the
    import time of a large CT, but Slicer's writer then pads the segments back slowly, so files are written
    from a whole-grid import."""
    _check_label_values(labels.array)
    standard = Volume(array=labels.array.astype(np.uint8, copy=False), geometry=labels.geometry)
    occupied = occupied_slices(standard.array) if labelled_box_only else None
    labelled = crop(standard, occupied) if occupied is not None else standard
    with scratch_nodes(scene) as keep:
        labelmap_node = volume_node_from_volume(scene, labelled, f"{name} labels", labelmap=True)
        segmentation_node = _import_standard_segments(scene, labelmap_node, name, reference=standard.geometry)
        keep.append(segmentation_node)
    return segmentation_node


def labelmap_from_segmentation(
    segmentation_node: slicer.vtkMRMLSegmentationNode,
    reference: ImageGeometry,
    segment_names: Mapping[str, str] | None = None,
) -> Volume:
    """The segments as standard label values (uint8) on the ``reference`` grid (LPS).

    Values follow segment names, whatever the order of the segments or their colours.
    ``segment_names`` maps other names to standard ones (e.g. ``{"Sternum_body": "Sternal_body"}``);
    standard names need no entry. Segments are taken in world coordinates: a parent
    transform of the segmentation is applied.
    """
    standard_names = _standard_names(segmentation_node, segment_names)
    empty = Volume(array=np.zeros(reference.shape_kji, dtype=np.uint8), geometry=reference)
    if not standard_names:
        return empty
    scene = segmentation_node.GetScene()
    with scratch_nodes(scene):
        reference_node = volume_node_from_volume(scene, empty, "reference grid", labelmap=True)
        exported = volume_from_node(_export_by_name(segmentation_node, reference_node, standard_names))
    return Volume(array=exported.array.astype(np.uint8), geometry=exported.geometry)


def segment_masks(
    segmentation_node: slicer.vtkMRMLSegmentationNode,
    reference: ImageGeometry,
    segment_names: Mapping[str, str] | None = None,
) -> dict[str, np.ndarray]:
    """Each segment's voxels on the ``reference`` grid as a boolean array [k, j, i], keyed by standard name.

    Unlike a label map this keeps voxels that two segments share, so overlaps can be counted.
    """
    standard_names = _standard_names(segmentation_node, segment_names)
    empty = Volume(array=np.zeros(reference.shape_kji, dtype=np.uint8), geometry=reference)
    masks = {}
    scene = segmentation_node.GetScene()
    with scratch_nodes(scene):
        reference_node = volume_node_from_volume(scene, empty, "reference grid", labelmap=True)
        for segment_id, standard_name in standard_names.items():
            labelmap_node = _export_by_name(segmentation_node, reference_node, {segment_id: standard_name})
            masks[standard_name] = slicer.util.arrayFromVolume(labelmap_node) > 0
    return masks


def write_segmentation(
    segmentation_node: slicer.vtkMRMLSegmentationNode, path: Path | str, overwrite: bool = False
) -> Path:
    """Write a ``.seg.nrrd`` that carries the standard names, colours, terminology and label values.

    Slicer writes segments drawn from scratch with values by layer and creation order,
    not by name, so the segments are first merged into one standard label map on the
    segmentation's reference grid (extended to hold every segment) and re-imported; the
    node itself is not changed. A voxel in two segments gets one of their values; empty
    segments are dropped. Segments are written in world coordinates (a parent transform
    is applied). The file's geometry is LPS, as in every NRRD.
    """
    path = Path(path)
    if not path.name.endswith(SEGMENTATION_SUFFIX):
        raise ValueError(f"A segmentation file name must end in {SEGMENTATION_SUFFIX}, got {path.name}.")
    standard_names = _standard_names(segmentation_node, None)
    if not standard_names:
        raise ValueError(f"Segmentation {segmentation_node.GetName()!r} has no segments; nothing to write.")
    scene = segmentation_node.GetScene()
    with scratch_nodes(scene), atomic_output_path(path, overwrite=overwrite) as temporary:
        labelmap_node = _export_by_name(segmentation_node, None, standard_names)
        standard_node = _import_standard_segments(scene, labelmap_node, segmentation_node.GetName())
        _write_node(standard_node, temporary, path)
    return path


def _write_node(segmentation_node: slicer.vtkMRMLSegmentationNode, temporary: Path, path: Path) -> None:
    storage = segmentation_node.CreateDefaultStorageNode()
    storage.SetFileName(str(temporary))
    if not storage.WriteData(segmentation_node):
        raise OSError(f"Writing the segmentation to {path} failed; the writer's messages are in the log above.")


def write_segmentation_file(labels: Volume, path: Path | str, name: str) -> Path:
    """A standard label map as a ``.seg.nrrd`` on the label map's whole grid, without a user scene.

    The file is the one :func:`write_segmentation` writes of :func:`segmentation_from_labelmap`'s node; that
    node is standard already, so it is written as it is, without merging and re-importing its segments."""
    path = Path(path)
    if not path.name.endswith(SEGMENTATION_SUFFIX):
        raise ValueError(f"A segmentation file name must end in {SEGMENTATION_SUFFIX}, got {path.name}.")
    if not np.any(labels.array):
        raise ValueError(f"Label map {name!r} has no labelled voxels; nothing to write.")
    with headless_scene() as scene, atomic_output_path(path) as temporary:
        _write_node(_standard_segmentation(scene, labels, name, labelled_box_only=False), temporary, path)
    return path


def read_segmentation(scene: slicer.vtkMRMLScene, path: Path | str) -> slicer.vtkMRMLSegmentationNode:
    """Load a segmentation file (``.seg.nrrd`` or another format Slicer reads) as Slicer does."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Segmentation file {path} does not exist.")
    messages = slicer.vtkMRMLMessageCollection()
    name = path.name.removesuffix(SEGMENTATION_SUFFIX).split(".")[0]
    node = module_logic(scene, "segmentations").LoadSegmentationFromFile(str(path), True, name, None, messages)
    if node is None:
        raise OSError(f"Cannot read segmentation {path}:\n{messages.GetAllMessagesAsString()}")
    return node


def standard_color_table(entry_names: Mapping[str, str] | None = None) -> slicer.vtkMRMLColorTableNode:
    """Colour table (not in any scene) mapping each standard segment name to its label value.

    ``entry_names`` (standard name -> name in the table) lets segments named otherwise
    (aliases) find the standard value. The table deliberately has no terminology: Slicer
    matches segments to table entries by terminology first, which would map segments of a
    shared terminology to one value.
    """
    scheme = label_scheme()
    entry_names = entry_names or {}
    table = slicer.vtkMRMLColorTableNode()
    table.SetTypeToUser()
    table.SetNumberOfColors(max(scheme.values) + 1)
    table.SetColor(scheme.background_value, "Background", 0.0, 0.0, 0.0, 0.0)
    for segment_class in scheme.classes:
        name = entry_names.get(segment_class.name, segment_class.name)
        table.SetColor(segment_class.value, name, *segment_class.color, 1.0)
    return table


def _check_label_values(array: np.ndarray) -> None:
    scheme = label_scheme()
    known = {scheme.background_value, *scheme.values}
    if array.size and set(range(int(array.min()), int(array.max()) + 1)) <= known:
        return  # every value in range is known: no need for np.unique's sort of the whole volume
    unknown = sorted(set(np.unique(array).tolist()) - known)
    if unknown:
        known = ", ".join(f"{c.value} {c.name}" for c in scheme.classes)
        raise ValueError(
            f"Label values {unknown} are not in the label scheme (background {scheme.background_value}; {known})."
        )


def _standard_names(
    segmentation_node: slicer.vtkMRMLSegmentationNode, segment_names: Mapping[str, str] | None
) -> dict[str, str]:
    """Segment id -> standard name, through ``segment_names`` where given; unknown or doubled names are errors."""
    scheme = label_scheme()
    segment_names = dict(segment_names or {})
    bad_targets = sorted(set(segment_names.values()) - set(scheme.names))
    if bad_targets:
        raise ValueError(
            f"The segment name map points to {bad_targets}, which are not standard names ({', '.join(scheme.names)})."
        )
    segmentation = segmentation_node.GetSegmentation()
    ids = [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())]
    names = {segment_id: segmentation.GetSegment(segment_id).GetName() for segment_id in ids}
    standard = {segment_id: segment_names.get(name, name) for segment_id, name in names.items()}
    unknown = sorted({names[i] for i, name in standard.items() if name not in scheme.names})
    if unknown:
        aliases = f" or give a name map (known aliases: {', '.join(sorted(segment_names))})" if segment_names else ""
        raise ValueError(
            f"Segmentation {segmentation_node.GetName()!r} has segments {unknown} that are not standard; "
            f"rename them to one of {', '.join(scheme.names)}{aliases}."
        )
    targets = list(standard.values())
    duplicates = sorted({name for name in targets if targets.count(name) > 1})
    if duplicates:
        raise ValueError(f"Segmentation {segmentation_node.GetName()!r} has more than one segment named {duplicates}.")
    return standard


def _export_by_name(
    segmentation_node: slicer.vtkMRMLSegmentationNode,
    reference_node: slicer.vtkMRMLVolumeNode | None,
    standard_names: dict[str, str],
) -> slicer.vtkMRMLLabelMapVolumeNode:
    """A new label map node (for the caller to remove) holding the standard value of each
    segment in ``standard_names`` (segment id -> standard name), on ``reference_node``'s grid
    or, without one, on the segmentation's reference grid extended to every segment."""
    segmentation = segmentation_node.GetSegmentation()
    segment_ids = list(standard_names)
    entry_names = {standard: segmentation.GetSegment(i).GetName() for i, standard in standard_names.items()}
    extent = (
        slicer.vtkSegmentation.EXTENT_REFERENCE_GEOMETRY
        if reference_node is not None
        else slicer.vtkSegmentation.EXTENT_UNION_OF_EFFECTIVE_SEGMENTS_AND_REFERENCE_GEOMETRY
    )
    scene = segmentation_node.GetScene()
    labelmap_node = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", f"{segmentation_node.GetName()} labels")
    exported = slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(
        segmentation_node, segment_ids, labelmap_node, reference_node, extent, standard_color_table(entry_names)
    )
    if not exported:
        raise RuntimeError(f"Exporting segmentation {segmentation_node.GetName()!r} to a label map failed.")
    return labelmap_node


def _import_standard_segments(
    scene: slicer.vtkMRMLScene,
    labelmap_node: slicer.vtkMRMLLabelMapVolumeNode,
    name: str,
    reference: ImageGeometry | None = None,
) -> slicer.vtkMRMLSegmentationNode:
    """A new segmentation node with one standard segment per value in ``labelmap_node``, whose reference
    geometry is ``reference`` (LPS), or the label map's own grid without one."""
    segmentation_node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    segmentation_node.CreateDefaultDisplayNodes()
    # Without a reference geometry the file would be cropped to the segments' extent.
    if reference is None:
        segmentation_node.SetReferenceImageGeometryParameterFromVolumeNode(labelmap_node)
    else:
        extent = [0, reference.size[0] - 1, 0, reference.size[1] - 1, 0, reference.size[2] - 1]
        geometry = slicer.vtkSegmentationConverter.SerializeImageGeometry(
            slicer.util.vtkMatrixFromArray(reference.ijk_to_ras()), extent
        )
        segmentation_node.GetSegmentation().SetConversionParameter(
            slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName(), geometry
        )
    if not slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(labelmap_node, segmentation_node):
        raise RuntimeError(f"Importing label map {labelmap_node.GetName()!r} as a segmentation failed.")
    _apply_standard_properties(segmentation_node.GetSegmentation())
    return segmentation_node


def _apply_standard_properties(segmentation: slicer.vtkSegmentation) -> None:
    """Name, colour and terminology from each segment's label value."""
    scheme = label_scheme()
    for index in range(segmentation.GetNumberOfSegments()):
        segment = segmentation.GetNthSegment(index)
        segment_class = scheme.by_value(segment.GetLabelValue())
        segment.SetName(segment_class.name)
        segment.SetColor(*segment_class.color)
        segment.SetTerminology(scheme.terminology(segment_class.name))
        # Slicer renames and recolours auto-generated segments when their terminology changes.
        segment.SetNameAutoGenerated(False)
        segment.SetColorAutoGenerated(False)
