"""Shape-model correspondence, two comparisons on the same phantoms, printed side by side with ratios.

1. Projection of the warped template: exact closest point on the case's triangles
   (vtkStaticCellLocator) vs nearest surface vertex (k-d tree), the shortcut DeCA measured as
   36x faster with Procrustes distances inflated by ~2 %. Printed: time per case, each case's
   Procrustes distance to the GPA mean, and the error against the phantom's true correspondence.
2. Warp: thin-plate spline only vs TPS + trimesh's landmark-constrained non-rigid ICP
   (Amberg 2007): fit error (ASSD, HD95 to the case's own surface), true correspondence error, time.

Not a test: timings depend on the machine.

    .venv/bin/python bench/bench_shape_correspondence.py [--cases 8] [--spacing 1.0] [--points 3000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy.spatial import cKDTree
from SternumShapeModelLib.correspondence import (
    SurfaceSettings,
    Template,
    correspond,
    prepare_case,
    thin_plate_spline,
    warp,
)
from SternumShapeModelLib.evaluation import TruthMap, phantom_case, phantom_parameters
from SternumShapeModelLib.meshes import SurfaceLocator, decimate
from SternumShapeModelLib.statistics import generalised_procrustes


def run(template, cases, locators, truth, parameters, **options) -> dict:
    times, points, errors, assd, hd95 = [], [], [], [], []
    for case, locator, params in zip(cases, locators, parameters, strict=True):
        started = time.perf_counter()
        result = correspond(template, template.mesh.points_lps, case, locator, **options)
        times.append(time.perf_counter() - started)
        points.append(result.points_lps)
        errors.append(truth.errors(result.points_lps, params))
        assd.append(result.fit_error.assd_mm)
        hd95.append(result.fit_error.hd95_mm)
    alignment = generalised_procrustes(np.array(points))
    procrustes = np.sqrt(((alignment.aligned - alignment.mean) ** 2).sum(axis=2).mean(axis=1))
    errors = np.concatenate(errors)
    return {
        "s/case": np.median(times),
        "Procrustes dist (mm)": np.mean(procrustes),
        "true err median": np.median(errors),
        "true err p95": np.percentile(errors, 95),
        "ASSD": np.median(assd),
        "HD95": np.median(hd95),
    }


def projection_times(template, cases, locators) -> dict[str, dict]:
    """Seconds per case of the projection step alone, on the same TPS-warped templates."""
    exact, vertex = [], []
    for case, locator in zip(cases, locators, strict=True):
        source = template.landmarks_on(template.mesh.points_lps)
        warped = warp(thin_plate_spline(source, case.landmarks_lps), template.mesh.points_lps)
        started = time.perf_counter()
        locator.closest_points(warped)
        exact.append(time.perf_counter() - started)
        started = time.perf_counter()
        cKDTree(case.surface.mesh.points_lps).query(warped)
        vertex.append(time.perf_counter() - started)
    return {
        "exact closest pt": {"projection s/case": np.median(exact)},
        "nearest vertex": {"projection s/case": np.median(vertex)},
    }


def table(title: str, rows: dict[str, dict]) -> None:
    names = list(rows)
    print(f"\n{title}")
    print(f"{'':24s}" + "".join(f"{n:>18s}" for n in names) + f"{'ratio':>10s}")
    for key in rows[names[0]]:
        a, b = rows[names[0]][key], rows[names[1]][key]
        print(f"{key:24s}{a:18.3f}{b:18.3f}{b / a:10.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=8)
    parser.add_argument("--spacing", type=float, default=1.0)
    parser.add_argument("--points", type=int, default=3000)
    args = parser.parse_args()
    parameters = phantom_parameters(args.cases + 1, args.spacing)
    prepared = [prepare_case(phantom_case(p)[0], SurfaceSettings()) for p in parameters]
    reference, cases, parameters_rest = prepared[0], prepared[1:], parameters[1:]
    mesh = decimate(reference.surface.mesh, args.points)
    template = Template.from_landmarks(mesh, reference.landmarks_lps, reference.landmark_names, "bench")
    truth = TruthMap(mesh, parameters[0])
    locators = [SurfaceLocator(case.surface.mesh) for case in cases]
    print(f"{len(cases)} phantoms at {args.spacing} mm, template {len(mesh.points_lps)} points, "
          f"case surfaces {len(cases[0].surface.mesh.points_lps)} points")  # fmt: skip
    rows = {
        "exact closest pt": run(template, cases, locators, truth, parameters_rest),
        "nearest vertex": run(template, cases, locators, truth, parameters_rest, exact=False),
    }
    for name, times in projection_times(template, cases, locators).items():
        rows[name] |= times
    table("Projection (TPS warp first; s/case is the whole correspondence with its fit error)", rows)
    table(
        "Warp (exact projection after)",
        {
            "TPS": run(template, cases, locators, truth, parameters_rest),
            "TPS + NRICP": run(template, cases, locators, truth, parameters_rest, nricp=True),
        },
    )


if __name__ == "__main__":
    main()
