"""Landmark QA that is cheap enough to run on every drag event, and snapping to the bone surface.

Build a :class:`LandmarkQAContext` once per segmentation (distance maps, surface points and
the outline; a fraction of a second for a 2 mm grid), then call :meth:`LandmarkQAContext.evaluate`
whenever a point moves (about a millisecond for 34 points). No MRML here: points come
and go as :class:`PointSet` in LPS or RAS, converted internally.

Flags per placed landmark, each with a sentence an annotator can act on:

- ``surface``: farther than ``surface_tolerance_mm`` from the surface of manubrium plus body.
- ``structure``: on that surface but not on its own protocol structure (a manubrium landmark
  placed on the body).
- ``outline``: on the surface but farther than ``outline_tolerance_mm`` from the rim (the
  outline at mid-thickness, where the protocol's landmarks lie), e.g. on the anterior face.
- ``duplicate``: closer than ``duplicate_distance_mm`` to another placed landmark.
- ``order``: out of the protocol's anticlockwise order around the outline.

Order, as defined here: every placed landmark gets a position along the rim (the arclength
of the nearest rim point, increasing anticlockwise as seen from the front). Walking the
protocol landmarks in protocol order, skipping unplaced ones and ones off the outline
(whose place along it means nothing; they carry the ``surface`` or ``outline`` flag),
landmark i must lie on the anticlockwise arc from its previous to its next neighbour
(with ``order_slack_mm`` of slack for ties). A landmark dragged past a neighbour fails
this test and its neighbours still pass, because their arcs reach to where it went; two
swapped neighbours both fail. Fewer than three such landmarks have no order to check.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from SternumSSMLib.anatomy import LandmarkProtocol, default_protocol, label_scheme
from SternumSSMLib.geometry import CoordinateSystem, ImageGeometry, PointSet, Volume, convert_points
from SternumSSMLib.qa import QAFlag

from .surface import SternumOutline, SurfaceIndex, crop_around

UNION = "union"
# Short segment names accepted wherever a segment is chosen, besides "union" and the label names.
SEGMENT_ALIASES = {"manubrium": "Manubrium", "body": "Sternal_body"}


@dataclass(frozen=True)
class QASettings:
    """Tolerances of the landmark QA, in mm."""

    surface_tolerance_mm: float = 2.0
    duplicate_distance_mm: float = 3.0
    outline_tolerance_mm: float = 4.0
    order_slack_mm: float = 1.0

    def validate(self) -> None:
        values = {name: getattr(self, name) for name in self.__dataclass_fields__}
        bad = [f"{name}={value}" for name, value in values.items() if not (np.isfinite(value) and value >= 0)]
        if bad:
            raise ValueError(f"QA tolerances must be finite and >= 0 mm: {', '.join(bad)}.")


@dataclass(frozen=True)
class LandmarkQA:
    """QA of one landmark. Distances in mm, NaN when the landmark is not placed.

    ``signed_distance_mm`` is to the surface of manubrium plus body (negative inside the bone),
    ``distance_mm`` its absolute value, ``structure_distance_mm`` to the surface of the
    landmark's own protocol structure, ``outline_distance_mm`` to the rim and
    ``outline_position_mm`` the position along the rim (anticlockwise from the front).
    """

    id: str
    placed: bool
    distance_mm: float
    signed_distance_mm: float
    structure_distance_mm: float
    outline_distance_mm: float
    outline_position_mm: float
    flags: tuple[QAFlag, ...] = ()

    @property
    def flagged(self) -> bool:
        return bool(self.flags)

    @property
    def messages(self) -> list[str]:
        return [flag.message for flag in self.flags]


@dataclass(frozen=True)
class LandmarkQAReport:
    """QA of all points of a point set, in the point set's order."""

    landmarks: tuple[LandmarkQA, ...]

    def __getitem__(self, landmark_id: str) -> LandmarkQA:
        for landmark in self.landmarks:
            if landmark.id == landmark_id:
                return landmark
        raise KeyError(f"No landmark {landmark_id!r} in this QA report.")

    @property
    def placed_count(self) -> int:
        return sum(landmark.placed for landmark in self.landmarks)

    @property
    def flagged(self) -> tuple[LandmarkQA, ...]:
        return tuple(landmark for landmark in self.landmarks if landmark.flagged)

    def flag_codes(self, landmark_id: str) -> set[str]:
        return {flag.code for flag in self[landmark_id].flags}

    @property
    def summary(self) -> str:
        """One line, e.g. "32 of 34 landmarks placed; 2 flagged: L09 (order), L10 (surface, duplicate)"."""
        head = f"{self.placed_count} of {len(self.landmarks)} landmarks placed"
        if not self.flagged:
            return f"{head}; no flags"
        details = ", ".join(
            f"{landmark.id} ({', '.join(dict.fromkeys(flag.code for flag in landmark.flags))})"
            for landmark in self.flagged
        )
        return f"{head}; {len(self.flagged)} flagged: {details}"


@dataclass(frozen=True, eq=False)
class LandmarkQAContext:
    """Everything the QA needs from one segmentation, built once: surfaces and the outline.

    ``surfaces`` maps "union" (manubrium plus body) and, when built from a label map, each
    protocol structure ("Manubrium", "Sternal_body") to its :class:`SurfaceIndex`. The outline
    is that of the union. Use :meth:`from_labels` or :meth:`from_mask`.
    """

    surfaces: dict[str, SurfaceIndex]
    outline: SternumOutline
    protocol: LandmarkProtocol = field(default_factory=default_protocol)
    settings: QASettings = field(default_factory=QASettings)

    def __post_init__(self) -> None:
        self.settings.validate()
        if UNION not in self.surfaces:
            raise ValueError(f"A QA context needs the {UNION!r} surface; it has {sorted(self.surfaces)}.")

    @classmethod
    def from_labels(
        cls,
        labels: Volume,
        protocol: LandmarkProtocol | None = None,
        settings: QASettings | None = None,
        margin_mm: float = 10.0,
        bridge_mm: float = 3.0,
    ) -> LandmarkQAContext:
        """From a label map with the extension's label values (1 manubrium, 2 sternal body, ...).

        ``margin_mm``: how far around the bone distances are interpolated (farther points get
        the distance to the nearest surface point). ``bridge_mm``: gaps up to twice this wide
        (a joint space between manubrium and body) are bridged when tracing the outline.
        """
        protocol = protocol or default_protocol()
        scheme = label_scheme()
        values = {name: scheme.by_name(name).value for name in protocol.structures}
        union = np.isin(labels.array, list(values.values()))
        if not union.any():
            raise ValueError(f"The label map has none of {sorted(values)} (labels {sorted(values.values())}).")
        # Everything after this works on the bone's neighbourhood only.
        array, geometry = crop_around(labels.array, labels.geometry, union, margin_mm)
        masks = {name: array == value for name, value in values.items()}
        for name, mask in masks.items():
            if not mask.any():
                raise ValueError(f"The label map has no {name} voxels (label {values[name]}).")
        union = np.logical_or.reduce(list(masks.values()))
        return cls._build({UNION: union, **masks}, geometry, protocol, settings, margin_mm, bridge_mm)

    @classmethod
    def from_mask(
        cls,
        mask: np.ndarray,
        geometry: ImageGeometry,
        protocol: LandmarkProtocol | None = None,
        settings: QASettings | None = None,
        margin_mm: float = 10.0,
        bridge_mm: float = 3.0,
    ) -> LandmarkQAContext:
        """From one binary mask ([k, j, i] on ``geometry``) of manubrium plus body; no structure checks."""
        return cls._build({UNION: np.asarray(mask, dtype=bool)}, geometry, protocol, settings, margin_mm, bridge_mm)

    @classmethod
    def _build(cls, masks, geometry, protocol, settings, margin_mm, bridge_mm) -> LandmarkQAContext:
        settings = settings or QASettings()
        settings.validate()  # before the slow part
        surfaces = {name: SurfaceIndex.from_mask(mask, geometry, margin_mm) for name, mask in masks.items()}
        outline = SternumOutline.from_mask(masks[UNION], geometry, surfaces[UNION], bridge_mm=bridge_mm)
        return cls(surfaces=surfaces, outline=outline, protocol=protocol or default_protocol(), settings=settings)

    def surface(self, segment: str = UNION) -> SurfaceIndex:
        """The surface of ``segment``: "union", "manubrium", "body" or a label name such as "Manubrium"."""
        key = SEGMENT_ALIASES.get(segment, segment)
        if key not in self.surfaces:
            raise KeyError(f"No surface for segment {segment!r}; this context has {sorted(self.surfaces)}.")
        return self.surfaces[key]

    def evaluate(self, points: PointSet) -> LandmarkQAReport:
        """QA of every point of ``points`` (LPS or RAS; NaN rows are unplaced and get no flags).

        Points are matched to the protocol by name; names outside the protocol get the surface
        and duplicate checks only.
        """
        positions = points.to("LPS").positions
        placed = points.defined
        protocol_index = {landmark_id: n for n, landmark_id in enumerate(self.protocol.ids)}
        rows = [protocol_index.get(name) for name in points.names]
        structures = [None if row is None else self.protocol.landmarks[row].structure for row in rows]
        structures = [s if s in self.surfaces else None for s in structures]
        signed = self.surface(UNION).signed_distance(positions)
        structure_distance = self._structure_distances(structures, positions)
        along, to_outline = self.outline.locate(positions)
        flags: list[list[QAFlag]] = [[] for _ in points.names]
        self._flag_distances(points.names, signed, structures, structure_distance, to_outline, flags)
        self._flag_duplicates(points.names, positions, placed, flags)
        in_protocol_order = [n for _, n in sorted((row, n) for n, row in enumerate(rows) if row is not None)]
        # A point off the outline has no meaningful place along it; it is flagged for that instead.
        on_outline = placed & (to_outline <= self.settings.outline_tolerance_mm)
        self._flag_order(points.names, along, [n for n in in_protocol_order if on_outline[n]], flags)
        return LandmarkQAReport(
            tuple(
                LandmarkQA(
                    id=name,
                    placed=bool(placed[n]),
                    distance_mm=float(abs(signed[n])),
                    signed_distance_mm=float(signed[n]),
                    structure_distance_mm=float(structure_distance[n]),
                    outline_distance_mm=float(to_outline[n]),
                    outline_position_mm=float(along[n]),
                    flags=tuple(flags[n]),
                )
                for n, name in enumerate(points.names)
            )
        )

    def _structure_distances(self, structures: list[str | None], positions_lps: np.ndarray) -> np.ndarray:
        distances = np.full(len(structures), np.nan)
        for structure in {s for s in structures if s is not None}:
            rows = [n for n, s in enumerate(structures) if s == structure]
            distances[rows] = np.abs(self.surfaces[structure].signed_distance(positions_lps[rows]))
        return distances

    def _flag_distances(self, names, signed, structures, structure_distance, to_outline, flags) -> None:
        tolerance = self.settings.surface_tolerance_mm
        for n in np.flatnonzero(np.isfinite(signed)):
            name, distance = names[n], abs(signed[n])
            if distance > tolerance:
                side = "inside the bone" if signed[n] < 0 else "outside the bone"
                flags[n].append(
                    QAFlag(
                        "surface",
                        "warning",
                        f"{name} is {distance:.1f} mm {side}, off the manubrium/body surface "
                        f"(tolerance {tolerance:.1f} mm).",
                    )
                )
                continue
            if structure_distance[n] > tolerance:
                flags[n].append(
                    QAFlag(
                        "structure",
                        "warning",
                        f"{name} belongs on the {structures[n].replace('_', ' ').lower()} but is "
                        f"{structure_distance[n]:.1f} mm from its surface.",
                        segment=structures[n],
                    )
                )
            if to_outline[n] > self.settings.outline_tolerance_mm:
                flags[n].append(
                    QAFlag(
                        "outline",
                        "warning",
                        f"{name} is on the bone but {to_outline[n]:.1f} mm from its outline at mid-thickness "
                        f"(tolerance {self.settings.outline_tolerance_mm:.1f} mm).",
                    )
                )

    def _flag_duplicates(self, names, positions_lps, placed, flags) -> None:
        rows = np.flatnonzero(placed)
        if len(rows) < 2:
            return
        located = positions_lps[rows]
        distances = np.linalg.norm(located[:, None, :] - located[None, :, :], axis=2)
        np.fill_diagonal(distances, np.inf)
        for a, b in zip(*np.nonzero(distances < self.settings.duplicate_distance_mm), strict=True):
            first, second = rows[a], rows[b]
            flags[first].append(
                QAFlag(
                    "duplicate",
                    "warning",
                    f"{names[first]} is {distances[a, b]:.1f} mm from {names[second]}: placed twice?",
                )
            )

    def _flag_order(self, names, along, rows: list[int], flags) -> None:
        """Flag rows (placed, in protocol order) that lie outside the arc between their neighbours."""
        if len(rows) < 3:
            return
        here = along[rows]
        previous, following = np.roll(here, 1), np.roll(here, -1)
        slack = self.settings.order_slack_mm
        span = self.outline.forward_arc(previous, following)
        offset = np.mod(here - previous + slack, self.outline.length_mm) - slack
        for k in np.flatnonzero(offset > span + slack):
            n = rows[k]
            before, after = _neighbours_along(along, [m for m in rows if m != n], along[n])
            flags[n].append(
                QAFlag(
                    "order",
                    "warning",
                    f"{names[n]} lies between {names[before]} and {names[after]} along the outline; "
                    f"the protocol puts it between {names[rows[k - 1]]} and {names[rows[(k + 1) % len(rows)]]}.",
                )
            )


def _neighbours_along(along: np.ndarray, rows: list[int], position: float) -> tuple[int, int]:
    """The rows just before and just after ``position`` going anticlockwise around the outline."""
    ranked = sorted(rows, key=lambda m: along[m])
    positions = [along[m] for m in ranked]
    index = int(np.searchsorted(positions, position, side="right")) - 1
    return ranked[index], ranked[(index + 1) % len(ranked)]


def snap_to_surface(
    point: np.ndarray,
    context: LandmarkQAContext,
    *,
    coordinate_system: CoordinateSystem,
    segment: str = UNION,
) -> np.ndarray:
    """The nearest point on ``segment``'s surface to ``point`` (3 values), in the same coordinate system.

    ``segment``: "union" (manubrium plus body), "manubrium", "body" or a label name. Works on
    the segmentation's voxels, not on a rendered model: the result lies on the voxel surface
    to well within half a voxel. A NaN point comes back NaN.
    """
    point_lps = convert_points(np.asarray(point, dtype=float).reshape(1, 3), coordinate_system, "LPS")
    snapped = context.surface(segment).nearest_surface_points(point_lps)
    return convert_points(snapped, "LPS", coordinate_system)[0]
