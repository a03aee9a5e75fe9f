"""Landmark training targets: coordinate-space augmentation vs the study's heatmap warping.

Both methods draw the same random affine transform per sample (on the CPU demo config's grid,
printed with the results) and produce the same thing, an augmented mask plus 34 target heatmaps:

A. ours: resample the mask once, map the landmark coordinates through the exact inverse
   (``Augmentation.points``) and render the 34 heatmaps at the mapped points (sigma 3, gamma 1000);
B. the study: render the 34 heatmaps at the original coordinates, then resample the mask and each
   heatmap through the transform (linear interpolation). B's rendering is done once per case,
   outside the timing, which favours B.

Timed per sample: the augmentation and target work only (not phantom generation, not the peak
search used for measuring). Prints samples/s for A and B and the ratio B time / A time.

Then the target shift: where B's warped heatmap puts each landmark against the exact mapped
coordinate, in mm, pooled over landmarks and samples (median, mean, 95th percentile, max), with
(a) the plain integer argmax (what the study's targets amount to) and (b) our sub-voxel refinement
(``refine_peaks``). The two "A" rows are the same measure on A's own heatmaps: the integer argmax
row is the grid's rounding floor, the refined row should be ~0. Peak height is each heatmap's
maximum over the Gaussian's analytic peak; warping blurs B's peaks below A's. Landmarks whose
mapped position falls off the grid are left out and counted.

Not a test: run ``.venv/bin/python bench/bench_landmark_augmentation.py [--samples N] [--quick]``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from SternumLandmarksLib.landmark_prediction import refine_peaks
from SternumLandmarksLib.landmark_preprocessing import Augmentation, prepare_case, random_augmentation
from SternumLandmarksLib.landmark_training import phantom_cases
from SternumLandmarksLib.scn_config import CPU_DEMO_CONFIG, load_config
from SternumLandmarksLib.scn_model import HeatmapRenderer

SEEDS = range(2000, 2003)
SIGMA = 3.0
GAMMA = 1000.0


def render(renderer: HeatmapRenderer, kji: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    with torch.no_grad():
        return renderer(torch.from_numpy(kji.astype(np.float32))[None], shape)[0].numpy()


def coordinate_space(augmentation: Augmentation, mask, landmarks_kji, renderer, shape):
    """Method A: one resampling of the mask, exact point mapping, heatmaps rendered at the mapped points."""
    image = augmentation.image(mask)
    points = augmentation.points(landmarks_kji)
    return image, points, render(renderer, points, shape)


def heatmap_warping(augmentation: Augmentation, mask, heatmaps):
    """Method B: the mask and each of the pre-rendered heatmaps resampled through the same transform."""
    image = augmentation.image(mask)
    return image, np.stack([augmentation.image(heatmap, order=1) for heatmap in heatmaps])


def shifts_mm(heatmaps: np.ndarray, exact_kji: np.ndarray, spacing: float) -> tuple[np.ndarray, np.ndarray]:
    """Distance in mm from each heatmap's integer argmax and refined peak to the exact coordinate."""
    refined, _ = refine_peaks(heatmaps)
    flat = heatmaps.reshape(len(heatmaps), -1).argmax(axis=1)
    integer = np.stack(np.unravel_index(flat, heatmaps.shape[1:]), axis=1).astype(float)
    return (
        spacing * np.linalg.norm(integer - exact_kji, axis=1),
        spacing * np.linalg.norm(refined - exact_kji, axis=1),
    )


def summary(values: list[np.ndarray]) -> str:
    pooled = np.concatenate(values)
    return f"{np.median(pooled):7.2f} {pooled.mean():7.2f} {np.percentile(pooled, 95):7.2f} {pooled.max():7.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=20, help="augmented samples per case (default 20)")
    parser.add_argument("--quick", action="store_true", help="5 samples per case")
    args = parser.parse_args()
    samples = 5 if args.quick else args.samples
    torch.set_num_threads(1)

    config = load_config(CPU_DEMO_CONFIG)
    shape = config.grid_shape_kji
    spacing = config.spacing_mm
    cases = [
        prepare_case(case.case_id, case.labels, case.landmarks.to("LPS").positions, config)
        for case in phantom_cases(SEEDS, spacing_mm=2.0)
    ]
    count = cases[0].landmarks_kji.shape[0]
    renderer = HeatmapRenderer(count, SIGMA, GAMMA)
    expected_peak = float(renderer.peak_heights().detach()[0])
    rng = np.random.default_rng(0)

    times = {"A": [], "B": []}
    shifts = {"A integer argmax": [], "A refined": [], "B integer argmax": [], "B refined": []}
    peaks = {"A": [], "B": []}
    left_out = 0
    for case in cases:
        heatmaps = render(renderer, case.landmarks_kji, shape)  # B renders once per case, untimed
        for _ in range(samples):
            augmentation = random_augmentation(rng, shape, config.augmentation)
            started = time.perf_counter()
            _, exact, targets_a = coordinate_space(augmentation, case.mask, case.landmarks_kji, renderer, shape)
            times["A"].append(time.perf_counter() - started)
            started = time.perf_counter()
            _, targets_b = heatmap_warping(augmentation, case.mask, heatmaps)
            times["B"].append(time.perf_counter() - started)

            inside = (
                np.isfinite(exact).all(axis=1) & (exact >= 0).all(axis=1) & (exact <= np.array(shape) - 1).all(axis=1)
            )
            left_out += int((~inside).sum())
            for method, targets in (("A", targets_a), ("B", targets_b)):
                integer, refined = shifts_mm(targets[inside], exact[inside], spacing)
                shifts[f"{method} integer argmax"].append(integer)
                shifts[f"{method} refined"].append(refined)
                peaks[method].append(targets[inside].reshape(int(inside.sum()), -1).max(axis=1) / expected_peak)

    total = len(times["A"])
    print(
        f"Landmark augmentation, {len(cases)} phantom cases x {samples} samples, {count} landmarks, "
        f"grid {'x'.join(map(str, shape))} at {spacing:g} mm, 1 thread"
    )
    for method, label in (("A", "coordinate space (ours)"), ("B", "heatmap warping (study)")):
        median = statistics.median(times[method])
        print(f"{method} {label}: {1 / median:6.1f} samples/s (median {1000 * median:.1f} ms per sample)")
    print(f"ratio B time / A time: {statistics.median(times['B']) / statistics.median(times['A']):.2f}")
    print(f"target shift against the exact mapped coordinate, mm ({total} samples, {left_out} off-grid left out):")
    print(f"  {'':18s} {'median':>7s} {'mean':>7s} {'p95':>7s} {'max':>7s}")
    for name, values in shifts.items():
        print(f"  {name:18s} {summary(values)}")
    for method in ("A", "B"):
        print(f"peak height / analytic peak, {method}: mean {np.concatenate(peaks[method]).mean():.3f}")


if __name__ == "__main__":
    main()
