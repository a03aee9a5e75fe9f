"""The automatic ROI against the full pass: the same model, the same CTs, in one run, with ratios.

Two thoraxes: the default 1.5 mm phantom and a large one (0.7 x 0.7 x 1.0 mm, about 512 x 470 x 297 voxels,
as ``sternum-ssm phantom --spacing 0.7 0.7 1.0 --plain``; or a file with ``--large-ct``). Each is segmented by
``segment_ct`` with the bundled model (fast preset) twice: without the ROI (``auto_roi=False``) and with the
localiser's box. Printed per thorax: seconds of each step from the run records (localiser, preprocessing,
network, back to the CT grid, post-processing, QA), the total, the full/auto ratio, the share of voxels in the
box, and the total Dice of each against the phantom's truth and against each other. A third way is the
automatic ROI with its margin fixed at 25 mm, as before the margin was fitted to the network's tiles
(``fit_to_tiles``): network tiles and seconds of both.

Then end to end, as an annotator's command runs it: ``sternum-ssm predict`` on the large thorax's file (read,
model load, segmentation, writing the .seg.nrrd and its record), fast and accurate preset, with and without the
automatic ROI, each in a fresh process: wall seconds and peak memory (the child's maximum resident set).

Not a test: ``.venv/bin/python bench/bench_auto_roi.py [--large-ct FILE] [--repeats N]``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from SternumSSMLib import segment
from SternumSSMLib.geometry import Volume
from SternumSSMLib.metrics import dice_per_class
from SternumSSMLib.phantom import PhantomParameters, generate_phantom
from SternumSSMLib.segment import segment_ct
from SternumSSMLib.segmentation_inference import SegmentationModel

STEPS = ("localiser", "preprocessing", "network", "back_to_ct_grid", "postprocessing", "qa")


def thoraxes(large_ct: str | None) -> list[tuple[str, Volume, np.ndarray | None]]:
    default = generate_phantom(PhantomParameters(seed=0))
    cases = [("default 1.5 mm", default.image, default.labels.array)]
    if large_ct:
        cases.append(("large (file)", Volume.from_sitk(sitk.ReadImage(large_ct)), None))
    else:
        large = generate_phantom(PhantomParameters(seed=0, spacing=(0.7, 0.7, 1.0)))
        cases.append(("large 0.7 x 0.7 x 1.0 mm", large.image, large.labels.array))
    return cases


def predict_command(ct_file: Path, preset: str, auto_roi: bool) -> tuple[float, float]:
    """Wall seconds and peak resident GB of one ``sternum-ssm predict`` process."""
    command = Path(sys.executable).with_name("sternum-ssm")
    with tempfile.TemporaryDirectory() as output:
        arguments = [str(command), "predict", str(ct_file), "--output", output, "--preset", preset]
        arguments += [] if auto_roi else ["--no-auto-roi"]
        # A parent of its own per run: its children's ru_maxrss (kB on Linux) is then this run's peak.
        measure = (
            "import resource, subprocess, sys, time; started = time.perf_counter(); "
            "subprocess.run(sys.argv[1:], check=True, capture_output=True); "
            "print(time.perf_counter() - started, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
        )
        result = subprocess.run([sys.executable, "-c", measure, *arguments], check=True, capture_output=True)
    seconds, peak_kb = result.stdout.split()
    return float(seconds), float(peak_kb) / 1e6


def step_seconds(record: dict) -> dict[str, float]:
    steps = dict(record["step_seconds"])
    if record.get("auto_roi"):
        steps["localiser"] = record["auto_roi"]["localiser_seconds"]
    return steps


def best_run(model: SegmentationModel, image: Volume, auto_roi: bool, repeats: int):
    outcomes = [segment_ct(model, image, auto_roi=auto_roi) for _ in range(repeats)]
    return min(outcomes, key=lambda outcome: outcome.record["total_seconds"])


def fixed_margin_run(model: SegmentationModel, image: Volume, repeats: int):
    """The automatic ROI with the least margin equal to the most: nothing left for fitting to the tiles."""
    fitted_from = segment.AUTO_ROI_MIN_MARGIN_MM
    segment.AUTO_ROI_MIN_MARGIN_MM = segment.AUTO_ROI_MARGIN_MM
    try:
        return best_run(model, image, True, repeats)
    finally:
        segment.AUTO_ROI_MIN_MARGIN_MM = fitted_from


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--large-ct", help="a large CT file instead of generating the 0.7 mm phantom")
    parser.add_argument("--repeats", type=int, default=2, help="runs per way; the fastest is shown")
    args = parser.parse_args()
    print(f"load: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")
    model = SegmentationModel()
    if model.localiser is None:
        raise SystemExit("The bundled model has no localiser folder; nothing to compare.")
    for name, image, truth in thoraxes(args.large_ct):
        full = best_run(model, image, False, args.repeats)
        auto = best_run(model, image, True, args.repeats)
        full_steps, auto_steps = step_seconds(full.record), step_seconds(auto.record)
        print(f"\n{name}: {image.array.shape[::-1]} voxels; box {auto.record['auto_roi']['share_of_voxels']:.1%} "
              f"of them, grown {auto.record['auto_roi']['growths']} time(s)")
        print("| step | full pass s | automatic ROI s |")
        print("|---|---|---|")
        for step in STEPS:
            print(f"| {step} | {full_steps.get(step, 0.0):.2f} | {auto_steps.get(step, 0.0):.2f} |")
        full_total, auto_total = full.record["total_seconds"], auto.record["total_seconds"]
        print(f"| **total** | {full_total:.2f} | {auto_total:.2f} |")
        print(f"full / automatic ROI: **{full_total / auto_total:.2f}x**")
        agreement = dice_per_class(auto.labels.array, full.labels.array)["Total"]
        line = f"total Dice automatic ROI vs full pass {agreement:.4f}"
        if truth is not None:
            full_dice = dice_per_class(full.labels.array, truth)["Total"]
            auto_dice = dice_per_class(auto.labels.array, truth)["Total"]
            cost = full_dice - auto_dice
            line += f"; vs truth: full {full_dice:.4f}, automatic ROI {auto_dice:.4f} (cost {cost:+.4f})"
        print(line)
        fixed = fixed_margin_run(model, image, args.repeats)
        fixed_network = fixed.record["step_seconds"]["network"]
        print(f"fixed 25 mm margin: {fixed.record['tiles']} tiles, network {fixed_network:.2f} s, "
              f"total {fixed.record['total_seconds']:.2f} s; fitted to the tiles: {auto.record['tiles']} tiles, "
              f"network {auto_steps['network']:.2f} s, total {auto_total:.2f} s "
              f"(**{fixed.record['total_seconds'] / auto_total:.2f}x**)")
    print("\nEnd to end, sternum-ssm predict on the large thorax (fresh process each):")
    print("| preset | automatic ROI s | whole volume s | whole / automatic | peak GB automatic / whole |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        ct_file = Path(args.large_ct) if args.large_ct else Path(folder) / "large.nrrd"
        if not args.large_ct:
            sitk.WriteImage(image.to_sitk(), str(ct_file), True)  # the last thorax above: the large one
        for preset in ("fast", "accurate"):
            auto_s, auto_gb = predict_command(ct_file, preset, True)
            full_s, full_gb = predict_command(ct_file, preset, False)
            print(f"| {preset} | {auto_s:.1f} | {full_s:.1f} | {full_s / auto_s:.2f} | {auto_gb:.2f} / {full_gb:.2f} |")
    print(f"\nload: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")


if __name__ == "__main__":
    main()
