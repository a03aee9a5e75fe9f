"""Per-class clean-up of a predicted label map, with a record of what was removed.

- Manubrium, sternal body, xiphoid: keep the largest connected piece (26-connected).
- Cartilage: remove only islands smaller than a volume threshold; ten cartilage pairs are
  many pieces by nature, so "keep largest" would delete real anatomy.
- A piece that the scan boundary cuts through is never removed: a cut structure may
  legitimately fall apart into pieces at the edge of the field of view. Touching the
  boundary is not enough: a model leaves stray voxels and thin slivers on the image faces
  (above all on an oblique grid, where the faces cut through the padding), and those go,
  whatever their size. :func:`face_contact` tells the two apart.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

from .anatomy import label_scheme
from .geometry import ImageGeometry, Volume
from .roi import occupied_slices, with_border

BONE_CLASSES = ("Manubrium", "Sternal_body", "Xiphoid")
CARTILAGE_CLASS = "Cartilage"
_CONNECTIVITY = np.ones((3, 3, 3), dtype=bool)
# A structure cut by the scan boundary shows a cross-section on the image face at least this
# large (the thinnest cut structure, a costal cartilage of ~1 cm, shows ~80 mm^2)...
CUT_SECTION_MM2 = 25.0
# ...and reaches into the image: its volume over that section is at least this deep. A sliver
# one or two voxels thick lying on the face is not a cut structure.
CUT_DEPTH_MM = 4.0


@dataclass(frozen=True)
class PostprocessSettings:
    keep_largest_bone_piece: bool = True
    remove_cartilage_islands: bool = True
    cartilage_island_ml: float = 0.1


def boundary_sections_mm2(components: np.ndarray, count: int, geometry: ImageGeometry) -> np.ndarray:
    """Area (mm^2) that each labelled piece (ids 1..count; index 0 unused) shows on the six image faces."""
    area = np.zeros(count + 1)
    spacing_kji = geometry.spacing[::-1]
    for axis in range(3):
        pixel_mm2 = float(np.prod(np.delete(spacing_kji, axis)))
        for index in (0, -1):
            area += np.bincount(np.take(components, index, axis=axis).ravel(), minlength=count + 1) * pixel_mm2
    area[0] = 0.0
    return area


def face_contact(components: np.ndarray, count: int, geometry: ImageGeometry) -> tuple[np.ndarray, np.ndarray]:
    """Booleans per piece (ids 1..count; index 0 unused): cut by the scan boundary, and sliver on it.

    A piece reaches into the image when its volume is at least its section on the faces times
    ``CUT_DEPTH_MM``. Cut: it does, with a section of at least ``CUT_SECTION_MM2``. Sliver: it
    touches the faces but does not reach in (stray voxels, a thin sheet lying on a face).
    """
    section = boundary_sections_mm2(components, count, geometry)
    volume_mm3 = np.bincount(components.ravel(), minlength=count + 1) * float(np.prod(geometry.spacing))
    reaches_in = volume_mm3 >= section * CUT_DEPTH_MM
    cut = (section >= CUT_SECTION_MM2) & reaches_in
    sliver = (section > 0) & ~reaches_in
    cut[0] = sliver[0] = False
    return cut, sliver


def has_cut_piece(mask: np.ndarray, geometry: ImageGeometry) -> bool:
    """Whether the scan boundary cuts through a piece of ``mask`` ([k, j, i] on ``geometry``; :func:`face_contact`)."""
    if not any(np.take(mask, index, axis=axis).any() for axis in range(3) for index in (0, -1)):
        return False  # nothing on the faces: no need to label the pieces
    components, count = ndimage.label(mask, structure=_CONNECTIVITY)
    return bool(face_contact(components, count, geometry)[0].any())


def postprocess(labels: Volume, settings: PostprocessSettings | None = None) -> tuple[Volume, dict]:
    """Cleaned label map (a copy) and a record of each step: applied or not, pieces and ml removed.

    ``boundary_pieces_removed`` counts the removed slivers on the image faces (:func:`face_contact`).
    """
    settings = settings or PostprocessSettings()
    scheme = label_scheme()
    cleaned = labels.array.copy()
    steps = []
    for name in (*BONE_CLASSES, CARTILAGE_CLASS):
        is_bone = name in BONE_CLASSES
        enabled = settings.keep_largest_bone_piece if is_bone else settings.remove_cartilage_islands
        step = {"class": name, "rule": "keep largest piece" if is_bone else "remove small islands", "applied": enabled}
        if enabled:
            step |= _clean_class(cleaned, labels.geometry, scheme.by_name(name).value, is_bone, settings)

        steps.append(step)
    return Volume(cleaned, labels.geometry), {"settings": asdict(settings), "steps": steps}


def _clean_class(
    cleaned: np.ndarray, geometry: ImageGeometry, value: int, is_bone: bool, settings: PostprocessSettings
) -> dict:
    """One class's rule, applied to ``cleaned`` in place; returns its record.

    The pieces are labelled inside the class's own box plus a one-voxel border (``with_border``): the same
    pieces, faces and cuts as on the whole grid, at the cost of the box."""
    voxel_ml = float(np.prod(geometry.spacing)) / 1000.0
    occupied = occupied_slices(cleaned == value)
    if occupied is None:
        return {"pieces": 0, "pieces_removed": 0, "boundary_pieces_removed": 0, "removed_ml": 0.0}
    box = with_border(occupied, cleaned.shape)
    part = cleaned[box]  # a view: removing voxels here removes them from ``cleaned``
    components, count = ndimage.label(part == value, structure=_CONNECTIVITY)
    sizes = np.bincount(components.ravel(), minlength=count + 1)
    sizes[0] = 0
    cut, sliver = face_contact(components, count, geometry)  # spacing only: the box's is the grid's
    keep = cut.copy()
    if is_bone:
        keep[int(np.argmax(sizes))] = count > 0
    else:
        keep |= (sizes * voxel_ml >= settings.cartilage_island_ml) & ~sliver
    keep[0] = True
    removed = ~keep[components] & (components > 0)
    part[removed] = 0
    return {
        "pieces": int(count),
        "pieces_removed": int(np.sum(~keep[1:])),
        "boundary_pieces_removed": int(np.sum(~keep[1:] & sliver[1:])),
        "removed_ml": round(float(removed.sum()) * voxel_ml, 4),
    }
