"""How good a segmentation model is on held-out phantoms, as its ``evaluation.json`` records it.

Per case (``random_parameters(5000..5009)`` at 2 mm, hard-case knobs included, after post-processing):
- Dice per class against the phantom's truth;
- with a localiser, the full pass without the automatic ROI: its Dice and both times;
- copies at 1 mm (a CT's spacing; at 2 mm the voxels alone cost the cartilage ~0.13 Dice between two grids):
  the axis-aligned 1 mm prediction against its truth; the same anatomy on a grid rotated 20 degrees about a
  random axis, predicted, resampled (nearest) onto the axis-aligned 1 mm grid and compared with the
  axis-aligned 1 mm prediction, next to the same comparison of
  the two truths (what the two voxelisations alone cost); and the axis-aligned CT itself stored with its axes
  reversed and swapped (the same voxels, so the comparison is exact and any difference is the model's).

Run: ``python -m SternumSSMLib.segmentation_model_evaluation MODEL_FOLDER --output evaluation.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .geometry import Volume, reindexed, rotation_matrix
from .metrics import dice_per_class
from .phantom import PhantomParameters, generate_phantom, random_parameters, with_orientation
from .segment import segment_ct
from .segmentation_inference import SegmentationModel

HELD_OUT_SEEDS = tuple(range(5000, 5010))
OBLIQUE_DEG = 20.0
COPY_SPACING_MM = 1.0
MIRRORED = "RIP"  # every axis reversed or swapped against the CT's own


def on_grid(labels: Volume, reference: Volume) -> np.ndarray:
    """``labels`` resampled (nearest neighbour) onto ``reference``'s grid, as an array [k, j, i]."""
    resampled = sitk.Resample(labels.to_sitk(), reference.to_sitk(), sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    return sitk.GetArrayFromImage(resampled)


def hard_knobs(params: PhantomParameters) -> list[str]:
    knobs = []
    if params.calcification > 0.5:
        knobs.append("calcified")
    if params.manubrium_body_ratio > 0.7:
        knobs.append("long manubrium")
    if params.split_cartilage is not None:
        knobs.append("split cartilage")
    if params.ribcage_width > 1.2:
        knobs.append("broad ribcage")
    if params.truncate_superior_mm > 0 or params.truncate_inferior_mm > 0:
        knobs.append("truncated")
    return knobs


def _copies(model: SegmentationModel, params: PhantomParameters, seed: int) -> dict:
    """At COPY_SPACING_MM: the axis-aligned prediction against its truth, and how a rotated and a mirrored
    copy agree with that prediction."""
    spacing = (COPY_SPACING_MM,) * 3
    axis_aligned = generate_phantom(replace(params, spacing=spacing))
    reference = segment_ct(model, axis_aligned.image).labels
    rng = np.random.default_rng([seed, 20])
    rotated = generate_phantom(with_orientation(params, rotation_matrix(rng.normal(size=3), OBLIQUE_DEG), spacing))
    rotated_labels = segment_ct(model, rotated.image).labels
    mirrored = segment_ct(model, reindexed(axis_aligned.image, MIRRORED)).labels
    return {
        "fine": {"prediction": dice_per_class(reference.array, axis_aligned.labels.array)},
        "oblique": {
            "prediction": dice_per_class(on_grid(rotated_labels, reference), reference.array),
            "truth": dice_per_class(on_grid(rotated.labels, axis_aligned.labels), axis_aligned.labels.array),
        },
        "mirrored": {"prediction": dice_per_class(on_grid(mirrored, reference), reference.array)},
    }


def evaluate_segmentation_model(
    model_folder: Path | str, seeds=HELD_OUT_SEEDS, spacing_mm: float = 2.0, copies: bool = True
) -> dict:
    model = SegmentationModel(model_folder)
    cases = []
    for seed in seeds:
        params = random_parameters(seed, spacing=(spacing_mm,) * 3)
        phantom = generate_phantom(params)
        outcome = segment_ct(model, phantom.image)
        case = {
            "seed": seed,
            "knobs": hard_knobs(params),
            "dice": dice_per_class(outcome.labels.array, phantom.labels.array),
            "seconds": outcome.record["total_seconds"],
            "qa_flags": [flag.code for flag in outcome.flags],
        }
        if model.localiser is not None:
            whole = segment_ct(model, phantom.image, auto_roi=False)
            case["full_pass"] = {
                "dice": dice_per_class(whole.labels.array, phantom.labels.array),
                "seconds": whole.record["total_seconds"],
                "agreement_with_auto_roi": dice_per_class(outcome.labels.array, whole.labels.array),
            }
        if copies:
            case |= _copies(model, params, seed)
        cases.append(case)
        print(f"{seed}: total {case['dice']['Total']:.3f}", file=sys.stderr, flush=True)
    return {"seeds": list(seeds), "spacing_mm": spacing_mm, "summary": summarise(cases), "cases": cases}


def _mean(values) -> float:
    return round(float(np.nanmean(values)), 4)


def summarise(cases: list[dict]) -> dict:
    names = list(cases[0]["dice"])
    summary = {
        "mean_dice": {name: _mean([case["dice"][name] for case in cases]) for name in names},
        "lowest_total": round(min(case["dice"]["Total"] for case in cases), 4),
        "mean_seconds": _mean([case["seconds"] for case in cases]),
    }
    if "full_pass" in cases[0]:
        full_total = _mean([case["full_pass"]["dice"]["Total"] for case in cases])
        summary["full_pass"] = {
            "mean_total": full_total,
            "total_cost_of_auto_roi": round(full_total - summary["mean_dice"]["Total"], 4),
            "mean_seconds": _mean([case["full_pass"]["seconds"] for case in cases]),
        }
    for copy in ("fine", "oblique", "mirrored"):
        if copy in cases[0]:
            summary[copy] = {
                kind: {name: _mean([case[copy][kind][name] for case in cases]) for name in names}
                for kind in cases[0][copy]
            }
            summary[copy]["lowest_prediction"] = {
                name: round(float(np.nanmin([case[copy]["prediction"][name] for case in cases])), 4) for name in names
            }
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="nnU-Net v2 model folder")
    parser.add_argument("--output", required=True, help="JSON file to write (refused if it exists)")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(HELD_OUT_SEEDS))
    parser.add_argument("--no-copies", action="store_true", help="skip the rotated and mirrored copies")
    args = parser.parse_args(argv)
    output = Path(args.output)
    if output.exists():
        raise SystemExit(f"{output} exists; choose another --output.")
    result = evaluate_segmentation_model(args.model, tuple(args.seeds), copies=not args.no_copies)
    output.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result["summary"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
