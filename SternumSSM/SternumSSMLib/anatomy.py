"""The one definition of the anatomy: segment labels and the landmark protocol.

Every reader and writer in the extension takes label values, names, colours,
terminology and landmark ids from here. The data live in JSON files beside this
module so that a user can swap the landmark protocol without touching code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent / "data"
ANATOMY_FILE = DATA_DIR / "anatomy.json"
DEFAULT_PROTOCOL_FILE = DATA_DIR / "landmark_protocol.json"


@dataclass(frozen=True)
class Code:
    """A coded concept, e.g. SNOMED CT (scheme ``SCT``)."""

    scheme: str
    code: str
    meaning: str

    def slicer_string(self) -> str:
        return f"{self.scheme}^{self.code}^{self.meaning}"


@dataclass(frozen=True)
class SegmentClass:
    value: int
    name: str
    color: tuple[float, float, float]
    category: Code
    type: Code
    plausible_volume_ml: tuple[float, float]

    def slicer_terminology(self, terminology_context: str, anatomic_context: str) -> str:
        """Terminology entry in the string form Slicer stores in segment tags."""
        return "~".join(
            [
                terminology_context,
                self.category.slicer_string(),
                self.type.slicer_string(),
                "^^",
                anatomic_context,
                "^^",
                "^^",
            ]
        )


@dataclass(frozen=True)
class CartilageExpectations:
    expected_pieces_per_side: int
    max_left_right_volume_ratio: float


@dataclass(frozen=True)
class LabelScheme:
    classes: tuple[SegmentClass, ...]
    background_value: int
    terminology_context: str
    anatomic_context: str
    cartilage: CartilageExpectations

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.classes)

    @property
    def values(self) -> tuple[int, ...]:
        return tuple(c.value for c in self.classes)

    def by_name(self, name: str) -> SegmentClass:
        for segment_class in self.classes:
            if segment_class.name == name:
                return segment_class
        raise KeyError(f"Unknown segment name {name!r}; expected one of {', '.join(self.names)}.")

    def by_value(self, value: int) -> SegmentClass:
        for segment_class in self.classes:
            if segment_class.value == value:
                return segment_class
        raise KeyError(f"Unknown label value {value}; expected one of {self.values}.")

    def terminology(self, name: str) -> str:
        return self.by_name(name).slicer_terminology(self.terminology_context, self.anatomic_context)


@dataclass(frozen=True)
class Landmark:
    id: str
    name: str
    feature: str
    side: str
    structure: str
    description: str


@dataclass(frozen=True)
class LandmarkProtocol:
    name: str
    description: str
    structures: tuple[str, ...]
    landmarks: tuple[Landmark, ...]

    def __len__(self) -> int:
        return len(self.landmarks)

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(landmark.id for landmark in self.landmarks)

    def index(self, landmark_id: str) -> int:
        try:
            return self.ids.index(landmark_id)
        except ValueError:
            raise KeyError(
                f"Landmark {landmark_id!r} is not in protocol {self.name!r} ({self.ids[0]}..{self.ids[-1]})."
            ) from None


def _code(entry: dict) -> Code:
    return Code(scheme=entry["scheme"], code=entry["code"], meaning=entry["meaning"])


@lru_cache(maxsize=1)
def label_scheme() -> LabelScheme:
    """The segmentation labels (values 1-4 plus background 0)."""
    data = json.loads(ANATOMY_FILE.read_text())
    category = _code(data["category"])
    classes = tuple(
        SegmentClass(
            value=int(entry["value"]),
            name=entry["name"],
            color=tuple(float(c) for c in entry["color"]),
            category=category,
            type=_code(entry["type"]),
            plausible_volume_ml=tuple(float(v) for v in entry["plausible_volume_ml"]),
        )
        for entry in data["labels"]
    )
    return LabelScheme(
        classes=classes,
        background_value=int(data["background"]["value"]),
        terminology_context=data["terminology_context"],
        anatomic_context=data["anatomic_context"],
        cartilage=CartilageExpectations(
            expected_pieces_per_side=int(data["cartilage"]["expected_pieces_per_side"]),
            max_left_right_volume_ratio=float(data["cartilage"]["max_left_right_volume_ratio"]),
        ),
    )


def load_protocol(path: Path | str | None = None) -> LandmarkProtocol:
    """Read a landmark protocol file; the default is the 34-point sternum outline."""
    path = Path(path) if path is not None else DEFAULT_PROTOCOL_FILE
    try:
        data = json.loads(path.read_text())
        landmarks = tuple(
            Landmark(
                id=entry["id"],
                name=entry["name"],
                feature=entry.get("feature", ""),
                side=entry.get("side", ""),
                structure=entry["structure"],
                description=entry.get("description", ""),
            )
            for entry in data["landmarks"]
        )
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(
            f"Cannot read landmark protocol {path}: {error}. A protocol is a JSON file with a "
            "'landmarks' list of objects holding at least 'id', 'name' and 'structure'."
        ) from error
    ids = [landmark.id for landmark in landmarks]
    if not ids or len(set(ids)) != len(ids):
        raise ValueError(f"Landmark protocol {path} must list at least one landmark, each with a unique id.")
    return LandmarkProtocol(
        name=data.get("name", path.stem),
        description=data.get("description", ""),
        structures=tuple(data.get("structures", sorted({lm.structure for lm in landmarks}))),
        landmarks=landmarks,
    )


@lru_cache(maxsize=1)
def default_protocol() -> LandmarkProtocol:
    return load_protocol(DEFAULT_PROTOCOL_FILE)
