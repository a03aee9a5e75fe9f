"""A CT of real size, step by step: inference before and after issue 17, in one run, with a ratio per step.

The CT is ``sternum-ssm phantom --spacing 0.7 0.7 1.0 --plain`` (about 512 x 470 x 297 voxels), generated
here or read with ``--ct``. Before is nnU-Net's own path as the model's plans name it (scipy resampling to
2 mm and back, softmax and argmax at full resolution: what ``predict`` ran until issue 17). After is what
``SegmentationModel.predict`` runs now: the argmax at network resolution with logits interpolated only on
label borders (torch), and the CT resampled to 2 mm either as the plans name it (scipy, cubic: the accurate
preset) or by nnU-Net's torch resampling (linear: the fast preset). All three use the fast preset's network
settings and run the network once each (their inputs differ slightly).

Model load, post-processing, QA and writing the .seg.nrrd are the same code in both and are timed once.
Printed: seconds per step, before/after ratios, ``uptime`` (the machine is shared: compare ratios),
and the Dice of after against before and of both against the phantom's truth.
Not a test: ``.venv/bin/python bench/bench_realsize_ct.py [--ct FILE]``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
from nnunetv2.inference.export_prediction import convert_predicted_logits_to_segmentation_with_correct_shape
from SternumSSMLib.geometry import Volume, orientation_direction
from SternumSSMLib.metrics import dice_per_class
from SternumSSMLib.phantom import PhantomParameters, generate_phantom, with_orientation
from SternumSSMLib.postprocess import postprocess
from SternumSSMLib.qa import qa_flags
from SternumSSMLib.segmentation_inference import (
    SegmentationModel,
    _inference_configuration,
    _labels_on_input_grid,
    to_model_axes,
)
from SternumSSMLib.segmentation_nodes import write_segmentation_file


class Steps:
    """Seconds per named step, in the order first timed."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def time(self, name: str, function, *args):
        started = time.perf_counter()
        result = function(*args)
        self.seconds[name] = time.perf_counter() - started
        return result


def real_size_ct(path: str | None) -> tuple[Volume, np.ndarray | None]:
    """The CT and, when generated here, its true labels."""
    if path:
        return Volume.from_sitk(sitk.ReadImage(path)), None
    params = with_orientation(PhantomParameters(seed=0), orientation_direction("LPS"), spacing=(0.7, 0.7, 1.0))
    phantom = generate_phantom(params)
    return phantom.image, phantom.labels.array


def our_values(model: SegmentationModel, labels: np.ndarray) -> np.ndarray:
    lookup = np.zeros(max(int(labels.max()), max(model.folder.label_mapping)) + 1, dtype=np.uint8)
    for model_value, value in model.folder.label_mapping.items():
        lookup[model_value] = value
    return lookup[labels]


def before(model: SegmentationModel, ct: Volume, steps: Steps) -> np.ndarray:
    predictor = model._predictor
    configuration = predictor.configuration_manager  # as the plans name it: scipy resampling
    array, spacing, back = steps.time("axes to the model's", to_model_axes, ct)
    data, _, properties = steps.time(
        "preprocessing (crop, normalise, resample to 2 mm)",
        configuration.preprocessor_class(verbose=False).run_case_npy,
        array[None].astype(np.float32),
        None,
        {"spacing": list(spacing)},
        predictor.plans_manager,
        configuration,
        predictor.dataset_json,
    )
    logits = steps.time("network", lambda: predictor.predict_logits_from_preprocessed_data(torch.from_numpy(data)))
    labels, _ = steps.time(
        "back to the CT grid (resample, argmax)",
        convert_predicted_logits_to_segmentation_with_correct_shape,
        logits.cpu(),
        predictor.plans_manager,
        configuration,
        predictor.label_manager,
        properties,
        True,
    )
    return steps.time("our label values and axes", lambda: back(our_values(model, labels)))


def after(model: SegmentationModel, ct: Volume, steps: Steps, input_resampling: str) -> np.ndarray:
    predictor = model._predictor
    threads = torch.get_num_threads()
    configuration = _inference_configuration(predictor.configuration_manager, threads, input_resampling)
    array, spacing, back = steps.time("axes to the model's", to_model_axes, ct)
    data, _, properties = steps.time(
        "preprocessing (crop, normalise, resample to 2 mm)",
        configuration.preprocessor_class(verbose=False).run_case_npy,
        array[None],
        None,
        {"spacing": list(spacing)},
        predictor.plans_manager,
        configuration,
        predictor.dataset_json,
    )
    logits = steps.time("network", lambda: predictor.predict_logits_from_preprocessed_data(torch.from_numpy(data)))
    labels = steps.time(
        "back to the CT grid (resample, argmax)",
        _labels_on_input_grid,
        logits.cpu(),
        configuration,
        predictor.plans_manager,
        properties,
    )
    return steps.time("our label values and axes", lambda: back(our_values(model, labels)))


def dice_line(name: str, prediction: np.ndarray, reference: np.ndarray) -> str:
    return f"{name}: " + ", ".join(f"{k} {v:.4f}" for k, v in dice_per_class(prediction, reference).items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ct", help="a CT file instead of generating the real-size phantom")
    args = parser.parse_args()
    print(f"load: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")
    print(f"torch threads {torch.get_num_threads()}, cores {os.cpu_count()}")
    ct, truth = real_size_ct(args.ct)
    print(f"CT {ct.array.shape[::-1]} voxels (i, j, k) at {ct.geometry.spacing} mm")
    once = Steps()
    model = once.time("model load", SegmentationModel)
    old_steps, plans_steps, new_steps = Steps(), Steps(), Steps()
    old = before(model, ct, old_steps)
    plans = after(model, ct, plans_steps, "plans")
    new = after(model, ct, new_steps, "torch")
    labels = Volume(new, ct.geometry)
    cleaned, _ = once.time("post-processing", postprocess, labels)
    once.time("QA flags", qa_flags, cleaned, None, ct)
    with tempfile.TemporaryDirectory() as folder:
        once.time("writing the .seg.nrrd", write_segmentation_file, cleaned, Path(folder, "ct.seg.nrrd"), "ct")

    print("\n| step | before s | after, plans input s | after, torch input s | before/plans | before/torch |")
    print("|---|---|---|---|---|---|")
    for name, seconds in old_steps.seconds.items():
        a, b = plans_steps.seconds[name], new_steps.seconds[name]
        print(f"| {name} | {seconds:.2f} | {a:.2f} | {b:.2f} | {seconds / a:.1f} | {seconds / b:.1f} |")
    old_total, new_total = sum(old_steps.seconds.values()), sum(new_steps.seconds.values())
    plans_total = sum(plans_steps.seconds.values())
    print(
        f"| **inference** | {old_total:.2f} | {plans_total:.2f} | {new_total:.2f} | {old_total / plans_total:.2f} | "
        f"{old_total / new_total:.2f} |"
    )
    common = sum(once.seconds.values())
    for name, seconds in once.seconds.items():
        print(f"| {name} (same code) | {seconds:.2f} | | {seconds:.2f} | | 1 |")
    print(
        f"| **end to end** | {old_total + common:.2f} | {plans_total + common:.2f} | {new_total + common:.2f} | "
        f"{(old_total + common) / (plans_total + common):.2f} | {(old_total + common) / (new_total + common):.2f} |"
    )
    network = new_steps.seconds["network"]
    print(f"\nafter: around the network {new_total - network:.2f} s, network {network:.2f} s")
    print(f"after, plans input: around the network {plans_total - plans_steps.seconds['network']:.2f} s")
    print(dice_line("\nDice after (plans input) vs before", plans, old))
    print(dice_line("Dice after (torch input) vs before", new, old))
    if truth is not None:
        print(dice_line("Dice before vs truth", old, truth))
        print(dice_line("Dice after (plans input) vs truth", plans, truth))
        print(dice_line("Dice after (torch input) vs truth", new, truth))
    print(f"load: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")


if __name__ == "__main__":
    main()
