"""Second landmark stage: each network estimate moved along the mask's rim onto its protocol feature.

The network places its 34 peaks on a 2 mm grid, often a few millimetres along the outline from
the feature the protocol names, and sometimes two neighbours on one spot. This stage works on
the mask itself, at sub-voxel precision, on the rim of manubrium plus body seen from the front
(:class:`SternumOutline`: anticlockwise from the front, so protocol order is increasing
arclength). Each estimate is located on the rim and searched along it, within
``window_mm``, for what its protocol ``feature`` says:

- superolateral and inferolateral angles: the most convex point (:meth:`Rim.bend_mm`);
- lower end of the clavicular notch: where the concavity that starts at the superolateral angle
  ends (the next point of the rim's convex hull);
- costal notches: the rim's notches (most concave points, at least ``least_depth_mm`` deep)
  between the lower end of the clavicular notch and the inferolateral angle, matched to the
  side's costal notches in order, each near its estimate or near the other side's estimate's
  level (costal notches pair up across the midline), and placed at the middle of its deepest
  stretch (:meth:`_Refinement._notch_centre`); a notch without a match keeps its estimate;
- manubrium waist: the level where the manubrium is narrowest, both sides together, below
  costal notch 1 and short of the joint with the body (the middle of the near-narrowest stretch);
- intercostal margins: midway along the rim between their two refined notches;
- jugular notch, xiphisternal midpoint: where the rim between the two refined angles crosses
  the midline between them.

Each side is walked from the top down, each search starting ``gap_mm`` past the landmark refined
before it, and the notches are matched in order, so neighbours keep protocol order and never share
a spot (the first demo network's L03/L04 collapse). A search stays on the landmark's protocol
structure (manubrium or body, from the label map). The chosen rim positions are finally moved onto
the voxel surface at right angles to the rim. All of it happens in LPS millimetres, so any scan
direction gives the same points up to the voxelisation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree
from SternumSSMLib.anatomy import LandmarkProtocol, label_scheme
from SternumSSMLib.geometry import Volume

from .landmark_preprocessing import MASK_STRUCTURES, sternum_mask
from .surface import SternumOutline, SurfaceIndex, crop_around

SIDE_SIGN = {"right": -1.0, "left": 1.0}  # along the frontal frame's patient-left axis
WALK = {"right": 1, "left": -1}  # top down: the right side with the rim's arclength, the left side against it
# Rim points this close (mm) to a straight line count as on it: a margin that runs within one voxel
# column is straight, and ties on it are broken by position, not by floating-point noise.
ON_LINE_MM = 0.05
UNSET = -1


@dataclass(frozen=True, eq=False)
class Rim:
    """The rim of one manubrium plus body mask, with each rim sample's frontal position and structure.

    ``frontal_mm`` (M, 2) holds each sample of ``outline`` in the frontal frame (patient left,
    superior; mm from the mask's centroid); ``structure`` (M,) the label value of the mask voxel
    nearest to it.
    """

    outline: SternumOutline
    surface: SurfaceIndex
    frontal_mm: np.ndarray
    structure: np.ndarray

    @classmethod
    def from_labels(cls, labels: Volume, margin_mm: float = 10.0) -> Rim:
        """The rim of the manubrium and body in ``labels`` (the extension's label values, any direction)."""
        union = sternum_mask(labels)
        array, geometry = crop_around(labels.array, labels.geometry, union, margin_mm)
        mask, _ = crop_around(union, labels.geometry, union, margin_mm)
        surface = SurfaceIndex.from_mask(mask, geometry, margin_mm)
        outline = SternumOutline.from_mask(mask, geometry, surface)
        inside_kji = np.argwhere(mask)
        voxels_lps = geometry.index_to_lps(inside_kji[:, ::-1].astype(float))
        nearest = cKDTree(voxels_lps).query(outline.points_lps)[1]
        return cls(
            outline=outline,
            surface=surface,
            frontal_mm=(outline.points_lps - outline.centre_lps) @ outline.frame_lps[:2].T,
            structure=array[tuple(inside_kji[nearest].T)],
        )

    @property
    def count(self) -> int:
        return len(self.frontal_mm)

    @property
    def step_mm(self) -> float:
        return self.outline.length_mm / self.count

    def samples_of(self, points_lps: np.ndarray) -> np.ndarray:
        """The nearest rim sample (index) to each of (N, 3) finite LPS points."""
        along, _ = self.outline.locate(points_lps)
        return np.rint(along / self.step_mm).astype(int) % self.count

    def bend_mm(self, scale_mm: float) -> np.ndarray:
        """How far each rim sample lies inside the chord between the samples ``scale_mm`` before and after it:
        positive in a notch (concave), negative at a corner (convex)."""
        reach = max(1, round(scale_mm / self.step_mm))
        before = np.roll(self.frontal_mm, reach, axis=0)
        chord = np.roll(self.frontal_mm, -reach, axis=0) - before
        offset = self.frontal_mm - before
        # Anticlockwise in (left, superior), so the inside is to the left of the direction of travel.
        cross = chord[:, 0] * offset[:, 1] - chord[:, 1] * offset[:, 0]
        return cross / np.maximum(np.linalg.norm(chord, axis=1), 1e-9)

    def past(self, samples: np.ndarray, start: int, direction: int) -> np.ndarray:
        """How many samples each of ``samples`` lies past ``start`` walking in ``direction`` (0..count-1)."""
        return ((samples - start) * direction) % self.count

    def surface_points(self, samples: np.ndarray) -> np.ndarray:
        """LPS points on the voxel surface at rim ``samples`` (indices), moved at right angles to the rim."""
        along = self.outline.arclength_mm[samples]
        return self.surface.nearest_surface_points(
            self.outline.points_at(along), fixed_directions=self.outline.tangents_at(along)
        )


@dataclass(frozen=True)
class RefinementSettings:
    """Lengths (mm) of the rim refinement; see the module docstring."""

    window_mm: float = 8.0
    scale_mm: float = 5.0
    gap_mm: float = 3.0
    least_depth_mm: float = 0.3


def refine_landmarks(
    estimates_lps: np.ndarray, rim: Rim, protocol: LandmarkProtocol, settings: RefinementSettings | None = None
) -> np.ndarray:
    """Refined LPS positions (N, 3) of the protocol's N landmarks from (N, 3) LPS estimates in protocol order.

    NaN estimates stay NaN; their neighbours are searched as if they were absent.
    """
    return _Refinement(rim, protocol, settings or RefinementSettings()).run(np.asarray(estimates_lps, dtype=float))


class _Refinement:
    """One case's search: rim samples chosen per landmark, side by side, then the in-between ones."""

    def __init__(self, rim: Rim, protocol: LandmarkProtocol, settings: RefinementSettings) -> None:
        self.rim, self.protocol, self.settings = rim, protocol, settings
        self.bend = rim.bend_mm(settings.scale_mm)
        self.reach = max(1, round(settings.window_mm / rim.step_mm))
        self.gap = max(1, round(settings.gap_mm / rim.step_mm))
        scheme = label_scheme()
        self.structure = [scheme.by_name(landmark.structure).value for landmark in protocol.landmarks]
        self.manubrium = scheme.by_name(MASK_STRUCTURES[0]).value

    def run(self, estimates_lps: np.ndarray) -> np.ndarray:
        defined = np.all(np.isfinite(estimates_lps), axis=1)
        located = np.full(len(estimates_lps), UNSET)
        located[defined] = self.rim.samples_of(estimates_lps[defined])
        chosen = located.copy()
        features = [landmark.feature for landmark in self.protocol.landmarks]
        for side in WALK:
            rows = [n for n, landmark in enumerate(self.protocol.landmarks) if landmark.side == side and defined[n]]
            self._walk_down(rows, side, located, chosen)
        self._place_waists(chosen, [n for n, feature in enumerate(features) if feature == "manubrium_waist"])
        last = len(features) - 1
        for n, feature in enumerate(features):
            before, after = chosen[n - 1] if n else chosen[last], chosen[n + 1] if n < last else chosen[0]
            if not defined[n] or UNSET in (before, after):
                continue
            if feature.startswith("intercostal_margin_"):
                chosen[n] = (before + (after - before) % self.rim.count // 2) % self.rim.count
            elif self.protocol.landmarks[n].side == "midline":
                chosen[n] = self._midline_crossing(before, after)
        refined = np.full_like(estimates_lps, np.nan)
        refined[defined] = self.rim.surface_points(chosen[defined])
        return refined

    def _walk_down(self, rows: list[int], side: str, located: np.ndarray, chosen: np.ndarray) -> None:
        """Choose the samples of one side's angles, clavicular notch end and costal notches (``rows`` in
        protocol order); intercostal margins and the waist are placed from their neighbours afterwards."""
        direction = WALK[side]
        features = [self.protocol.landmarks[n].feature for n in rows[::direction]]
        rows = rows[::direction]  # top down
        notches = [n for n, feature in zip(rows, features, strict=True) if feature.startswith("costal_notch_")]
        corners = [n for n, feature in zip(rows, features, strict=True) if n not in notches
                   and not feature.startswith("intercostal_margin_") and feature != "manubrium_waist"]
        previous = UNSET
        for n in corners:
            chosen[n] = previous = self._search(n, located, previous, direction)
        above = [chosen[n] for n in corners if notches and rows.index(n) < rows.index(notches[0])]
        below = [chosen[n] for n in corners if notches and rows.index(n) > rows.index(notches[-1])]
        if above and below:
            chosen[notches] = self._notches_in_order(notches, located, above[-1], below[0], direction)
            return
        previous = above[-1] if above else UNSET  # a truncated scan: no angle to match the notches between
        for n in notches:
            chosen[n] = previous = self._search(n, located, previous, direction)

    def _search(self, n: int, located: np.ndarray, previous: int, direction: int) -> int:
        """The rim sample for landmark ``n`` walked to in ``direction`` past ``previous``."""
        feature, structure = self.protocol.landmarks[n].feature, self.structure[n]
        samples = self._window(located[n], previous, direction, structure)
        if feature.startswith("costal_notch_"):
            mirror = self._mirror(n)
            if mirror != UNSET and located[mirror] != UNSET:
                level = self.rim.frontal_mm[located[mirror], 1]
                across = self._at_level(level, self.protocol.landmarks[n].side, structure)
                samples = np.union1d(samples, self._window(across, previous, direction, structure))
            best = samples[np.argmax(self.bend[samples])]
            if self.bend[best] >= self.settings.least_depth_mm:
                return self._notch_centre(int(best))
            past = self.rim.past(samples, located[n], 1)
            return int(samples[np.argmin(np.minimum(past, self.rim.count - past))])  # nearest to the estimate
        if feature == "clavicular_notch_inferior" and previous != UNSET:
            return self._hull_vertex_below(previous, samples, direction, self.protocol.landmarks[n].side)
        return int(samples[np.argmin(self.bend[samples])])

    def _notches_in_order(
        self, rows: list[int], located: np.ndarray, first: int, last: int, direction: int
    ) -> list[int]:
        """Rim samples for the costal notches ``rows`` (top down) between the samples ``first`` and ``last``.

        Notches and the rim's candidate notches there are matched in order, each notch to one
        candidate or to none, for the least summed cost (:func:`_match_in_order`): a candidate costs
        its distance along the rim from the notch's estimate (or from the other side's estimate's
        level), less ``scale_mm`` per mm of depth; none costs ``window_mm`` and keeps the estimate.
        A global match keeps one notch taken for its neighbour from pushing every notch below it
        one place down.
        """
        candidates = self._notch_candidates(first, last, direction)
        cost = np.full((len(rows), len(candidates)), np.inf)
        for k, n in enumerate(rows):
            references = [located[n]]
            mirror = self._mirror(n)
            if mirror != UNSET and located[mirror] != UNSET:
                level = self.rim.frontal_mm[located[mirror], 1]
                references.append(self._at_level(level, self.protocol.landmarks[n].side, self.structure[n]))
            for c, candidate in enumerate(candidates):
                if self.rim.structure[candidate] == self.structure[n]:
                    distance = min(self._arc_mm(candidate, reference) for reference in references)
                    cost[k, c] = distance - self.settings.scale_mm * self.bend[candidate]
        matched = _match_in_order(cost, self.settings.window_mm)
        return [int(located[n]) if c is None else self._notch_centre(int(candidates[c]))
                for n, c in zip(rows, matched, strict=True)]

    def _notch_centre(self, deepest: int) -> int:
        """The middle of the notch whose deepest sample is ``deepest``: the bend-weighted mean of the
        contiguous samples on its structure at least half as deep, within the window.

        A notch's bend has a broad, flat top, and which of its samples is deepest depends on the
        voxel steps, so on the scan's direction; the weighted middle of the top does not."""
        rim, bend = self.rim, self.bend
        floor = 0.5 * bend[deepest]
        offsets = [0]
        for direction in (1, -1):
            for step in range(1, self.reach + 1):
                sample = (deepest + direction * step) % rim.count
                if bend[sample] < floor or rim.structure[sample] != rim.structure[deepest]:
                    break
                offsets.append(direction * step)
        offsets = np.array(offsets)
        weights = bend[(deepest + offsets) % rim.count]
        return int(deepest + round(float(np.sum(weights * offsets) / np.sum(weights)))) % rim.count

    def _notch_candidates(self, first: int, last: int, direction: int) -> np.ndarray:
        """Local maxima of the bend strictly between ``first`` and ``last`` (gap kept), at least
        ``least_depth_mm`` deep and the gap apart (deepest first), in walking order."""
        rim, bend, count = self.rim, self.bend, self.rim.count
        span = int(rim.past(np.array(last), first, direction))
        samples = (first + direction * np.arange(self.gap, max(span - self.gap + 1, self.gap))) % count
        peak = (bend[samples] >= bend[(samples - 1) % count]) & (bend[samples] >= bend[(samples + 1) % count])
        deep = samples[peak & (bend[samples] >= self.settings.least_depth_mm)]
        kept: list[int] = []
        for candidate in deep[np.argsort(-bend[deep], kind="stable")]:
            if all(self._arc_mm(candidate, other) >= self.settings.gap_mm for other in kept):
                kept.append(int(candidate))
        return np.array(sorted(kept, key=lambda sample: rim.past(np.array(sample), first, direction)), dtype=int)

    def _arc_mm(self, first: int, second: int) -> float:
        """The shorter way along the rim between two samples, in mm."""
        steps = int(self.rim.past(np.array(second), first, 1))
        return min(steps, self.rim.count - steps) * self.rim.step_mm

    def _window(self, centre: int, previous: int, direction: int, structure: int) -> np.ndarray:
        """Rim samples within the window of ``centre``, at least the gap past ``previous``, on ``structure``."""
        rim, half = self.rim, self.rim.count // 2
        if previous != UNSET and not self.gap <= rim.past(np.array(centre), previous, direction) <= half:
            centre = previous + direction * (self.gap + self.reach)  # the estimate lies before its predecessor
        samples = np.arange(centre - self.reach, centre + self.reach + 1) % rim.count
        if previous != UNSET:
            past = rim.past(samples, previous, direction)
            samples = samples[(past >= self.gap) & (past <= half)]
        own = samples[rim.structure[samples] == structure]
        return own if len(own) else samples

    def _mirror(self, n: int) -> int:
        landmark = self.protocol.landmarks[n]
        for m, other in enumerate(self.protocol.landmarks):
            if other.feature == landmark.feature and other.side != landmark.side:
                return m
        return UNSET

    def _at_level(self, level_mm: float, side: str, structure: int) -> int:
        """The rim sample on ``side`` and ``structure`` whose superior coordinate is nearest ``level_mm``."""
        frontal = self.rim.frontal_mm
        candidates = np.flatnonzero((SIDE_SIGN[side] * frontal[:, 0] > 0) & (self.rim.structure == structure))
        if not len(candidates):
            candidates = np.arange(self.rim.count)
        return int(candidates[np.argmin(np.abs(frontal[candidates, 1] - level_mm))])

    def _hull_vertex_below(self, corner: int, samples: np.ndarray, direction: int, side: str) -> int:
        """The first of ``samples`` (walking down from ``corner``) on the line from ``corner`` that touches
        the rim below from outside: the far end of the concavity that starts at ``corner``."""
        samples = samples[np.argsort(self.rim.past(samples, corner, direction))]
        offset = self.rim.frontal_mm[samples] - self.rim.frontal_mm[corner]
        best = int(np.argmax(np.arctan2(SIDE_SIGN[side] * offset[:, 0], -offset[:, 1])))
        line = offset[best] / max(float(np.linalg.norm(offset[best])), 1e-9)
        outside = SIDE_SIGN[side] * (offset[:, 1] * line[0] - offset[:, 0] * line[1])  # beyond the line, outwards
        return int(samples[np.flatnonzero(outside >= -ON_LINE_MM)[0]])

    def _place_waists(self, chosen: np.ndarray, waists: list[int]) -> None:
        """Both waists at the level where the manubrium is narrowest between costal notch 1 and the joint."""
        margins = {}
        for n in waists:
            direction = WALK[self.protocol.landmarks[n].side]
            above = chosen[n - direction]  # costal notch 1
            if chosen[n] != UNSET and above != UNSET:
                margins[n] = self._margin_below(above, direction)
        if not margins:
            return
        level = _narrowest_level([self.rim.frontal_mm[margin] for margin in margins.values()], self.rim.step_mm)
        for n, margin in margins.items():
            chosen[n] = margin[np.argmin(np.abs(self.rim.frontal_mm[margin, 1] - level))]

    def _margin_below(self, start: int, direction: int) -> np.ndarray:
        """Rim samples from the gap past ``start`` down the manubrium, stopping ``scale_mm`` short of the body."""
        samples = (start + direction * np.arange(self.gap, self.rim.count // 2)) % self.rim.count
        leaving = np.flatnonzero(self.rim.structure[samples] != self.manubrium)
        end = leaving[0] if len(leaving) else len(samples)
        margin = samples[: end - round(self.settings.scale_mm / self.rim.step_mm)]
        return margin if len(margin) else samples[:1]

    def _midline_crossing(self, before: int, after: int) -> int:
        """The sample on the rim from ``before`` to ``after`` (anticlockwise) whose left coordinate is midway."""
        samples = (before + np.arange(1, (after - before) % self.rim.count)) % self.rim.count
        if not len(samples):
            return before
        target = 0.5 * (self.rim.frontal_mm[before, 0] + self.rim.frontal_mm[after, 0])
        return int(samples[np.argmin(np.abs(self.rim.frontal_mm[samples, 0] - target))])


# Summed width (mm, both margins) within which a level counts as narrowest: a voxel's worth of steps.
WAIST_TOLERANCE_MM = 1.0


def _narrowest_level(margins_mm: list[np.ndarray], step_mm: float) -> float:
    """The superior coordinate where the margins ((M, 2) frontal points each, one per side) are
    narrowest together: both sides' widths add up, so each side's voxel steps average out.

    The level is the middle of the stretch around the least width that is within
    ``WAIST_TOLERANCE_MM`` of it, each level weighted by how far below that bound it lies, not the
    lowest sample: near the waist the manubrium narrows and widens by less than a voxel, so the voxel
    steps, which differ with the scan's direction, would decide which sample of that flat stretch is
    lowest, and a corner fitted to the profile swings along it when the profile is rounded."""
    levels = [margin[:, 1] for margin in margins_mm]
    grid = np.arange(max(level.min() for level in levels), min(level.max() for level in levels), step_mm)
    if len(grid) < 2:
        grid = np.sort(np.concatenate(levels))
    width = np.zeros(len(grid))
    for margin in margins_mm:
        order = np.argsort(margin[:, 1])
        width += np.interp(grid, margin[order, 1], np.abs(margin[order, 0]))
    bound = width.min() + WAIST_TOLERANCE_MM
    narrowest = int(np.argmin(width))
    first, last = narrowest, narrowest
    while first > 0 and width[first - 1] <= bound:
        first -= 1
    while last < len(grid) - 1 and width[last + 1] <= bound:
        last += 1
    weights = bound - width[first: last + 1]
    return float(np.sum(weights * grid[first: last + 1]) / np.sum(weights))


def _match_in_order(cost: np.ndarray, skipped: float) -> list[int | None]:
    """For each row of ``cost`` (items x candidates, both in order), its candidate or None: the
    order-keeping match of least summed cost, where an item left without a candidate costs ``skipped``."""
    items, candidates = cost.shape
    total = np.zeros((items + 1, candidates + 1))
    total[1:, 0] = skipped * np.arange(1, items + 1)
    for k in range(1, items + 1):
        for c in range(1, candidates + 1):
            total[k, c] = min(total[k, c - 1], total[k - 1, c - 1] + cost[k - 1, c - 1], total[k - 1, c] + skipped)
    matched: list[int | None] = [None] * items
    k, c = items, candidates
    while k > 0:
        if c > 0 and total[k, c] == total[k, c - 1]:
            c -= 1
        elif c > 0 and total[k, c] == total[k - 1, c - 1] + cost[k - 1, c - 1]:
            matched[k - 1] = c - 1
            k, c = k - 1, c - 1
        else:
            k -= 1
    return matched
