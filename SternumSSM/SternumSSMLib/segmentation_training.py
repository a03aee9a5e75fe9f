"""Train the small demo nnU-Net v2 model on synthetic phantoms, on a CPU, with nnU-Net's own pipeline.

Steps (each nnU-Net's own code): write a raw dataset of phantom cases, extract the
fingerprint, plan, shrink the 3d_fullres plan to a CPU-sized network, preprocess, train
a CPU-sized variant of nnU-Net's trainer in-process for a set number of iterations, then export a
model folder stripped to what inference needs, loadable with ``torch.load(weights_only=True)``.

nnU-Net reads its ``nnUNet_raw/_preprocessed/_results`` folders from the environment when
``nnunetv2.paths`` is first imported, so :func:`train_demo_model` sets them before importing
any of nnU-Net's training code and refuses to run if that import already happened elsewhere.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import SimpleITK as sitk

from .dataset import nnunet_labels
from .phantom import generate_phantom, random_parameters

DATASET_ID = 801
DATASET_NAME = f"Dataset{DATASET_ID:03d}_SternumPhantom"
PLANS_NAME = "nnUNetPlansCPUDemo"
CONFIGURATION = "3d_fullres"
FILE_ENDING = ".nrrd"


@dataclass(frozen=True)
class DemoTrainingSettings:
    """The knobs of the demo model; the defaults made the bundled model."""

    training_cases: int = 40
    first_seed: int = 1000
    spacing_mm: float = 2.0
    patch_size: tuple[int, int, int] = (64, 80, 80)
    features_per_stage: tuple[int, ...] = (8, 16, 32, 48, 64)
    batch_size: int = 2
    epochs: int = 25
    iterations_per_epoch: int = 40
    validation_iterations: int = 2
    threads: int = 2
    # Share of the foreground-centred patches centred on the xiphoid (the rest pick a class
    # uniformly, as nnU-Net does). The xiphoid is ~1 ml, 127 voxels at 2 mm: uniform sampling
    # left it unlearned after 1000 iterations.
    xiphoid_patch_share: float = 0.0
    # Cross-entropy weight of the xiphoid class relative to the others (1 = nnU-Net's unweighted loss).
    xiphoid_loss_weight: float = 1.0
    # Weights to start from (a stripped model folder's checkpoint); None trains from scratch.
    initial_weights: str | None = None


def write_phantom_raw_dataset(raw_root: Path, settings: DemoTrainingSettings) -> Path:
    """Phantom cases in nnU-Net's raw layout: imagesTr/<case>_0000.nrrd, labelsTr/<case>.nrrd, dataset.json."""
    folder = raw_root / DATASET_NAME
    (folder / "imagesTr").mkdir(parents=True, exist_ok=False)
    (folder / "labelsTr").mkdir()
    spacing = (settings.spacing_mm,) * 3
    for number in range(settings.training_cases):
        seed = settings.first_seed + number
        phantom = generate_phantom(random_parameters(seed, spacing=spacing))
        case = f"phantom{seed:04d}"
        sitk.WriteImage(phantom.image.to_sitk(), str(folder / "imagesTr" / f"{case}_0000{FILE_ENDING}"), True)
        sitk.WriteImage(phantom.labels.to_sitk(), str(folder / "labelsTr" / f"{case}{FILE_ENDING}"), True)
    dataset = {
        "channel_names": {"0": "CT"},
        "labels": nnunet_labels(),
        "numTraining": settings.training_cases,
        "file_ending": FILE_ENDING,
    }
    (folder / "dataset.json").write_text(json.dumps(dataset, indent=1))
    return folder


def _set_nnunet_environment(work: Path, threads: int) -> dict[str, Path]:
    if "nnunetv2.paths" in sys.modules:
        raise RuntimeError("nnU-Net's paths were imported before training set them; run training in a fresh process.")
    folders = {name: work / name for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}
    for name, folder in folders.items():
        folder.mkdir(parents=True, exist_ok=True)
        os.environ[name] = str(folder)
    # nnU-Net's own variable names.
    os.environ["nnUNet_def_n_proc"] = str(threads)  # noqa: SIM112
    os.environ["nnUNet_n_proc_DA"] = str(threads)  # noqa: SIM112
    return folders


def _shrink_plans(preprocessed: Path, settings: DemoTrainingSettings) -> None:
    """Copy nnU-Net's default plan into a CPU-sized one: smaller patch and network, same pipeline."""
    folder = preprocessed / DATASET_NAME
    plans = json.loads((folder / "nnUNetPlans.json").read_text())
    plans["plans_name"] = PLANS_NAME
    configuration = plans["configurations"][CONFIGURATION]
    configuration["data_identifier"] = f"{PLANS_NAME}_{CONFIGURATION}"
    configuration["patch_size"] = list(settings.patch_size)
    configuration["batch_size"] = settings.batch_size
    stages = len(settings.features_per_stage)
    architecture = configuration["architecture"]["arch_kwargs"]
    architecture["n_stages"] = stages
    architecture["features_per_stage"] = list(settings.features_per_stage)
    architecture["kernel_sizes"] = [[3, 3, 3]] * stages
    architecture["strides"] = [[1, 1, 1]] + [[2, 2, 2]] * (stages - 1)
    architecture["n_conv_per_stage"] = [2] * stages
    architecture["n_conv_per_stage_decoder"] = [2] * (stages - 1)
    configuration["spacing"] = [settings.spacing_mm] * 3
    for name in list(plans["configurations"]):
        if name != CONFIGURATION:
            del plans["configurations"][name]
    (folder / f"{PLANS_NAME}.json").write_text(json.dumps(plans, indent=1))


def train_demo_model(work: Path, output_model: Path, settings: DemoTrainingSettings | None = None) -> dict:
    """Run the whole recipe in ``work`` and write the stripped model folder to ``output_model``."""
    settings = settings or DemoTrainingSettings()
    work, output_model = Path(work), Path(output_model)
    if output_model.exists():
        raise FileExistsError(f"{output_model} exists; remove it or choose another output folder.")
    folders = _set_nnunet_environment(work, settings.threads)
    import torch

    torch.set_num_threads(settings.threads)
    timings: dict[str, float] = {}
    if not (folders["nnUNet_preprocessed"] / DATASET_NAME / f"{PLANS_NAME}_{CONFIGURATION}").is_dir():
        timings |= _prepare_dataset(folders, settings)

    started = time.perf_counter()
    trainer = _train(folders["nnUNet_preprocessed"], settings)
    timings["training_s"] = time.perf_counter() - started
    export_model_folder(Path(trainer.output_folder_base), output_model, settings, timings)
    return timings


def _focused_data_loader_class(label: int, share: float):
    """nnU-Net's data loader, except that ``share`` of the foreground-forced patches centre on ``label``."""
    import numpy as np
    from nnunetv2.training.dataloading.data_loader import nnUNetDataLoader

    class FocusedDataLoader(nnUNetDataLoader):
        def get_bbox(self, data_shape, force_fg, class_locations, overwrite_class=None, verbose=False):
            wanted = force_fg and overwrite_class is None and class_locations
            if wanted and len(class_locations.get(label, ())) > 0 and np.random.random() < share:
                overwrite_class = label
            return super().get_bbox(data_shape, force_fg, class_locations, overwrite_class, verbose)

    return FocusedDataLoader


def _cpu_demo_trainer_class(xiphoid_patch_share: float = 0.0, xiphoid_loss_weight: float = 1.0):
    """nnU-Net's trainer made practical on 2 CPU cores: no augmentation (the phantoms already vary),
    Adam instead of SGD (converges in hundreds rather than thousands of iterations), two
    thirds of the patches centred on foreground (the sternum and cartilage are small), and
    optionally a fixed share of those centred on the xiphoid and a heavier cross-entropy weight for it."""
    import nnunetv2.training.nnUNetTrainer.nnUNetTrainer as trainer_module
    import torch
    from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler
    from nnunetv2.training.nnUNetTrainer.variants.data_augmentation.nnUNetTrainerNoDA import nnUNetTrainerNoDA

    from .anatomy import label_scheme

    CPU = torch.device("cpu")
    xiphoid = label_scheme().by_name("Xiphoid").value

    class CpuDemoTrainer(nnUNetTrainerNoDA):
        # nnU-Net records its constructor arguments by name, so the signature must stay explicit.
        def __init__(self, plans: dict, configuration: str, fold, dataset_json: dict, device=CPU):
            super().__init__(plans, configuration, fold, dataset_json, device)
            self.initial_lr = 1e-3
            self.oversample_foreground_percent = 0.66

        def configure_optimizers(self):
            optimizer = torch.optim.Adam(self.network.parameters(), self.initial_lr, weight_decay=self.weight_decay)
            return optimizer, PolyLRScheduler(optimizer, self.initial_lr, self.num_epochs)

        def _build_loss(self):
            loss = super()._build_loss()
            if xiphoid_loss_weight != 1.0:
                class_weights = torch.ones(len(self.label_manager.all_labels))
                class_weights[xiphoid] = xiphoid_loss_weight
                # DeepSupervisionWrapper -> DC_and_CE_loss -> nn.CrossEntropyLoss, whose weight is a buffer.
                loss.loss.ce.weight = class_weights
            return loss

        def get_dataloaders(self):
            if xiphoid_patch_share <= 0:
                return super().get_dataloaders()
            # nnU-Net builds its loader from a module-level name and offers no hook for class weights.
            original = trainer_module.nnUNetDataLoader
            trainer_module.nnUNetDataLoader = _focused_data_loader_class(xiphoid, xiphoid_patch_share)
            try:
                return super().get_dataloaders()
            finally:
                trainer_module.nnUNetDataLoader = original

    return CpuDemoTrainer


def _prepare_dataset(folders: dict[str, Path], settings: DemoTrainingSettings) -> dict[str, float]:
    """Phantoms in the raw layout, then nnU-Net's fingerprint, plan (shrunk) and preprocessing."""
    from nnunetv2.experiment_planning.plan_and_preprocess_api import (
        extract_fingerprints,
        plan_experiments,
        preprocess,
    )

    started = time.perf_counter()
    write_phantom_raw_dataset(folders["nnUNet_raw"], settings)
    timings = {"phantoms_s": time.perf_counter() - started}
    started = time.perf_counter()
    extract_fingerprints([DATASET_ID], num_processes=settings.threads, check_dataset_integrity=True)
    plan_experiments([DATASET_ID])
    _shrink_plans(folders["nnUNet_preprocessed"], settings)
    preprocess([DATASET_ID], PLANS_NAME, (CONFIGURATION,), (settings.threads,))
    timings["plan_and_preprocess_s"] = time.perf_counter() - started
    return timings


def _train(preprocessed: Path, settings: DemoTrainingSettings):
    import torch

    folder = preprocessed / DATASET_NAME
    plans = json.loads((folder / f"{PLANS_NAME}.json").read_text())
    dataset_json = json.loads((folder / "dataset.json").read_text())
    plans["continue_training"] = False
    trainer_class = _cpu_demo_trainer_class(settings.xiphoid_patch_share, settings.xiphoid_loss_weight)
    trainer = trainer_class(plans, CONFIGURATION, "all", dataset_json, device=torch.device("cpu"))
    trainer.num_epochs = settings.epochs
    trainer.num_iterations_per_epoch = settings.iterations_per_epoch
    trainer.num_val_iterations_per_epoch = settings.validation_iterations
    trainer.save_every = max(settings.epochs // 5, 1)
    if settings.initial_weights:
        trainer.initialize()
        weights = torch.load(settings.initial_weights, map_location="cpu", weights_only=True)["network_weights"]
        trainer.network.load_state_dict({name: tensor.float() for name, tensor in weights.items()})
    trainer.run_training()
    return trainer


def _compact(tensor):
    return tensor.detach().clone().half() if tensor.is_floating_point() else tensor.detach().clone()


def export_model_folder(results: Path, output: Path, settings: DemoTrainingSettings, timings: dict) -> None:
    """Model folder with dataset.json, plans.json and fold_all/checkpoint_final.pth (weights only).

    The checkpoint keeps the network weights, the trainer name the architecture builder is
    found under, the configuration and the mirroring axes; no optimizer state, no pickled objects.
    """
    import torch

    checkpoint = torch.load(results / "fold_all" / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    stripped = {
        # Half precision halves the file; load_state_dict casts back to the network's float32.
        "network_weights": {name: _compact(tensor) for name, tensor in checkpoint["network_weights"].items()},
        # The architecture is nnUNetTrainer's; the demo trainer only changed optimiser, sampling and augmentation.
        "trainer_name": "nnUNetTrainer",
        "init_args": {"configuration": CONFIGURATION, "fold": "all"},
        "inference_allowed_mirroring_axes": None,
        "current_epoch": int(checkpoint["current_epoch"]),
    }
    staging = output.with_name(output.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "fold_all").mkdir(parents=True)
    torch.save(stripped, staging / "fold_all" / "checkpoint_final.pth")
    shutil.copy(results / "dataset.json", staging / "dataset.json")
    shutil.copy(results / "plans.json", staging / "plans.json")
    record = {
        "settings": settings.__dict__,
        "timings": timings,
        "trainer": "nnUNetTrainerNoDA with Adam (lr 1e-3, poly decay) and 66% foreground patches; no mirroring",
    }
    if settings.initial_weights:
        previous = Path(settings.initial_weights).parent.parent / "training_record.json"
        if previous.is_file():
            record["previous_stage"] = json.loads(previous.read_text())
    (staging / "training_record.json").write_text(json.dumps(record, indent=1, default=list) + "\n")
    staging.rename(output)


HELD_OUT_SEEDS = tuple(range(5000, 5010))


def evaluate_on_phantoms(model_folder: Path, seeds: tuple[int, ...] = HELD_OUT_SEEDS, spacing_mm: float = 2.0) -> dict:
    """Dice per class on held-out phantoms (hard-case knobs included), after post-processing."""
    import numpy as np

    from .metrics import dice_per_class
    from .segment import segment_ct
    from .segmentation_inference import SegmentationModel

    model = SegmentationModel(model_folder)
    cases = []
    for seed in seeds:
        params = random_parameters(seed, spacing=(spacing_mm,) * 3)
        phantom = generate_phantom(params)
        outcome = segment_ct(model, phantom.image)
        scores = dice_per_class(outcome.labels.array, phantom.labels.array)
        cases.append({"seed": seed, "dice": scores, "seconds": outcome.record["total_seconds"],
                      "qa_flags": [flag.code for flag in outcome.flags], "knobs": _hard_knobs(params)})
    names = list(cases[0]["dice"])
    mean = {name: float(np.nanmean([case["dice"][name] for case in cases])) for name in names}
    return {"seeds": list(seeds), "spacing_mm": spacing_mm, "mean_dice": mean, "cases": cases}


def _hard_knobs(params) -> list[str]:
    knobs = []
    if params.calcification > 0.5:
        knobs.append("calcified")
    if params.manubrium_body_ratio > 0.7:
        knobs.append("long manubrium")
    if params.split_cartilage is not None:
        knobs.append("split cartilage")
    if params.ribcage_width > 1.2:
        knobs.append("broad ribcage")
    if params.truncate_superior_mm > 0:
        knobs.append("truncated")
    return knobs


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--work", required=True, help="scratch folder for nnU-Net's raw, preprocessed and results")
    parser.add_argument("--output", required=True, help="model folder to create")
    parser.add_argument("--cases", type=int, default=DemoTrainingSettings.training_cases)
    parser.add_argument("--epochs", type=int, default=DemoTrainingSettings.epochs)
    parser.add_argument("--iterations", type=int, default=DemoTrainingSettings.iterations_per_epoch)
    parser.add_argument("--xiphoid-patch-share", type=float, default=DemoTrainingSettings.xiphoid_patch_share)
    parser.add_argument("--xiphoid-loss-weight", type=float, default=DemoTrainingSettings.xiphoid_loss_weight)
    parser.add_argument("--threads", type=int, default=DemoTrainingSettings.threads)
    parser.add_argument("--initial-weights", help="checkpoint_final.pth of a stripped model folder to start from")
    args = parser.parse_args(argv)
    settings = DemoTrainingSettings(
        training_cases=args.cases,
        epochs=args.epochs,
        iterations_per_epoch=args.iterations,
        xiphoid_patch_share=args.xiphoid_patch_share,
        xiphoid_loss_weight=args.xiphoid_loss_weight,
        threads=args.threads,
        initial_weights=args.initial_weights,
    )
    timings = train_demo_model(Path(args.work), Path(args.output), settings)
    print(json.dumps(timings, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
