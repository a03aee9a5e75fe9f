"""Segmentation speed with the bundled model, each line a ratio of two ways of doing the same work.

1. fast vs accurate preset on the same phantom (and Dice of fast against accurate);
2. a second case with the model kept loaded vs a cold start (load + predict);
3. ROI around the sternum vs the full volume;
4. in-process predictor vs nnU-Net's own ``nnUNetv2_predict_from_modelfolder`` CLI, 1 case and 5 cases.
Peak RSS of this process is printed at the end. Not a test: run ``make bench``.
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from SternumSSMLib.metrics import dice_per_class
from SternumSSMLib.phantom import PhantomParameters, generate_phantom
from SternumSSMLib.roi import Box
from SternumSSMLib.segment import segment_ct
from SternumSSMLib.segmentation_inference import BUNDLED_MODEL, PredictionSettings, SegmentationModel

STERNUM_BOX = Box(np.array([-130.0, -160.0, -230.0]), np.array([130.0, -40.0, 50.0]))


def timed(function, *args, **kwargs):
    started = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - started


def in_process_vs_cli(cases: list, model: SegmentationModel) -> None:
    with tempfile.TemporaryDirectory() as folder:
        inputs, outputs = Path(folder, "in"), Path(folder, "out")
        inputs.mkdir()
        for number, phantom in enumerate(cases):
            sitk.WriteImage(phantom.image.to_sitk(), str(inputs / f"case{number}_0000.nrrd"))
        for count in (1, len(cases)):
            shutil.rmtree(outputs, ignore_errors=True)
            subset = Path(folder, f"in{count}")
            subset.mkdir(exist_ok=True)
            for number in range(count):
                shutil.copy(inputs / f"case{number}_0000.nrrd", subset)
            command = [
                str(Path(sys.executable).parent / "nnUNetv2_predict_from_modelfolder"),
                "-i",
                str(subset),
                "-o",
                str(outputs),
                "-m",
                str(BUNDLED_MODEL),
                "-f",
                "all",
                "-step_size",
                "0.8",
                "--disable_tta",
                "-device",
                "cpu",
                "-npp",
                "1",
                "-nps",
                "1",
            ]
            _, cli_seconds = timed(
                subprocess.run, command, check=True, capture_output=True, env=os.environ | {"nnUNet_def_n_proc": "1"}
            )
            cold = SegmentationModel(BUNDLED_MODEL)
            _, ours = timed(lambda c=cold, n=count: [c.predict(p.image) for p in cases[:n]])
            ours += cold.load_seconds
            print(f"4. {count} case(s): nnU-Net CLI {cli_seconds:.1f} s, in-process incl. load {ours:.1f} s")
            print(f"   CLI/in-process {cli_seconds / ours:.2f}")


def main() -> None:
    phantoms = [generate_phantom(PhantomParameters(seed=seed, spacing=(2.0, 2.0, 2.0))) for seed in range(5)]
    image = phantoms[0].image

    fast, load_fast = timed(SegmentationModel, BUNDLED_MODEL, PredictionSettings(preset="fast"))
    accurate = SegmentationModel(BUNDLED_MODEL, PredictionSettings(preset="accurate"))
    fast_result, fast_seconds = timed(segment_ct, fast, image)
    accurate_result, accurate_seconds = timed(segment_ct, accurate, image)
    agreement = dice_per_class(fast_result.labels.array, accurate_result.labels.array)["Total"]
    print(f"1. fast {fast_seconds:.1f} s vs accurate {accurate_seconds:.1f} s")
    print(f"   accurate/fast {accurate_seconds / fast_seconds:.2f}")
    print(f"   Dice(fast, accurate) {agreement:.3f}")

    _, warm_seconds = timed(segment_ct, fast, phantoms[1].image)
    cold_seconds = load_fast + fast_seconds
    print(f"2. cold start (load {load_fast:.1f} s + predict) {cold_seconds:.1f} s vs second case {warm_seconds:.1f} s")
    print(f"   cold/warm {cold_seconds / warm_seconds:.2f}")

    _, roi_seconds = timed(segment_ct, fast, image, roi=STERNUM_BOX)
    print(f"3. ROI {roi_seconds:.1f} s vs full volume {fast_seconds:.1f} s: full/ROI {fast_seconds / roi_seconds:.2f}")

    in_process_vs_cli(phantoms, fast)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of this process: {peak_mb:.0f} MB")


if __name__ == "__main__":
    main()
