"""Live landmark QA: one context built per segmentation vs rebuilding it on every drag event.

The observer re-evaluates all 34 landmarks (distance to surface, duplicates, order along the
outline) on each PointModifiedEvent. Building the context (distance map, surface index,
outline) once per segmentation and reusing it is what makes that cheap; this prints both
per-event times and their ratio. Not a test: timings depend on the machine.

    .venv/bin/python bench/bench_landmark_qa.py [--events 30]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from SternumLandmarksLib.landmark_qa import LandmarkQAContext
from SternumSSMLib.phantom import PhantomParameters, generate_phantom


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=30)
    args = parser.parse_args()
    phantom = generate_phantom(PhantomParameters(spacing=(1.5, 1.5, 1.5)))
    points = phantom.landmarks.to("RAS")
    rng = np.random.default_rng(0)

    started = time.perf_counter()
    context = LandmarkQAContext.from_labels(phantom.labels)
    build = time.perf_counter() - started
    reuse = []
    for _ in range(args.events):
        moved = points.positions + rng.normal(0, 1.0, points.positions.shape)
        started = time.perf_counter()
        context.evaluate(type(points)(points.names, moved, "RAS"))
        reuse.append(time.perf_counter() - started)
    rebuild = []
    for _ in range(max(args.events // 10, 3)):
        started = time.perf_counter()
        LandmarkQAContext.from_labels(phantom.labels).evaluate(points)
        rebuild.append(time.perf_counter() - started)
    print(f"phantom {phantom.labels.geometry.size} at 1.5 mm; context build {build * 1000:.0f} ms")
    print(f"per drag event, context reused:  median {np.median(reuse) * 1000:7.2f} ms")
    print(f"per drag event, context rebuilt: median {np.median(rebuild) * 1000:7.2f} ms")
    print(f"ratio rebuilt / reused: {np.median(rebuild) / np.median(reuse):.0f}x")


if __name__ == "__main__":
    main()
