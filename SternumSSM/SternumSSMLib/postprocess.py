"""Per-class clean-up of a predicted label map, with a record of what was removed.

- Manubrium, sternal body, xiphoid: keep the largest connected piece (26-connected).
- Cartilage: remove only islands smaller than a volume threshold; ten cartilage pairs are
  many pieces by nature, so "keep largest" would delete real anatomy.
- A piece that touches the scan boundary is never removed: a cut structure may
  legitimately fall apart into pieces at the edge of the field of view.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

from .anatomy import label_scheme
from .geometry import Volume

BONE_CLASSES = ("Manubrium", "Sternal_body", "Xiphoid")
CARTILAGE_CLASS = "Cartilage"
_CONNECTIVITY = np.ones((3, 3, 3), dtype=bool)


@dataclass(frozen=True)
class PostprocessSettings:
    keep_largest_bone_piece: bool = True
    remove_cartilage_islands: bool = True
    cartilage_island_ml: float = 0.1


def _touches_boundary(components: np.ndarray, count: int) -> np.ndarray:
    """Boolean per component id (index 0 unused): does it reach any face of the volume?"""
    touching = np.zeros(count + 1, dtype=bool)
    for axis in range(3):
        for index in (0, -1):
            touching[np.unique(np.take(components, index, axis=axis))] = True
    touching[0] = False
    return touching


def postprocess(labels: Volume, settings: PostprocessSettings | None = None) -> tuple[Volume, dict]:
    """Cleaned label map (a copy) and a record of each step: applied or not, pieces and ml removed."""
    settings = settings or PostprocessSettings()
    scheme = label_scheme()
    voxel_ml = float(np.prod(labels.geometry.spacing)) / 1000.0
    cleaned = labels.array.copy()
    steps = []
    for name in (*BONE_CLASSES, CARTILAGE_CLASS):
        is_bone = name in BONE_CLASSES
        enabled = settings.keep_largest_bone_piece if is_bone else settings.remove_cartilage_islands
        step = {"class": name, "rule": "keep largest piece" if is_bone else "remove small islands", "applied": enabled}
        if enabled:
            value = scheme.by_name(name).value
            components, count = ndimage.label(cleaned == value, structure=_CONNECTIVITY)
            sizes = np.bincount(components.ravel(), minlength=count + 1)
            sizes[0] = 0
            keep = _touches_boundary(components, count)
            if is_bone:
                keep[int(np.argmax(sizes))] = count > 0
            else:
                keep |= sizes * voxel_ml >= settings.cartilage_island_ml
            keep[0] = True
            removed = ~keep[components] & (components > 0)
            cleaned[removed] = 0
            step |= {
                "pieces": int(count),
                "pieces_removed": int(np.sum(~keep[1:])),
                "removed_ml": round(float(removed.sum()) * voxel_ml, 4),
            }
        steps.append(step)
    return Volume(cleaned, labels.geometry), {"settings": asdict(settings), "steps": steps}
