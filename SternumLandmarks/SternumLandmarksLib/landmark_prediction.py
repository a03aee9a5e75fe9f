"""Landmarks from a segmentation with a trained SpatialConfiguration-Net.

Each heatmap's argmax is refined below the voxel size by fitting a parabola to the
logarithm of the peak and its two neighbours along each axis (exact for a Gaussian peak).
Grid indices map to LPS through the network grid (origin, isotropic spacing, identity
direction); ``LandmarkPrediction.points("RAS")`` gives RAS.

Confidence, in [0, 1], is the product of two heatmap properties:
- height: the peak value over the peak of the landmark's target Gaussian (its learnt sigma);
- separation: 1 - (highest value farther than 3 sigma from the peak) / peak, low when the
  heatmap has a second mode, which is how the study's duplicate failures look along the
  repetitive sternal body.
Points below ``placed_above`` stay unplaced (NaN); points below ``confident_above`` are
placed but reported as low confidence. Nothing is dropped silently.

A second, geometric stage (:mod:`landmark_refinement`, on by default) then moves every peak
along the mask's rim onto its protocol feature at sub-voxel precision. Confidence and placement
stay the network's; duplicates are checked again on the refined points.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from SternumSSMLib.anatomy import default_protocol
from SternumSSMLib.geometry import CoordinateSystem, PointSet, Volume
from SternumSSMLib.sternum_check import require_sternum

from .landmark_calibration import read_calibration
from .landmark_preprocessing import NetworkGrid, prepare_case, sternum_mask
from .landmark_refinement import RefinementSettings, Rim, refine_landmarks
from .scn_config import SCNConfig

if TYPE_CHECKING:
    from .scn_model import HeatmapRenderer

# torch is imported where the network runs, not here: the module's panel builds LandmarkPrediction
# from the worker process's answer in a Slicer that may not have torch yet.

BUNDLED_LANDMARK_MODEL = Path(__file__).resolve().parent.parent / "Resources" / "Models" / "SternumLandmarksDemo"


def refine_peaks(heatmaps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, K, J, I) heatmaps to sub-voxel (k, j, i) peak positions (N, 3) and the peak values (N,)."""
    count = heatmaps.shape[0]
    flat = heatmaps.reshape(count, -1)
    best = flat.argmax(axis=1)
    peaks = flat[np.arange(count), best]
    indices = np.stack(np.unravel_index(best, heatmaps.shape[1:]), axis=1).astype(float)
    refined = indices.copy()
    for landmark in range(count):
        if peaks[landmark] <= 0:
            continue
        centre = indices[landmark].astype(int)
        for axis in range(3):
            if centre[axis] == 0 or centre[axis] == heatmaps.shape[axis + 1] - 1:
                continue
            values = []
            for step in (-1, 0, 1):
                position = centre.copy()
                position[axis] += step
                values.append(heatmaps[(landmark, *position)])
            low, mid, high = np.log(np.maximum(values, peaks[landmark] * 1e-6))
            curvature = low - 2 * mid + high
            if curvature < 0:
                refined[landmark, axis] += float(np.clip(0.5 * (low - high) / curvature, -0.5, 0.5))
    return refined, peaks


def peak_separation(heatmaps: np.ndarray, peaks_kji: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """1 - (max beyond ``radii`` voxels of each peak) / peak, clipped to [0, 1]."""
    grids = np.indices(heatmaps.shape[1:], dtype=np.float32)
    separation = np.zeros(len(heatmaps))
    for landmark, heatmap in enumerate(heatmaps):
        peak = heatmap.max()
        if peak <= 0:
            continue
        distance2 = sum((grids[axis] - peaks_kji[landmark, axis]) ** 2 for axis in range(3))
        outside = heatmap[distance2 > radii[landmark] ** 2]
        second = float(outside.max()) if outside.size else 0.0
        separation[landmark] = np.clip(1.0 - max(second, 0.0) / peak, 0.0, 1.0)
    return separation


def find_duplicates(points: np.ndarray, names: tuple[str, ...], distance_mm: float) -> list[tuple[str, str, float]]:
    """Pairs of defined points (any one coordinate system, mm) closer than ``distance_mm``."""
    pairs = []
    defined = np.flatnonzero(np.all(np.isfinite(points), axis=1))
    for position, first in enumerate(defined):
        for second in defined[position + 1 :]:
            distance = float(np.linalg.norm(points[first] - points[second]))
            if distance < distance_mm:
                pairs.append((names[first], names[second], distance))
    return pairs


@dataclass(frozen=True)
class LandmarkPrediction:
    """Predicted landmarks in protocol order, in LPS, with per-landmark confidence and flags."""

    landmarks_lps: PointSet
    confidence: np.ndarray
    placed: np.ndarray
    confident: np.ndarray
    duplicates: tuple[tuple[str, str, float], ...]
    record: dict = field(default_factory=dict)
    # Every heatmap's peak in LPS (sub-voxel, then rim-refined when that ran), unplaced ones included
    # (for evaluation, not for the user).
    peak_positions_lps: np.ndarray | None = None
    # The same peaks as the network alone placed them, before the rim refinement (None without it).
    first_stage_lps: np.ndarray | None = None

    def points(self, coordinate_system: CoordinateSystem = "LPS") -> PointSet:
        """The landmarks in ``coordinate_system``; unplaced ones are NaN rows."""
        return self.landmarks_lps.to(coordinate_system)

    @property
    def duplicate_ids(self) -> set[str]:
        return {name for pair in self.duplicates for name in pair[:2]}

    def flags(self) -> list[str]:
        """Human-readable problems: unplaced, low confidence, duplicates."""
        names = self.landmarks_lps.names
        messages = [f"{names[i]} not placed (confidence {self.confidence[i]:.2f}); place it by hand."
                    for i in np.flatnonzero(~self.placed)]
        messages += [f"{names[i]} low confidence ({self.confidence[i]:.2f}); check its position."
                     for i in np.flatnonzero(self.placed & ~self.confident)]
        messages += [f"{first} and {second} are {distance:.1f} mm apart: probably one anatomical point "
                     "predicted twice; move the wrong one." for first, second, distance in self.duplicates]
        return messages


ProgressCallback = Callable[[float, str], None]


class LandmarkPredictionCancelled(Exception):  # noqa: N818 - reads as what happened, like KeyboardInterrupt
    pass


class LandmarkModel:
    """A trained landmark model folder, loaded once and reused for many cases."""

    def __init__(self, folder: Path | str = BUNDLED_LANDMARK_MODEL, device: str = "auto") -> None:
        from SternumSSMLib.devices import resolve_device

        from .scn_model import load_model_folder

        self.folder = Path(folder)
        self.network, self.renderer, self.config, self.landmark_ids, self.record = load_model_folder(self.folder)
        # Thresholds calibrated on the model's validation cases replace its config's (landmark_calibration).
        self.calibration = read_calibration(self.folder)
        if self.calibration is not None:
            self.config = replace(
                self.config,
                placed_above=float(self.calibration["placed_above"]),
                confident_above=float(self.calibration["confident_above"]),
            )
        self.device = resolve_device(device)
        self.network.to(self.device)

    @property
    def reads_ct(self) -> bool:
        """Whether this model needs the CT next to the segmentation (a second input channel)."""
        return self.config.input_channels == 2

    def heatmaps(self, channels: np.ndarray) -> np.ndarray:
        """The network's (N, K, J, I) heatmaps for one case's [C, K, J, I] input channels on the network grid."""
        import torch

        with torch.no_grad():
            tensor = torch.from_numpy(np.ascontiguousarray(channels, np.float32))[None].to(self.device)
            return self.network(tensor)[0].cpu().numpy()

    def predict(
        self,
        labels: Volume,
        ct: Volume | None = None,
        progress: ProgressCallback | None = None,
        cancel: Callable[[], bool] | None = None,
        refine: bool = True,
    ) -> LandmarkPrediction:
        """Landmarks (LPS) for the manubrium and sternal body in ``labels`` (any orientation).

        With ``refine`` every peak is moved along the mask's rim onto its protocol feature
        (:func:`refine_along_rim`); without it the points are the network's alone.

        ``ct`` is the scan the labels were made on; models with ``reads_ct`` need it, others use it only
        to check that the labels show a sternum (:func:`require_sternum`; refused with one message if not).
        """
        started = time.perf_counter()
        report = progress or (lambda fraction, text: None)
        report(0.0, "Resampling the mask")
        # Bone that is not a sternum (a skull, a spine) is refused as such before any grid or size check;
        # an empty mask gets prepare_case's own message.
        if sternum_mask(labels).any():
            require_sternum(labels, ct, "No landmarks placed: they belong on a sternum; check the segmentation and CT.")
        case = prepare_case("input", labels, None, self.config, ct)
        if cancel is not None and cancel():
            raise LandmarkPredictionCancelled("Landmark placement cancelled.")
        report(0.2, "Running the landmark network")
        heatmaps = self.heatmaps(case.channels)
        if cancel is not None and cancel():
            raise LandmarkPredictionCancelled("Landmark placement cancelled.")
        report(0.8, "Reading the heatmaps")
        prediction = self.decode(heatmaps, case.grid)
        if refine:
            report(0.9, "Refining the landmarks along the rim")
            prediction = refine_along_rim(prediction, labels, self.config.duplicate_distance_mm)
        prediction.record["seconds"] = time.perf_counter() - started
        report(1.0, "Done")
        return prediction

    def decode(self, heatmaps: np.ndarray, grid: NetworkGrid) -> LandmarkPrediction:
        prediction = decode_heatmaps(heatmaps, grid, self.renderer, self.config, self.landmark_ids)
        prediction.record["model_folder"] = str(self.folder)
        return prediction


def decode_heatmaps(
    heatmaps: np.ndarray, grid: NetworkGrid, renderer: HeatmapRenderer, config: SCNConfig, landmark_ids: tuple[str, ...]
) -> LandmarkPrediction:
    """Heatmaps on ``grid`` to positions (LPS), confidence, placement and duplicate flags."""
    peaks_kji, peak_values = refine_peaks(heatmaps)
    expected = renderer.peak_heights().detach().numpy()
    height = np.clip(peak_values / expected, 0.0, 1.0)
    sigmas = renderer.sigmas.detach().numpy()
    confidence = height * peak_separation(heatmaps, peaks_kji, 3.0 * np.abs(sigmas))
    placed = confidence >= config.placed_above
    peak_positions = grid.index_to_lps(peaks_kji)
    positions = peak_positions.copy()
    positions[~placed] = np.nan
    landmarks = PointSet(names=landmark_ids, positions=positions, coordinate_system="LPS")
    duplicates = tuple(find_duplicates(positions, landmark_ids, config.duplicate_distance_mm))
    record = {
        "spacing_mm": config.spacing_mm,
        "grid_origin_lps": grid.origin_lps.tolist(),
        "grid_shape_kji": list(grid.shape_kji),
        "grid_direction_lps": grid.direction_lps.tolist(),
    }
    return LandmarkPrediction(
        landmarks_lps=landmarks,
        confidence=confidence,
        placed=placed,
        confident=confidence >= config.confident_above,
        duplicates=duplicates,
        record=record,
        peak_positions_lps=peak_positions,
    )


def refine_along_rim(
    prediction: LandmarkPrediction, labels: Volume, duplicate_distance_mm: float
) -> LandmarkPrediction:
    """``prediction`` with every peak moved along the rim of ``labels``' manubrium and body onto its
    protocol feature (:func:`refine_landmarks`). Confidence and placement stay the network's.

    A model whose landmarks are not the bundled protocol's is returned unchanged (its features are unknown).
    """
    protocol = default_protocol()
    names = prediction.landmarks_lps.names
    if names != protocol.ids:
        return prediction
    rim = Rim.from_labels(labels)
    settings = RefinementSettings(gap_mm=duplicate_distance_mm)
    peaks = refine_landmarks(prediction.peak_positions_lps, rim, protocol, settings)
    positions = peaks.copy()
    positions[~prediction.placed] = np.nan
    return replace(
        prediction,
        landmarks_lps=PointSet(names=names, positions=positions, coordinate_system="LPS"),
        duplicates=tuple(find_duplicates(positions, names, duplicate_distance_mm)),
        record=prediction.record | {"refinement": "rim"},
        peak_positions_lps=peaks,
        first_stage_lps=prediction.peak_positions_lps,
    )
