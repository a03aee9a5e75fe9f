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
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .dataset import nnunet_labels
from .geometry import Volume, rotation_matrix
from .phantom import PhantomParameters, generate_phantom, random_parameters, with_orientation
from .roi import crop, occupied_slices

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
    # Training-set mix (see training_phantom). Share of cases on a grid rotated 5..max_oblique_deg about a
    # random axis: the rotation is exact, the anatomy is evaluated at each rotated voxel's centre, so this is
    # rotation augmentation without resampling labels. Share cropped to the structures plus a random margin,
    # so the model also knows tight boxes (the automatic ROI's second pass). Hard-case knobs are drawn with
    # HARD_CASE_WEIGHTS when oversample_hard_cases is set, else as random_parameters draws them.
    oblique_share: float = 0.0
    max_oblique_deg: float = 25.0
    crop_share: float = 0.0
    oversample_hard_cases: bool = False
    # Share of cases made at a CT's finer spacing, each axis drawn from fine_spacing_mm, which nnU-Net's own
    # preprocessing then resamples to spacing_mm, as inference does: a model trained on 2 mm phantoms alone
    # lost the thin cartilage on 1 mm CTs (Dice 0.64 against 0.90 at 2 mm).
    fine_share: float = 0.0
    fine_spacing_mm: tuple[float, float] = (0.7, 1.5)
    plans_name: str = PLANS_NAME


# Demo localiser: the same recipe at 6 mm on a small network; it only has to find the structures' box.
LOCALISER_SETTINGS = DemoTrainingSettings(
    spacing_mm=6.0,
    patch_size=(48, 64, 64),
    features_per_stage=(8, 16, 32, 32),
    epochs=12,
    iterations_per_epoch=50,
    plans_name="nnUNetPlansCPULocaliser",
)

# Weights of the hard-case knobs when oversampling: about one case in six drew each in random_parameters;
# the long manubrium (the bundled model's worst case) now comes up in one case of four.
HARD_CASE_WEIGHTS = {
    "long_manubrium": 0.25,
    "calcified": 0.12,
    "split_cartilage": 0.12,
    "broad_ribcage": 0.1,
    "truncated": 0.13,
    "ordinary": 0.28,
}


def training_phantom_parameters(seed: int, settings: DemoTrainingSettings) -> tuple[PhantomParameters, float]:
    """Phantom knobs of training case ``seed`` and the margin (mm) to crop it to, 0 for the whole scan."""
    spacing = (settings.spacing_mm,) * 3
    rng = np.random.default_rng([seed, 4099])
    if settings.oversample_hard_cases:
        hard = str(rng.choice(list(HARD_CASE_WEIGHTS), p=list(HARD_CASE_WEIGHTS.values())))
        overrides: dict = {
            "sternal_tilt_deg": float(rng.uniform(8, 38)),
            "fused_manubriosternal": bool(rng.random() < 0.5),
            "fused_xiphisternal": bool(rng.random() < 0.5),
        }
        if hard == "long_manubrium":
            overrides["manubrium_body_ratio"] = float(rng.uniform(0.7, 0.95))
        elif hard == "calcified":
            overrides["calcification"] = float(rng.uniform(0.6, 1.0))
        elif hard == "split_cartilage":
            overrides["split_cartilage"] = (str(rng.choice(["left", "right"])), int(rng.integers(3, 8)))
        elif hard == "broad_ribcage":
            overrides["ribcage_width"] = float(rng.uniform(1.2, 1.35))
        elif hard == "truncated":
            side = "truncate_superior_mm" if rng.random() < 0.5 else "truncate_inferior_mm"
            overrides[side] = float(rng.uniform(30, 70))
        params = random_parameters(seed, hard_cases=False, spacing=spacing, **overrides)
    else:
        params = random_parameters(seed, spacing=spacing)
    if rng.random() < settings.oblique_share:
        angle = float(rng.uniform(5.0, settings.max_oblique_deg))
        params = with_orientation(params, rotation_matrix(rng.normal(size=3), angle))
    margin = float(rng.uniform(10.0, 40.0)) if rng.random() < settings.crop_share else 0.0
    # A stream of its own, so that adding fine cases leaves every other draw of a seed as it was.
    fine = np.random.default_rng([seed, 4099, 1])
    if fine.random() < settings.fine_share:
        params = replace(params, spacing=tuple(float(v) for v in fine.uniform(*settings.fine_spacing_mm, size=3)))
    return params, margin


def crop_to_structures(image: Volume, labels: Volume, margin_mm: float) -> tuple[Volume, Volume]:
    """Image and labels cropped to the labelled voxels' index box plus ``margin_mm`` on every side."""
    occupied = occupied_slices(labels.array)
    if occupied is None:
        return image, labels
    pad = np.ceil(margin_mm / labels.geometry.spacing[::-1]).astype(int)  # [k, j, i]
    slices = tuple(slice(max(part.start - int(step), 0), min(part.stop + int(step), size))
                   for part, step, size in zip(occupied, pad, labels.array.shape, strict=True))
    return crop(image, slices), crop(labels, slices)


def write_phantom_raw_dataset(raw_root: Path, settings: DemoTrainingSettings) -> Path:
    """Phantom cases in nnU-Net's raw layout: imagesTr/<case>_0000.nrrd, labelsTr/<case>.nrrd, dataset.json."""
    folder = raw_root / DATASET_NAME
    (folder / "imagesTr").mkdir(parents=True, exist_ok=False)
    (folder / "labelsTr").mkdir()
    for number in range(settings.training_cases):
        seed = settings.first_seed + number
        params, margin = training_phantom_parameters(seed, settings)
        phantom = generate_phantom(params)
        image, labels = crop_to_structures(phantom.image, phantom.labels, margin) if margin else (
            phantom.image, phantom.labels)
        case = f"phantom{seed:04d}"
        sitk.WriteImage(image.to_sitk(), str(folder / "imagesTr" / f"{case}_0000{FILE_ENDING}"), True)
        sitk.WriteImage(labels.to_sitk(), str(folder / "labelsTr" / f"{case}{FILE_ENDING}"), True)
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
    plans["plans_name"] = settings.plans_name
    configuration = plans["configurations"][CONFIGURATION]
    configuration["data_identifier"] = f"{settings.plans_name}_{CONFIGURATION}"
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
    (folder / f"{settings.plans_name}.json").write_text(json.dumps(plans, indent=1))


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
    if not (folders["nnUNet_preprocessed"] / DATASET_NAME / f"{settings.plans_name}_{CONFIGURATION}").is_dir():
        timings |= _prepare_dataset(folders, settings)

    started = time.perf_counter()
    trainer = _train(folders["nnUNet_preprocessed"], settings)
    timings["training_s"] = time.perf_counter() - started
    export_model_folder(Path(trainer.output_folder_base), output_model, settings, timings)
    return timings


def _focused_data_loader_class(label: int, share: float):
    """nnU-Net's data loader, except that ``share`` of the foreground-forced patches centre on ``label``."""
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
    # A localiser trained in the same work folder reuses the segmentation model's phantoms and fingerprint.
    if not (folders["nnUNet_raw"] / DATASET_NAME).is_dir():
        write_phantom_raw_dataset(folders["nnUNet_raw"], settings)
    timings = {"phantoms_s": time.perf_counter() - started}
    started = time.perf_counter()
    if not (folders["nnUNet_preprocessed"] / DATASET_NAME / "dataset_fingerprint.json").is_file():
        extract_fingerprints([DATASET_ID], num_processes=settings.threads, check_dataset_integrity=True)
    if not (folders["nnUNet_preprocessed"] / DATASET_NAME / "nnUNetPlans.json").is_file():
        plan_experiments([DATASET_ID])
    _shrink_plans(folders["nnUNet_preprocessed"], settings)
    preprocess([DATASET_ID], settings.plans_name, (CONFIGURATION,), (settings.threads,))
    timings["plan_and_preprocess_s"] = time.perf_counter() - started
    return timings


def _train(preprocessed: Path, settings: DemoTrainingSettings):
    import torch

    folder = preprocessed / DATASET_NAME
    plans = json.loads((folder / f"{settings.plans_name}.json").read_text())
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


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--work", required=True, help="scratch folder for nnU-Net's raw, preprocessed and results")
    parser.add_argument("--output", required=True, help="model folder to create")
    parser.add_argument("--localiser", action="store_true",
                        help="train the coarse localiser (6 mm, small network) instead of the segmentation model; "
                        "put its folder into the segmentation model's folder as 'localiser'")
    parser.add_argument("--cases", type=int)
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--iterations", type=int)
    parser.add_argument("--xiphoid-patch-share", type=float)
    parser.add_argument("--xiphoid-loss-weight", type=float)
    parser.add_argument("--oblique-share", type=float, help="share of training cases on a rotated grid")
    parser.add_argument("--max-oblique-deg", type=float)
    parser.add_argument("--crop-share", type=float, help="share of training cases cropped to the structures")
    parser.add_argument("--fine-share", type=float,
                        help="share of training cases made at a CT's spacing (--fine-spacing), resampled by nnU-Net")
    parser.add_argument("--fine-spacing", type=float, nargs=2, dest="fine_spacing_mm", metavar=("LOW", "HIGH"))
    parser.add_argument("--oversample-hard-cases", action="store_true", default=None)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--initial-weights", help="checkpoint_final.pth of a stripped model folder to start from")
    args = parser.parse_args(argv)
    names = {"cases": "training_cases", "iterations": "iterations_per_epoch"}
    given = {names.get(key, key): value for key, value in vars(args).items()
             if value is not None and key not in ("work", "output", "localiser")}
    settings = replace(LOCALISER_SETTINGS if args.localiser else DemoTrainingSettings(), **given)
    timings = train_demo_model(Path(args.work), Path(args.output), settings)
    print(json.dumps(timings, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
