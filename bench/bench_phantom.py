"""Phantom generation time for the default 1.5 mm thorax, and what an oblique grid costs.

Both runs build the same anatomy; the axis-aligned grid lets the voxel coordinates stay
broadcast 1D ramps, the oblique grid needs full 3D coordinate arrays. Prints
min/median seconds for each and their ratio. Not a test: run it with `make bench`.
"""

from __future__ import annotations

import statistics
import time

import numpy as np
from SternumSSMLib.geometry import rotation_matrix
from SternumSSMLib.phantom import PhantomParameters, generate_phantom, with_orientation

REPEATS = 3


def seconds(params: PhantomParameters) -> tuple[list[float], float]:
    """Wall times of REPEATS generations, and the grid's size in millions of voxels."""
    times = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        phantom = generate_phantom(params)
        times.append(time.perf_counter() - started)
    return times, float(np.prod(phantom.image.geometry.size)) / 1e6


def main() -> None:
    default = PhantomParameters()
    oblique = with_orientation(default, rotation_matrix([0.3, 1.0, 0.2], 23.0))
    print(f"Phantom generation, {REPEATS} runs each")
    results = {"axis-aligned": seconds(default), "oblique 23 deg": seconds(oblique)}
    for name, (times, megavoxels) in results.items():
        median = statistics.median(times)
        print(
            f"default 1.5 mm, {name:14s}: min {min(times):.2f} s, median {median:.2f} s, "
            f"{megavoxels:.1f} M voxels, {median / megavoxels:.3f} s per M voxels"
        )
    (aligned, aligned_mv), (rotated, rotated_mv) = results.values()
    ratio = statistics.median(rotated) / statistics.median(aligned)
    per_voxel = ratio * aligned_mv / rotated_mv
    print(f"ratio oblique / axis-aligned: {ratio:.2f} in time, {per_voxel:.2f} per voxel")


if __name__ == "__main__":
    main()
