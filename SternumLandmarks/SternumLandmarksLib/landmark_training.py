"""Train the landmark SpatialConfiguration-Net on label maps with landmarks.

Cases come from a dataset folder written by the export (``labelsTr/<case>`` plus
``landmarks/<case>.csv``) or from generated phantoms. Every sample gets one random
coordinate-space augmentation (see ``landmark_preprocessing``). After each validation the
network with the best validation mean inter-point error (IPE) is written as the model
folder (``config.json`` + ``model.pth``), as the study kept its best checkpoint.
``training_log.csv`` gets one row per epoch and ``training_curves.png`` plots it.
``checkpoint_last.pth`` holds everything needed to resume after an interruption. At the end, the
kept model's confidence thresholds are calibrated on the validation cases (``calibration.json``,
see ``landmark_calibration``). Before the first epoch the expected time per epoch is measured
and printed.
"""

from __future__ import annotations

import csv
import io
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from SternumSSMLib.anatomy import default_protocol
from SternumSSMLib.atomic import atomic_output_path, write_text_atomic
from SternumSSMLib.geometry import PointSet, Volume

from .landmark_calibration import Calibration, calibrate_thresholds, write_calibration
from .landmark_prediction import LandmarkModel, refine_peaks
from .landmark_preprocessing import PreparedCase, prepare_case, random_augmentation
from .scn_config import SCNConfig
from .scn_model import (
    CONFIG_FILE,
    HeatmapRenderer,
    build_network,
    learning_rate_factor,
    make_optimizer,
    save_model_folder,
    scn_loss,
)

RESUME_FILE = "checkpoint_last.pth"
LOG_FILE = "training_log.csv"
PLOT_FILE = "training_curves.png"
LOG_COLUMNS = ("epoch", "learning_rate", "train_loss", "sigma_mean", "val_mean_ipe_mm", "val_median_ipe_mm", "seconds")


@dataclass(frozen=True)
class LandmarkCase:
    """A label map, its landmarks (LPS, protocol order, NaN = missing) and, when read, its CT."""

    case_id: str
    labels: Volume
    landmarks: PointSet
    ct: Volume | None = None


def read_dataset_cases(
    folder: Path | str, case_ids: list[str] | None = None, with_ct: bool = False
) -> list[LandmarkCase]:
    """Training cases of a dataset folder written by the export: label map and ``landmarks/<case>.csv``,
    and the CT (``imagesTr``) when ``with_ct``.

    Cases without a landmark file are skipped (they still train the segmentation).
    """
    import SimpleITK as sitk
    from SternumSSMLib.dataset import open_dataset
    from SternumSSMLib.landmark_files import read_landmarks_csv

    dataset = open_dataset(folder)
    landmarks_folder = dataset.root / dataset.landmark_folder("train")
    protocol_ids = default_protocol().ids
    cases = []
    for csv_path in sorted(landmarks_folder.glob("*.csv")):
        case_id = csv_path.stem
        if case_ids is not None and case_id not in case_ids:
            continue
        label_path = dataset.root / dataset.relative_path("labels", case_id, "train")
        if not label_path.is_file():
            raise FileNotFoundError(f"{csv_path} has no label map {label_path.name}; re-export the case.")
        labels = Volume.from_sitk(sitk.ReadImage(str(label_path)))
        landmarks = read_landmarks_csv(csv_path, "LPS").to("LPS")
        if landmarks.names != protocol_ids:
            raise ValueError(f"{csv_path} does not list the protocol's {len(protocol_ids)} landmarks in order.")
        ct = None
        if with_ct:
            image_path = dataset.root / dataset.relative_path("image", case_id, "train")
            if not image_path.is_file():
                raise FileNotFoundError(f"{csv_path} has no CT {image_path.name}; re-export the case.")
            ct = Volume.from_sitk(sitk.ReadImage(str(image_path)))
        cases.append(LandmarkCase(case_id, labels, landmarks, ct))
    if not cases:
        raise ValueError(f"{folder} has no case with landmarks; export cases with their landmarks first.")
    return cases


def phantom_cases(seeds: list[int] | range, spacing_mm: float = 2.0, **overrides) -> list[LandmarkCase]:
    """Generated phantoms (hard-case knobs drawn at random) as landmark training cases."""
    from SternumSSMLib.phantom import generate_phantom, random_parameters

    cases = []
    for seed in seeds:
        phantom = generate_phantom(random_parameters(seed, spacing=(spacing_mm,) * 3, **overrides))
        cases.append(LandmarkCase(f"phantom{seed:04d}", phantom.labels, phantom.landmarks, phantom.image))
    return cases


def split_cases(
    cases: list[LandmarkCase], validation_fraction: float, seed: int = 0
) -> tuple[list[LandmarkCase], list[LandmarkCase]]:
    """A reproducible train/validation split; at least one case on each side when there are two or more."""
    order = np.random.default_rng(seed).permutation(len(cases))
    count = round(validation_fraction * len(cases))
    if len(cases) >= 2:
        count = min(max(count, 1), len(cases) - 1)
    validation = [cases[i] for i in sorted(order[:count])]
    training = [cases[i] for i in sorted(order[count:])]
    return training, validation


def _prepare(cases: list[LandmarkCase], config: SCNConfig) -> list[PreparedCase]:
    return [prepare_case(case.case_id, case.labels, case.landmarks.to("LPS").positions, config, case.ct)
            for case in cases]


def validation_errors(network, cases: list[PreparedCase], device: torch.device | None = None) -> np.ndarray:
    """IPE in mm, shape (cases, landmarks), of every heatmap's refined peak (placed or not); NaN where
    the ground truth is missing. Unplaced points count, so a model cannot improve by abstaining."""
    network.eval()
    errors = []
    with torch.no_grad():
        for case in cases:
            heatmaps = network(torch.from_numpy(case.channels)[None].to(device))[0].cpu().numpy()
            predicted = case.grid.index_to_lps(refine_peaks(heatmaps)[0])
            truth = case.grid.index_to_lps(case.landmarks_kji)
            errors.append(np.linalg.norm(predicted - truth, axis=1))
    network.train()
    return np.array(errors)


def _batch(cases: list[PreparedCase], rng: np.random.Generator, config: SCNConfig) -> tuple[torch.Tensor, torch.Tensor]:
    images, points = [], []
    for case in cases:
        augmentation = random_augmentation(rng, case.mask.shape, config.augmentation)
        images.append(np.stack([augmentation.image(channel) for channel in case.channels]))
        points.append(augmentation.points(case.landmarks_kji))
    image_batch = torch.from_numpy(np.stack(images).astype(np.float32))
    return image_batch, torch.from_numpy(np.stack(points).astype(np.float32))


def train_landmark_model(
    training: list[LandmarkCase],
    validation: list[LandmarkCase],
    output: Path | str,
    config: SCNConfig,
    show_progress: bool = True,
    threads: int | None = None,
    device: str = "auto",
    after_epoch: Callable[[dict], None] | None = None,
) -> dict:
    """Train (or resume) into ``output``; returns the best validation IPE summary.

    ``output`` must be new, or hold a ``checkpoint_last.pth`` of the same config to resume.
    ``after_epoch`` gets each epoch's log row once its resume state is on disk. ``device``: auto
    (CUDA when present, else CPU), cpu, cuda or mps; the same code runs on each.
    """
    from SternumSSMLib.devices import resolve_device

    output = Path(output)
    if threads:
        torch.set_num_threads(threads)
    landmark_ids = default_protocol().ids
    resume_path = output / RESUME_FILE
    if output.exists() and any(output.iterdir()) and not resume_path.is_file():
        raise FileExistsError(
            f"{output} already holds files but no {RESUME_FILE} to resume from; choose a new output folder."
        )
    output.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)
    network = build_network(config, len(landmark_ids))
    renderer = HeatmapRenderer(len(landmark_ids), config.sigma_initial, config.gamma)
    target_device = resolve_device(device)
    network.to(target_device)
    renderer.to(target_device)
    optimizer = make_optimizer(network, renderer, config)
    state = {"epoch": 0, "best_mean_ipe_mm": float("inf"), "best_epoch": -1}
    rng = np.random.default_rng(config.seed)
    if resume_path.is_file():
        checkpoint = torch.load(resume_path, map_location="cpu", weights_only=True)
        saved_config = json.loads(checkpoint["config_json"])
        if saved_config != json.loads(json.dumps(config.to_dict())):
            raise ValueError(f"{resume_path} was trained with another config; resume with the same config file.")
        network.load_state_dict(checkpoint["network"])
        renderer.load_state_dict(checkpoint["renderer"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        state = json.loads(checkpoint["state_json"])
        rng.bit_generator.state = json.loads(checkpoint["rng_json"])
        torch.set_rng_state(checkpoint["torch_rng"])

    training_cases, validation_cases = _prepare(training, config), _prepare(validation, config)
    iterations = config.iterations_per_epoch or max(len(training_cases) // config.batch_size, 1)
    if show_progress and state["epoch"] < config.epochs:
        seconds = iteration_seconds(network, renderer, training_cases, config, target_device)
        print(expected_time_text(seconds, iterations, config.epochs - state["epoch"], target_device), file=sys.stderr)
    progress = _progress_bar(config.epochs * iterations, state["epoch"] * iterations, show_progress)
    network.train()
    while state["epoch"] < config.epochs:
        epoch = state["epoch"]
        started = time.perf_counter()
        rate = config.learning_rate * learning_rate_factor(epoch, config)
        for group in optimizer.param_groups:
            group["lr"] = rate
        losses = []
        for _ in range(iterations):
            chosen = [training_cases[i] for i in rng.choice(len(training_cases), config.batch_size)]
            images, points = (tensor.to(target_device) for tensor in _batch(chosen, rng, config))
            target = renderer(points, config.grid_shape_kji)
            loss, _ = scn_loss(network(images), target, renderer, config)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
            progress.update(1)
            progress.set_description(f"epoch {epoch + 1}/{config.epochs} loss {np.mean(losses):.1f}")
        row = {"epoch": epoch + 1, "learning_rate": rate, "train_loss": float(np.mean(losses)),
               "sigma_mean": float(renderer.sigmas.detach().abs().mean()), "val_mean_ipe_mm": "",
               "val_median_ipe_mm": ""}
        if validation_cases and ((epoch + 1) % config.validate_every == 0 or epoch + 1 == config.epochs):
            errors = validation_errors(network, validation_cases, target_device)
            mean, median = float(np.nanmean(errors)), float(np.nanmedian(errors))
            row |= {"val_mean_ipe_mm": mean, "val_median_ipe_mm": median}
            if mean < state["best_mean_ipe_mm"]:
                state |= {"best_mean_ipe_mm": mean, "best_median_ipe_mm": median, "best_epoch": epoch + 1}
                record = {"best_epoch": epoch + 1, "validation_mean_ipe_mm": mean, "validation_median_ipe_mm": median,
                          "training_cases": [case.case_id for case in training],
                          "validation_cases": [case.case_id for case in validation]}
                save_model_folder(output, network, renderer, config, landmark_ids, record)
        row["seconds"] = time.perf_counter() - started
        _append_log(output / LOG_FILE, row)
        state["epoch"] = epoch + 1
        _save_resume_state(resume_path, network, renderer, optimizer, state, rng, config)
        if after_epoch is not None:
            after_epoch(row)
    progress.close()
    summary = {"model_folder": str(output), "config_file": str(output / CONFIG_FILE)}
    if validation_cases:
        calibration = calibrate_model_folder(output, validation_cases, device)
        summary["calibration"] = calibration.to_dict()
    else:
        save_model_folder(output, network, renderer, config, landmark_ids,
                          {"best_epoch": config.epochs, "note": "no validation cases: the last epoch is kept, and "
                           "the config's confidence thresholds are used uncalibrated"})
    plot_training_curves(output / LOG_FILE, output / PLOT_FILE)
    return state | summary


def calibrate_model_folder(folder: Path, cases: list[PreparedCase], device: str = "auto") -> Calibration:
    """Set the saved model's confidence thresholds from its validation cases (``calibration.json``)."""
    model = LandmarkModel(folder, device=device)
    confidence, errors = [], []
    for case in cases:
        prediction = model.decode(model.heatmaps(case.channels), case.grid)
        truth = case.grid.index_to_lps(case.landmarks_kji)
        confidence.append(prediction.confidence)
        errors.append(np.linalg.norm(prediction.peak_positions_lps - truth, axis=1))
    calibration = calibrate_thresholds(np.array(confidence), np.array(errors), [case.case_id for case in cases])
    write_calibration(folder, calibration)
    return calibration


def iteration_seconds(network, renderer, cases: list[PreparedCase], config: SCNConfig, device) -> float:
    """Seconds of one training iteration (batch, forward, backward; no weight update), timed on its second run
    so that one-off start-up costs do not count. The training's random streams are left as they were."""
    rng = np.random.default_rng(config.seed + 1)
    seconds = 0.0
    with torch.random.fork_rng(devices=None if device.type == "cuda" else []):  # None: every CUDA device
        for _ in range(2):
            started = time.perf_counter()
            chosen = [cases[i] for i in rng.choice(len(cases), config.batch_size)]
            images, points = (tensor.to(device) for tensor in _batch(chosen, rng, config))
            loss, _ = scn_loss(network(images), renderer(points, config.grid_shape_kji), renderer, config)
            loss.backward()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            seconds = time.perf_counter() - started
    network.zero_grad(set_to_none=True)
    renderer.zero_grad(set_to_none=True)
    return seconds


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("min", 60.0)):
        if seconds >= 2 * size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.1f} s"


def expected_time_text(iteration: float, iterations: int, epochs: int, device) -> str:
    epoch = iteration * iterations
    return (
        f"Expected time on {device}: about {_duration(epoch)} per epoch ({iterations} iterations of {iteration:.2f} s, "
        f"measured now), {_duration(epoch * epochs)} for the {epochs} epochs to go, plus validation. "
        "If that is too long, stop and choose --preset cpu or a smaller --config."
    )


def _save_resume_state(path: Path, network, renderer, optimizer, state: dict, rng, config: SCNConfig) -> None:
    checkpoint = {
        "network": network.state_dict(),
        "renderer": renderer.state_dict(),
        "optimizer": optimizer.state_dict(),
        "state_json": json.dumps(state),
        "rng_json": json.dumps(rng.bit_generator.state),
        "config_json": json.dumps(config.to_dict()),
        # Dropout draws from torch's generator; without its state a resumed run would diverge.
        "torch_rng": torch.get_rng_state(),
    }
    with atomic_output_path(path, overwrite=True) as temporary:
        torch.save(checkpoint, temporary)


def _append_log(path: Path, row: dict) -> None:
    existing = path.read_text() if path.is_file() else ""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=LOG_COLUMNS)
    if not existing:
        writer.writeheader()
    writer.writerow(row)
    write_text_atomic(path, existing + buffer.getvalue(), overwrite=True)


def read_log(path: Path | str) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def plot_training_curves(log_path: Path, plot_path: Path) -> None:
    """Training loss and validation IPE per epoch, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_log(log_path)
    epochs = [int(row["epoch"]) for row in rows]
    figure, (loss_axes, ipe_axes) = plt.subplots(1, 2, figsize=(9, 3.5))
    loss_axes.plot(epochs, [float(row["train_loss"]) for row in rows])
    loss_axes.set(xlabel="epoch", ylabel="training loss", yscale="log", title="Loss")
    validated = [row for row in rows if row["val_mean_ipe_mm"]]
    ipe_axes.plot([int(row["epoch"]) for row in validated], [float(row["val_mean_ipe_mm"]) for row in validated],
                  label="mean")
    ipe_axes.plot([int(row["epoch"]) for row in validated], [float(row["val_median_ipe_mm"]) for row in validated],
                  label="median")
    ipe_axes.set(xlabel="epoch", ylabel="validation IPE (mm)", title="Inter-point error")
    ipe_axes.legend()
    figure.tight_layout()
    with atomic_output_path(plot_path, overwrite=True) as temporary:
        figure.savefig(temporary, format="png", dpi=90)
    plt.close(figure)


class _NoProgress:
    def update(self, count: int) -> None:
        pass

    def set_description(self, text: str) -> None:
        pass

    def close(self) -> None:
        pass


def _progress_bar(total: int, done: int, show: bool):
    if not show:
        return _NoProgress()
    from tqdm import tqdm

    return tqdm(total=total, initial=done, unit="it")


DEMO_TRAINING_SEEDS = range(2000, 2060)
DEMO_VALIDATION_SEEDS = range(3000, 3008)
# The segmentation model's held-out seeds: the same ten phantoms test both models.
HELD_OUT_SEEDS = range(5000, 5010)


def train_from_command_line(args) -> dict:
    """``sternum-ssm train-landmarks``: a dataset folder or generated phantoms, split, trained into --output."""
    from .scn_config import load_config

    config = load_config(args.config, args.preset)
    if args.dataset:
        cases = read_dataset_cases(args.dataset, with_ct=config.input_channels == 2)
        training, validation = split_cases(cases, args.validation_fraction, config.seed)
    else:
        training = phantom_cases(DEMO_TRAINING_SEEDS[: args.phantoms])
        validation = phantom_cases(DEMO_VALIDATION_SEEDS[: args.validation_phantoms])
    return train_landmark_model(training, validation, args.output, config, threads=args.threads, device=args.device)
