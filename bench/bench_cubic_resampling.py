"""The CT's resampling to the network's grid: nnU-Net's default function against the one-axis-at-a-time twin.

Both get the same array: the large phantom thorax (0.7 x 0.7 x 1.0 mm, as ``sternum-ssm phantom --spacing 0.7
0.7 1.0 --plain``) cropped to the automatic ROI's box of the bundled model, in the model's axes, as nnU-Net's
preprocessor hands it over, resampled to 2 mm. Each way runs first in turn (a fresh process's first large
allocations are page-faulted in, which a warm second run does not pay), then again. Printed: seconds per
run, the ratio, and the largest difference between the two results (HU after nnU-Net's normalisation).

Not a test: ``.venv/bin/python bench/bench_cubic_resampling.py``.
"""

from __future__ import annotations

import subprocess
import time

import numpy as np
from nnunetv2.preprocessing.resampling import default_resampling
from SternumSSMLib.cubic_resampling import resample_data_or_seg_to_shape
from SternumSSMLib.phantom import PhantomParameters, generate_phantom
from SternumSSMLib.roi import crop
from SternumSSMLib.segment import _locate
from SternumSSMLib.segmentation_inference import SegmentationModel, to_model_axes


def main() -> None:
    print(f"load: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")
    image = generate_phantom(PhantomParameters(seed=0, spacing=(0.7, 0.7, 1.0))).image
    slices, _ = _locate(SegmentationModel(), image, None)
    array, spacing, _ = to_model_axes(crop(image, slices))
    data = array[None].astype(np.float32)
    new_shape = default_resampling.compute_new_shape(data.shape[1:], spacing, (2.0, 2.0, 2.0))
    ways = {
        "nnU-Net": default_resampling.resample_data_or_seg_to_shape,
        "one axis at a time": resample_data_or_seg_to_shape,
    }
    seconds: dict[str, list[float]] = {name: [] for name in ways}
    results = {}
    for name, function in [*ways.items(), *ways.items()]:
        started = time.perf_counter()
        results[name] = function(data, new_shape, spacing, (2.0, 2.0, 2.0), False, 3, 0, None)
        seconds[name].append(time.perf_counter() - started)
    print(f"{data.shape[1:]} voxels at {spacing} mm -> {tuple(int(n) for n in new_shape)} at 2 mm")
    print("| way | first run s | second run s |")
    print("|---|---|---|")
    for name, runs in seconds.items():
        print(f"| {name} | {runs[0]:.2f} | {runs[1]:.2f} |")
    first, second = (seconds["nnU-Net"][i] / seconds["one axis at a time"][i] for i in (0, 1))
    print(f"nnU-Net / one axis at a time: **{first:.2f}x** first run, **{second:.2f}x** second run")
    print(f"largest difference: {np.abs(results['nnU-Net'] - results['one axis at a time']).max():.3g}")


if __name__ == "__main__":
    main()
