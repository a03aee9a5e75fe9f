"""Shape-model evaluation on phantoms, whose anatomy and knobs are known (the issue's numbers).

- correspondence error: each model case's corresponded mesh against the phantom's true
  corresponding surface points (:func:`SternumSSMLib.phantom.sternum_surface_truth`);
- knob recovery: held-out (leave-one-out) R² of a linear regression of each shape knob on
  the PC scores; tilt is a pose, not a shape, so it is also regressed on the GPA rotation;
- generalisation, compactness and specificity, and the time per stage.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from SternumSSMLib.case_files import write_volume
from SternumSSMLib.dataset import CaseVersion, add_case_version
from SternumSSMLib.landmark_files import write_landmarks_csv
from SternumSSMLib.phantom import (
    SHAPE_KNOBS,
    Phantom,
    PhantomParameters,
    random_parameters,
    shape_knobs,
    sternum_label_map,
    sternum_surface_coordinates,
    sternum_surface_truth,
)
from SternumSSMLib.provenance import volume_sha256

from .correspondence import ShapeCase
from .meshes import SurfaceLocator, SurfaceMesh, points_at
from .model import BuildSettings, ShapeModel, build_model


def phantom_parameters(count: int, spacing_mm: float, first_seed: int = 0) -> list[PhantomParameters]:
    """Phantoms with natural variation and the hard-case knobs (random_parameters), on an isotropic grid."""
    return [random_parameters(seed, spacing=(spacing_mm,) * 3) for seed in range(first_seed, first_seed + count)]


def phantom_case(params: PhantomParameters) -> tuple[ShapeCase, Phantom]:
    phantom = sternum_label_map(params)
    return ShapeCase(f"phantom{params.seed:03d}", phantom.labels, phantom.landmarks), phantom


def write_phantom_dataset(root: Path | str, parameters: list[PhantomParameters]) -> list[str]:
    """A dataset folder of sternum-only phantoms (the label map stands in for the CT); returns the case ids."""
    ids = []
    for params in parameters:
        case, phantom = phantom_case(params)
        writers = {
            "image": lambda path, v=phantom.image: write_volume(v, path),
            "labels": lambda path, v=phantom.labels: write_volume(v, path),
            "landmarks_csv": lambda path, p=phantom.landmarks: write_landmarks_csv(path, p),
        }
        add_case_version(root, CaseVersion(case.case_id, "train", writers, volume_sha256(phantom.image)))
        ids.append(case.case_id)
    return ids


class TruthMap:
    """Where the phantom's true surface points sit on a template mesh, to score any mesh with its topology."""

    def __init__(self, template: SurfaceMesh, template_params: PhantomParameters):
        self.template = template
        self.coordinates = sternum_surface_coordinates()
        truth = sternum_surface_truth(template_params, self.coordinates)
        self.triangles, self.weights = SurfaceLocator(template).barycentric(truth)

    def errors(self, points_lps: np.ndarray, params: PhantomParameters) -> np.ndarray:
        """Distances (mm) between the true points of phantom ``params`` and where a corresponded mesh puts them."""
        predicted = points_at(self.template.with_points(points_lps), self.triangles, self.weights)
        return np.linalg.norm(predicted - sternum_surface_truth(params, self.coordinates), axis=1)


def correspondence_errors(model: ShapeModel, parameters: dict[str, PhantomParameters]) -> np.ndarray:
    """Distances (mm, cases x truth points) between corresponded and true points, template case excluded."""
    template_id = model.template.source.removeprefix("case ")
    truth = TruthMap(model.template.mesh, parameters[template_id])
    return np.array(
        [truth.errors(case.points_lps, parameters[case.case_id]) for case in model.cases if case.case_id != template_id]
    )


def held_out_r2(features: np.ndarray, target: np.ndarray) -> float:
    """Leave-one-out R² of an ordinary least-squares fit (with intercept) of ``target`` on ``features``."""
    design = np.column_stack([np.ones(len(target)), features])
    predictions = np.empty(len(target))
    for n in range(len(target)):
        rest = np.delete(np.arange(len(target)), n)
        coefficients, *_ = np.linalg.lstsq(design[rest], target[rest], rcond=None)
        predictions[n] = design[n] @ coefficients
    return float(1.0 - ((target - predictions) ** 2).sum() / ((target - target.mean()) ** 2).sum())


def knob_recovery(model: ShapeModel, parameters: dict[str, PhantomParameters], modes: int) -> dict[str, float]:
    """Held-out R² per shape knob from the first ``modes`` PC scores, and tilt from the GPA rotation."""
    flat = np.array([(c.points_lps @ c.transform[:3, :3].T + c.transform[:3, 3]).ravel() for c in model.cases])
    scores = model.pca.scores(flat, modes)
    knobs = {name: np.array([shape_knobs(parameters[c.case_id])[name] for c in model.cases]) for name in SHAPE_KNOBS}
    result = {name: held_out_r2(scores, values) for name, values in knobs.items()}
    # Rotation about the left-right (x) axis that GPA applied: the sternum's pose in the sagittal plane. It
    # mixes tilt with the sternal angle (GPA balances manubrium and body), which the scores carry.
    angle = np.array([np.degrees(np.arctan2(c.transform[2, 1], c.transform[1, 1])) for c in model.cases])
    result["sternal_tilt_deg (GPA rotation + scores)"] = held_out_r2(
        np.column_stack([angle, scores]), knobs["sternal_tilt_deg"]
    )
    return result


def evaluate(count: int = 40, spacing_mm: float = 1.0, settings: BuildSettings | None = None, progress=None) -> dict:
    """Build a model from ``count`` phantoms in memory and measure it against their ground truth."""
    parameters = phantom_parameters(count, spacing_mm)
    by_id = {f"phantom{p.seed:03d}": p for p in parameters}
    stage_times: dict[str, float] = {}
    clock = {"stage": None, "start": time.perf_counter()}

    def timed_progress(stage: str, done: int, total: int) -> None:
        if stage != clock["stage"]:
            now = time.perf_counter()
            if clock["stage"] is not None:
                stage_times[clock["stage"]] = now - clock["start"]
            clock.update(stage=stage, start=now)
        if progress is not None:
            progress(stage, done, total)

    started = time.perf_counter()
    cases = (phantom_case(p)[0] for p in parameters)
    source = {"source": f"phantoms {parameters[0].seed}..{parameters[-1].seed} at {spacing_mm} mm (sternum_label_map)"}
    model = build_model(cases, settings, progress=timed_progress, total=count, provenance=source)
    stage_times[clock["stage"]] = time.perf_counter() - clock["start"]
    total = time.perf_counter() - started
    errors = correspondence_errors(model, by_id)
    k = model.mode_count
    five = min(5, len(model.generalisation_mm))
    return {
        "cases": len(model.cases),
        "skipped": model.skipped,
        "flagged": model.flagged,
        "template": model.template.source,
        "template_points": len(model.template.mesh.points_lps),
        "modes_95": k,
        "correspondence_median_mm": float(np.median(errors)),
        "correspondence_p95_mm": float(np.percentile(errors, 95)),
        "fit_assd_median_mm": float(np.median([c.assd_mm for c in model.cases])),
        "fit_hd95_median_mm": float(np.median([c.hd95_mm for c in model.cases])),
        "knob_r2_kept_modes": knob_recovery(model, by_id, k),
        "knob_r2_10_modes": knob_recovery(model, by_id, min(10, len(model.pca.variances))),
        "generalisation_5_modes_mm": float(model.generalisation_mm[five - 1]),
        "compactness": [round(float(c), 4) for c in model.compactness[:10]],
        "generalisation_mm": [round(float(g), 3) for g in model.generalisation_mm],
        "specificity_mm": [round(float(s), 3) for s in model.specificity_mm],
        "seconds": {**{k: round(v, 1) for k, v in stage_times.items()}, "total (incl. phantoms)": round(total, 1)},
        "correspondence_s_per_case": stage_times.get("correspondence", np.nan) / max(len(model.cases), 1),
        "model": model,
    }
