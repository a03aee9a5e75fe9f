"""Batch engine (Dask distributed) against a plain loop, on the same 8 phantom CTs, each line a ratio.

1. engine overhead: ``sternum-ssm batch --workers 1`` vs a plain in-process loop over the same cases
   (the same per-case function, models loaded once), each a fresh process timed from start to exit;
   split into the fixed cost (wall time minus the cases' own seconds: imports, cluster start and stop)
   and the per-case cost (the cases' seconds summed, engine vs loop);
2. scaling: ``--workers 2`` vs ``--workers 1`` (one torch thread per worker in both);
3. models loaded per worker: the manifest's load count against the number of worker processes.
Every run writes all four files per case. The three ways run in turn, twice, and each keeps its faster
run, so a burst of other load on a shared machine hits one run, not the comparison. Not a test: run
``make bench``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

CASES = 8
REPEATS = 2
STERNUM_BOX = ([-130.0, -160.0, -230.0], [130.0, -40.0, 50.0])


def write_cases(folder: Path) -> None:
    from SternumSSMLib.case_files import write_volume
    from SternumSSMLib.phantom import PhantomParameters, generate_phantom
    from SternumSSMLib.roi import Box, crop, index_slices

    box = Box(np.array(STERNUM_BOX[0]), np.array(STERNUM_BOX[1]))
    folder.mkdir()
    for seed in range(CASES):
        image = generate_phantom(PhantomParameters(seed=seed, spacing=(3.0, 3.0, 3.0))).image
        write_volume(crop(image, index_slices(image.geometry, box)), folder / f"phantom{seed:03d}.nrrd")


def plain_loop(cts: str, output: str) -> None:
    """The baseline: the batch's own per-case function in a for loop, in this one process."""
    from SternumLandmarksLib.batch_landmarks import scn_landmark_step
    from SternumSSMLib.batch import plan_jobs
    from SternumSSMLib.batch_case import CaseSteps, SegmentationStep, run_case
    from SternumSSMLib.segmentation_inference import BUNDLED_MODEL, PredictionSettings

    steps = CaseSteps(SegmentationStep.create(BUNDLED_MODEL, PredictionSettings()), scn_landmark_step(), None, 1)
    Path(output).mkdir()
    seconds = []
    for job in plan_jobs([cts], output):
        result = run_case(job, steps, output)
        assert result["status"] == "done", result
        seconds.append(result["seconds"])
    print(json.dumps(seconds))


def timed_run(command: list[str], check: bool = True) -> tuple[float, str]:
    started = time.perf_counter()
    finished = subprocess.run(command, check=check, capture_output=True, text=True)
    return time.perf_counter() - started, finished.stdout


def loop_run(cts: Path, output: Path) -> tuple[float, list[float]]:
    seconds, printed = timed_run([sys.executable, __file__, "loop", str(cts), str(output)])
    return seconds, json.loads(printed.splitlines()[-1])


def engine(cts: Path, output: Path, workers: int) -> tuple[float, list[dict]]:
    command = [sys.executable, "-m", "SternumSSMLib.cli", "batch", str(cts), "--output", str(output)]
    # Not checked: a failed case exits 1, and the assert below shows its error from the manifest.
    seconds, _ = timed_run([*command, "--workers", str(workers), "--torch-threads", "1", "--quiet"], check=False)
    records = [json.loads(line) for line in (output / "manifest.jsonl").read_text().splitlines()]
    assert sum(r["status"] == "done" for r in records) == CASES, records
    return seconds, records


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        write_cases(root / "cts")
        runs = {"loop": [], "one": [], "two": []}
        for repeat in range(REPEATS):
            runs["loop"].append(loop_run(root / "cts", root / f"loop{repeat}"))
            runs["one"].append(engine(root / "cts", root / f"one{repeat}", 1))
            runs["two"].append(engine(root / "cts", root / f"two{repeat}", 2))
        (loop, loop_seconds), (one, records_one), (two, records_two) = (min(runs[way]) for way in runs)

    print("wall s per run: " + "; ".join(f"{way} {[round(run[0], 1) for run in runs[way]]}" for way in runs))
    per_case = np.median([r["seconds"] for r in records_one])
    print(f"{CASES} phantom CTs (3 mm, sternum box), median {per_case:.1f} s per case on one worker")
    print(f"1. plain loop {loop:.1f} s vs engine with 1 worker {one:.1f} s: overhead {100 * (one / loop - 1):+.1f} %")
    loop_cases, engine_cases = sum(loop_seconds), sum(r["seconds"] for r in records_one)
    print(
        f"   fixed cost: loop {loop - loop_cases:.1f} s, engine {one - engine_cases:.1f} s; cases' own seconds: "
        f"loop {loop_cases:.1f} s, engine {engine_cases:.1f} s (engine/loop {engine_cases / loop_cases:.2f})"
    )
    print(f"2. 2 workers {two:.1f} s vs 1 worker {one:.1f} s: speed-up {one / two:.2f}x")
    for workers, records in ((1, records_one), (2, records_two)):
        loads = Counter(model for r in records for model in r["models_loaded"])
        processes = len({r["worker"] for r in records})
        print(f"3. {workers} worker(s): {processes} worker process(es) ran cases; loads {dict(loads)}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["loop"]:
        plain_loop(sys.argv[2], sys.argv[3])
    else:
        main()
