"""Landmark model speed, each line a ratio of two ways of doing the same work.

1. Training time per epoch with the demo config: its 2 mm grid in the sternum's frame
   (128x32x48) vs the earlier 3 mm LPS-aligned grid (80x48x32), same network, same phantoms,
   a few iterations each after a one-iteration warm-up run;
2. inference per case with the bundled model: kept loaded vs a cold start (load + predict);
3. inference per case, kept loaded: two stages (network, then the refinement along the rim) vs the
   network alone (``predict(..., refine=False)``). The issue's budget is 2 s per case for two stages.

Not a test: timings depend on the machine. Run ``make bench`` or
``.venv/bin/python bench/bench_landmark_model.py [--iterations 12] [--threads 2]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
from SternumLandmarksLib.landmark_prediction import BUNDLED_LANDMARK_MODEL, LandmarkModel
from SternumLandmarksLib.landmark_training import phantom_cases, read_log, train_landmark_model
from SternumLandmarksLib.scn_config import CPU_DEMO_CONFIG, load_config

TRAINING_SEEDS = range(2000, 2006)
INFERENCE_SEEDS = range(5000, 5004)


def seconds_per_iteration(config, cases, iterations: int, threads: int) -> float:
    """Mean time of ``iterations`` training iterations, after a one-iteration warm-up run."""
    one_epoch = replace(config, epochs=1, lr_decay_start_epoch=1, validate_every=1)
    with tempfile.TemporaryDirectory() as folder:
        for name, count in (("warm-up", 1), ("timed", iterations)):
            train_landmark_model(cases, [], Path(folder, name), replace(one_epoch, iterations_per_epoch=count),
                                 show_progress=False, threads=threads)
        return float(read_log(Path(folder, "timed", "training_log.csv"))[-1]["seconds"]) / iterations


def mean_seconds(predict, phantoms) -> float:
    started = time.perf_counter()
    for case in phantoms:
        predict(case)
    return (time.perf_counter() - started) / len(phantoms)


def training_report(iterations: int, threads: int) -> None:
    demo = load_config(CPU_DEMO_CONFIG)
    lps_3mm = replace(demo, spacing_mm=3.0, grid_shape_kji=(80, 48, 32), grid_frame="lps")
    cases = phantom_cases(TRAINING_SEEDS)
    per_iteration = {name: seconds_per_iteration(config, cases, iterations, threads)
                     for name, config in (("demo", demo), ("lps_3mm", lps_3mm))}
    epoch = {name: seconds * demo.iterations_per_epoch for name, seconds in per_iteration.items()}
    print(f"Training, {iterations} iterations per grid, {threads} threads, "
          f"epoch = {demo.iterations_per_epoch} iterations:")
    print(f"  demo grid {'x'.join(map(str, demo.grid_shape_kji))} at {demo.spacing_mm:g} mm ({demo.grid_frame} frame): "
          f"{per_iteration['demo']:.2f} s/iteration, {epoch['demo']:.0f} s/epoch")
    print(f"  3 mm LPS grid {'x'.join(map(str, lps_3mm.grid_shape_kji))}: "
          f"{per_iteration['lps_3mm']:.2f} s/iteration, {epoch['lps_3mm']:.0f} s/epoch")
    print(f"  ratio demo / 3 mm LPS: {per_iteration['demo'] / per_iteration['lps_3mm']:.2f}")


def inference_report() -> None:
    phantoms = phantom_cases(INFERENCE_SEEDS)
    warm_model = LandmarkModel(BUNDLED_LANDMARK_MODEL, device="cpu")
    warm_model.predict(phantoms[0].labels)  # the first call pays for one-off allocations
    warm, cold = [], []
    for case in phantoms:
        started = time.perf_counter()
        warm_model.predict(case.labels)
        warm.append(time.perf_counter() - started)
        started = time.perf_counter()
        LandmarkModel(BUNDLED_LANDMARK_MODEL, device="cpu").predict(case.labels)
        cold.append(time.perf_counter() - started)
    warm_mean, cold_mean = sum(warm) / len(warm), sum(cold) / len(cold)
    print(f"Inference with the bundled model, {len(phantoms)} phantoms at 2 mm:")
    print(f"  kept loaded {warm_mean:.2f} s/case, cold start {cold_mean:.2f} s/case, "
          f"ratio cold / loaded {cold_mean / warm_mean:.2f}")
    one_stage = mean_seconds(lambda case: warm_model.predict(case.labels, refine=False), phantoms)
    two_stage = mean_seconds(lambda case: warm_model.predict(case.labels), phantoms)
    print(f"  kept loaded, network alone {one_stage:.2f} s/case, network + rim refinement {two_stage:.2f} s/case, "
          f"ratio two / one stage {two_stage / one_stage:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=12)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    training_report(args.iterations, args.threads)
    inference_report()


if __name__ == "__main__":
    main()
