"""Confidence thresholds of a landmark model, chosen on its own validation cases after training.

Confidence (peak height x separation, see ``landmark_prediction``) depends on the grid, the learnt
sigmas and how far training got, so the thresholds in a config fit only the model they were set
for. At the end of ``train-landmarks`` every validation point's confidence and error are measured
and two thresholds are chosen from them:

- ``placed_above``: the lowest confidence from which on at least half of the validation points lie
  within ``OUTLIER_MM`` of the truth, so a placed point is more likely near its place than not.
  When no threshold gets there (an under-trained model), no point is placed: a point the model
  cannot place is better placed by hand than corrected from 9 cm away.
- ``confident_above``: the lowest confidence from which on at most ``CONFIDENT_OUTLIER_PERCENT``
  of the validation points lie beyond ``OUTLIER_MM`` (the study's O_10 rate); never below
  ``placed_above``.

They are written to ``calibration.json`` in the model folder together with the numbers they came
from. A model folder without that file (the bundled demo model, whose thresholds were set by hand
from its validation phantoms, see its README) uses the thresholds in its ``config.json``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from SternumSSMLib.atomic import write_text_atomic

CALIBRATION_FILE = "calibration.json"
OUTLIER_MM = 10.0
CONFIDENT_OUTLIER_PERCENT = 5.0
PLACED_WITHIN_SHARE = 0.5
# A heatmap without a positive peak has no position, whatever the validation cases say.
MIN_PLACED_ABOVE = 1e-6


@dataclass(frozen=True)
class Calibration:
    """Thresholds chosen on validation cases, and the evidence for them (written as ``calibration.json``)."""

    placed_above: float
    confident_above: float
    validation_cases: tuple[str, ...]
    validation_points: int
    validation_mean_ipe_mm: float
    within_outlier_percent: float
    placed_percent: float
    confident_percent: float
    confident_beyond_outlier_percent: float

    def to_dict(self) -> dict:
        return {
            "placed_above": self.placed_above,
            "confident_above": self.confident_above,
            "chosen_by": (
                f"placed_above: lowest confidence from which on at least {PLACED_WITHIN_SHARE:.0%} of the validation "
                f"points lie within {OUTLIER_MM:g} mm (1.0, nothing placed, when none does); confident_above: lowest "
                f"confidence from which on at most {CONFIDENT_OUTLIER_PERCENT:g} % lie beyond {OUTLIER_MM:g} mm"
            ),
            "validation_cases": list(self.validation_cases),
            "validation_points": self.validation_points,
            "validation_mean_ipe_mm": round(self.validation_mean_ipe_mm, 3),
            "validation_within_10mm_percent": round(self.within_outlier_percent, 1),
            "placed_percent": round(self.placed_percent, 1),
            "confident_percent": round(self.confident_percent, 1),
            "confident_beyond_10mm_percent": round(self.confident_beyond_outlier_percent, 1),
        }


def _lowest_threshold(confidence: np.ndarray, good: np.ndarray, required_share: float) -> float | None:
    """The lowest candidate t with share(good | confidence >= t) >= required_share, or None."""
    order = np.argsort(-confidence, kind="stable")
    ranked_confidence, ranked_good = confidence[order], good[order]
    share_from_top = np.cumsum(ranked_good) / np.arange(1, len(order) + 1)
    # A threshold is only meaningful at a point's own confidence, where the points at or above it change.
    last_of_value = np.append(ranked_confidence[1:] != ranked_confidence[:-1], True)
    meets = np.flatnonzero((share_from_top >= required_share) & last_of_value)
    return float(ranked_confidence[meets[-1]]) if len(meets) else None


def calibrate_thresholds(confidence: np.ndarray, errors_mm: np.ndarray, case_ids: list[str]) -> Calibration:
    """Thresholds from the validation points' confidence and IPE (same shape; NaN errors are ignored)."""
    confidence, errors = np.ravel(confidence).astype(float), np.ravel(errors_mm).astype(float)
    known = np.isfinite(errors)
    if not np.any(known):
        raise ValueError("No validation landmark has a ground truth position; thresholds cannot be calibrated.")
    confidence, errors = confidence[known], errors[known]
    within = errors <= OUTLIER_MM
    placed = _lowest_threshold(confidence, within, PLACED_WITHIN_SHARE)
    placed_above = 1.0 if placed is None else max(placed, MIN_PLACED_ABOVE)
    confident = _lowest_threshold(confidence, within, 1.0 - CONFIDENT_OUTLIER_PERCENT / 100.0)
    confident_above = max(1.0 if confident is None else confident, placed_above)
    is_confident = confidence >= confident_above
    return Calibration(
        placed_above=round(placed_above, 6),
        confident_above=round(confident_above, 6),
        validation_cases=tuple(case_ids),
        validation_points=len(errors),
        validation_mean_ipe_mm=float(np.mean(errors)),
        within_outlier_percent=100.0 * float(np.mean(within)),
        placed_percent=100.0 * float(np.mean(confidence >= placed_above)),
        confident_percent=100.0 * float(np.mean(is_confident)),
        confident_beyond_outlier_percent=100.0 * float(np.mean(~within[is_confident])) if np.any(is_confident) else 0.0,
    )


def write_calibration(folder: Path, calibration: Calibration) -> Path:
    return write_text_atomic(folder / CALIBRATION_FILE, json.dumps(calibration.to_dict(), indent=1) + "\n",
                             overwrite=True)  # fmt: skip


def read_calibration(folder: Path) -> dict | None:
    """The model folder's ``calibration.json``, or None when its thresholds come from its config."""
    path = Path(folder) / CALIBRATION_FILE
    if not path.is_file():
        return None
    try:
        calibration = json.loads(path.read_text())
        float(calibration["placed_above"]), float(calibration["confident_above"])
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(
            f"Landmark model file {path} is damaged ({error}); delete it to use the thresholds of the model's "
            "config.json, or copy the model folder again."
        ) from None
    return calibration

