"""nnU-Net v2 inference in-process: load a model folder once, predict many CT volumes.

Geometry: the input is a :class:`Volume` (array [k, j, i] plus LPS geometry). nnU-Net works on
bare arrays, so the array is first permuted and flipped (losslessly) to the axis order the
model was trained in (LPS-like, the closest signed permutation), predicted, and turned back.
Results come back on the input grid with our standard label values, whatever values the
model's ``dataset.json`` uses: its labels are matched to the anatomy **by name**.

Checkpoints are pickles and loading one can run code. The loader here uses
``torch.load(weights_only=True)``; a model folder whose checkpoint needs full unpickling is
refused unless the caller states that it trusts the folder.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Literal

import numpy as np

from .anatomy import label_scheme
from .geometry import ImageGeometry, Volume

Preset = Literal["fast", "accurate"]
Device = Literal["auto", "cuda", "mps", "cpu"]
ProgressCallback = Callable[[int, int], None]

BUNDLED_MODEL = Path(__file__).resolve().parents[1] / "Resources" / "Models" / "SternumPhantomDemo"


class PredictionCancelled(Exception):  # noqa: N818 - reads as what happened, like KeyboardInterrupt
    """Raised inside the tile loop when the cancel flag is set."""


class ModelFolderError(ValueError):
    """The model folder is missing, incomplete, corrupt or does not map to our anatomy."""


def _normalised(name: str) -> str:
    return name.strip().lower().replace("-", "_").replace(" ", "_")


@dataclass(frozen=True)
class ModelFolder:
    """A trained nnU-Net v2 model folder (dataset.json, plans.json, fold_*/checkpoint)."""

    path: Path
    dataset_json: dict
    plans: dict
    folds: tuple[str, ...]
    label_mapping: dict[int, int]

    @classmethod
    def open(cls, path: Path | str, checkpoint_name: str = "checkpoint_final.pth") -> ModelFolder:
        path = Path(path)
        if not path.is_dir():
            raise ModelFolderError(f"Model folder {path} does not exist; choose an nnU-Net v2 model folder.")
        documents = {}
        for name in ("dataset.json", "plans.json"):
            try:
                documents[name] = json.loads((path / name).read_text())
            except FileNotFoundError:
                raise ModelFolderError(
                    f"Model folder {path} has no {name}; an nnU-Net v2 model folder holds dataset.json, "
                    "plans.json and fold_<n>/<checkpoint>."
                ) from None
            except (OSError, ValueError) as error:
                raise ModelFolderError(
                    f"{path / name} is not valid JSON ({error}); the model folder is corrupt."
                ) from None
        folds = tuple(
            sorted(
                folder.name[len("fold_") :] for folder in path.glob("fold_*") if (folder / checkpoint_name).is_file()
            )
        )
        if not folds:
            raise ModelFolderError(
                f"Model folder {path} has no fold_<n>/{checkpoint_name}; it holds no trained weights."
            )
        return cls(
            path,
            documents["dataset.json"],
            documents["plans.json"],
            folds,
            _map_labels(documents["dataset.json"], path),
        )

    def fingerprint(self, folds: tuple[str, ...], checkpoint_name: str = "checkpoint_final.pth") -> str:
        """SHA-256 over dataset.json, plans.json and the checkpoints of ``folds``: the model's provenance id."""
        digest = hashlib.sha256()
        files = [self.path / "dataset.json", self.path / "plans.json"]
        files += [self.path / f"fold_{fold}" / checkpoint_name for fold in folds]
        for file in files:
            digest.update(file.name.encode())
            with open(file, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
        return digest.hexdigest()


def _map_labels(dataset_json: dict, path: Path) -> dict[int, int]:
    """Model label value -> our label value, matched by normalised name."""
    scheme = label_scheme()
    ours = {_normalised(c.name): c.value for c in scheme.classes}
    labels = dataset_json.get("labels")
    if not isinstance(labels, dict):
        raise ModelFolderError(f"{path / 'dataset.json'} has no 'labels' mapping of names to values.")
    mapping, unknown = {}, []
    for name, value in labels.items():
        if not isinstance(value, int):
            raise ModelFolderError(
                f"Label {name!r} in {path / 'dataset.json'} is a region ({value}); only plain labels are supported."
            )
        if value == 0:
            continue
        if _normalised(name) in ours:
            mapping[value] = ours[_normalised(name)]
        else:
            unknown.append(name)
    if unknown or not mapping:
        raise ModelFolderError(
            f"The model's labels {sorted(labels)} do not map to SternumSSM's segments "
            f"({', '.join(scheme.names)}): unknown {unknown or 'none'}. Rename them in the model's dataset.json."
        )
    return mapping


@dataclass(frozen=True)
class PredictionSettings:
    """How to run a model. A preset fills in what is left as None; explicit values win.

    fast: one fold, no mirroring, tile step 0.8. accurate: all folds, mirroring as trained, tile step 0.5.
    """

    preset: Preset = "fast"
    device: Device = "auto"
    folds: tuple[str, ...] | None = None
    checkpoint_name: str = "checkpoint_final.pth"
    tile_step_size: float | None = None
    use_mirroring: bool | None = None
    trust_pickled_checkpoint: bool = False

    def validate(self) -> None:
        problems = []
        if self.preset not in ("fast", "accurate"):
            problems.append(f"preset {self.preset!r} must be 'fast' or 'accurate'")
        if self.device not in ("auto", "cuda", "mps", "cpu"):
            problems.append(f"device {self.device!r} must be auto, cuda, mps or cpu")
        if self.tile_step_size is not None and not 0.1 <= self.tile_step_size <= 1.0:
            problems.append(f"tile_step_size {self.tile_step_size} must lie in 0.1..1")
        if problems:
            raise ValueError("Invalid prediction settings: " + "; ".join(problems) + ".")

    def resolve(self, model: ModelFolder) -> PredictionSettings:
        """Settings with every preset choice made, for the given model folder."""
        self.validate()
        fast = self.preset == "fast"
        folds = self.folds if self.folds is not None else (model.folds[:1] if fast else model.folds)
        missing = [fold for fold in folds if fold not in model.folds]
        if missing:
            raise ModelFolderError(f"Fold(s) {missing} not found in {model.path}; available: {', '.join(model.folds)}.")
        return replace(
            self,
            folds=tuple(folds),
            tile_step_size=self.tile_step_size if self.tile_step_size is not None else (0.8 if fast else 0.5),
            use_mirroring=self.use_mirroring if self.use_mirroring is not None else not fast,
        )


def resolve_device(device: Device):
    import torch

    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("Device 'cuda' was requested but no CUDA GPU is available; choose 'auto' or 'cpu'.")
    return torch.device(device)


@dataclass
class SegmentationResult:
    """Label map (our values) on the input grid, plus what produced it."""

    labels: Volume
    probabilities: np.ndarray | None = None
    uncertainty: Volume | None = None
    record: dict = field(default_factory=dict)


def _validate_input(volume: Volume) -> None:
    array = volume.array
    if array.ndim != 3:
        raise ValueError(f"The CT must be a 3D scalar volume; got an array of shape {array.shape}.")
    if min(array.shape) < 2:
        raise ValueError(f"The CT has shape {array.shape}; a single slice cannot be segmented, load the whole series.")
    if not np.issubdtype(array.dtype, np.number):
        raise ValueError(f"The CT voxels must be numbers, got {array.dtype}.")
    if np.issubdtype(array.dtype, np.floating) and not np.all(np.isfinite(array)):
        raise ValueError(
            f"The CT holds {int(np.sum(~np.isfinite(array)))} NaN or infinite voxels; fix or mask them first."
        )
    if array.min() == array.max():
        raise ValueError("The CT is empty: every voxel has the same value.")


def _axes_to_lps(geometry: ImageGeometry) -> tuple[tuple[int, int, int], tuple[bool, bool, bool]]:
    """For each LPS axis (x, y, z): which index axis (i, j, k) is closest to it, and whether it runs backwards."""
    direction = geometry.direction_lps
    order = np.argmax(np.abs(direction), axis=1)
    if len(set(order.tolist())) != 3:
        raise ValueError("The volume is too oblique to tell its axes apart; resample it to an axis-aligned grid.")
    flips = tuple(bool(direction[row, order[row]] < 0) for row in range(3))
    return tuple(int(o) for o in order), flips


def to_model_axes(volume: Volume) -> tuple[np.ndarray, tuple[float, float, float], Callable[[np.ndarray], np.ndarray]]:
    """Array in the model's [z, y, x] (S, P, L increasing) order, its spacing, and the inverse mapping."""
    order, flips = _axes_to_lps(volume.geometry)
    # array axes are (k, j, i) = index axes (2, 1, 0); we want array axes for LPS z, y, x.
    source_axes = [2 - order[2], 2 - order[1], 2 - order[0]]
    array = np.transpose(volume.array, source_axes)
    flip_axes = [axis for axis, lps in enumerate((2, 1, 0)) if flips[lps]]
    array = np.flip(array, axis=flip_axes) if flip_axes else array
    spacing = tuple(float(volume.geometry.spacing[order[lps]]) for lps in (2, 1, 0))
    inverse_axes = np.argsort(source_axes)

    def back(model_array: np.ndarray) -> np.ndarray:
        leading = model_array.ndim - 3
        restored = np.flip(model_array, axis=[leading + a for a in flip_axes]) if flip_axes else model_array
        return np.ascontiguousarray(np.transpose(restored, list(range(leading)) + [leading + a for a in inverse_axes]))

    return np.ascontiguousarray(array), spacing, back


class SegmentationModel:
    """One nnU-Net model folder, loaded once, that predicts any number of CT volumes."""

    def __init__(self, model_folder: Path | str | None = None, settings: PredictionSettings | None = None):
        self.settings = settings or PredictionSettings()
        self.folder = ModelFolder.open(model_folder or BUNDLED_MODEL, self.settings.checkpoint_name)
        self.settings = self.settings.resolve(self.folder)
        self.model_hash = self.folder.fingerprint(self.settings.folds, self.settings.checkpoint_name)
        started = time.perf_counter()
        self._predictor = self._load()
        self.load_seconds = time.perf_counter() - started

    def _load(self):
        from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
        from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

        checkpoints = [self._read_checkpoint(fold) for fold in self.settings.folds]
        first = checkpoints[0]
        plans_manager = PlansManager(self.folder.plans)
        configuration = plans_manager.get_configuration(first["init_args"]["configuration"])
        network = _build_network(first["trainer_name"], plans_manager, configuration, self.folder.dataset_json)
        parameters = [checkpoint["network_weights"] for checkpoint in checkpoints]
        network.load_state_dict(parameters[0])
        predictor = _progress_predictor_class()(
            tile_step_size=self.settings.tile_step_size,
            use_gaussian=True,
            use_mirroring=bool(self.settings.use_mirroring),
            perform_everything_on_device=True,
            device=resolve_device(self.settings.device),
            verbose=False,
            allow_tqdm=False,
        )
        predictor.manual_initialization(
            network,
            plans_manager,
            configuration,
            parameters,
            self.folder.dataset_json,
            first["trainer_name"],
            first.get("inference_allowed_mirroring_axes"),
        )
        channels = determine_num_input_channels(plans_manager, configuration, self.folder.dataset_json)
        if channels != 1:
            raise ModelFolderError(
                f"{self.folder.path} expects {channels} input channels; SternumSSM models take one CT."
            )
        return predictor

    def _read_checkpoint(self, fold: str) -> dict:
        import pickle

        import torch

        path = self.folder.path / f"fold_{fold}" / self.settings.checkpoint_name
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:
            if not self.settings.trust_pickled_checkpoint:
                raise ModelFolderError(
                    f"{path} needs full unpickling, which can run code stored in the file. Load it only if you "
                    "trust where the model folder came from, and say so (trust_pickled_checkpoint / --trust-model)."
                ) from None
            return torch.load(path, map_location="cpu", weights_only=False)
        except (OSError, RuntimeError, EOFError) as error:
            raise ModelFolderError(f"Cannot read checkpoint {path}: {error}. The model folder is corrupt.") from None

    @property
    def mirroring_axes(self):
        return self._predictor.allowed_mirroring_axes

    def predict(
        self,
        volume: Volume,
        progress: ProgressCallback | None = None,
        cancel: Callable[[], bool] | None = None,
        return_probabilities: bool = False,
        return_uncertainty: bool = False,
    ) -> SegmentationResult:
        """Segment one CT; ``progress(done, total)`` counts tiles, ``cancel()`` stops within one tile."""
        _validate_input(volume)
        started = time.perf_counter()
        array, spacing, back = to_model_axes(volume)
        self._predictor.progress = progress
        self._predictor.cancel = cancel
        self._predictor.tiles_done = 0
        try:
            labels, probabilities = self._predictor.predict_single_npy_array(
                array[None].astype(np.float32), {"spacing": list(spacing)}, None, None, True
            )
        finally:
            self._predictor.progress = self._predictor.cancel = None
        lookup = np.zeros(max(int(labels.max()), max(self.folder.label_mapping)) + 1, dtype=np.uint8)
        for model_value, our_value in self.folder.label_mapping.items():
            lookup[model_value] = our_value
        ours = Volume(back(lookup[labels]), volume.geometry)
        result = SegmentationResult(labels=ours)
        if return_probabilities:
            result.probabilities = back(np.asarray(probabilities, dtype=np.float32))
        if return_uncertainty:
            result.uncertainty = Volume(back(1.0 - np.max(probabilities, axis=0)).astype(np.float32), volume.geometry)
        result.record = {
            "model_folder": str(self.folder.path),
            "model_sha256": self.model_hash,
            "preset": self.settings.preset,
            "folds": list(self.settings.folds),
            "tile_step_size": self.settings.tile_step_size,
            "mirroring": bool(self.settings.use_mirroring and self.mirroring_axes),
            "device": str(self._predictor.device),
            "seconds": round(time.perf_counter() - started, 3),
            "tiles": self._predictor.tiles_done,
        }
        return result


def _build_network(trainer_name: str, plans_manager, configuration, dataset_json: dict):
    """The architecture the checkpoint was trained with; nnUNetTrainer's builder covers the standard trainers."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    if trainer_name != "nnUNetTrainer":
        from nnunetv2.inference.predict_from_raw_data import recursive_find_trainer_class_by_name

        trainer_class = recursive_find_trainer_class_by_name(trainer_name)
    else:
        trainer_class = nnUNetTrainer
    heads = plans_manager.get_label_manager(dataset_json).num_segmentation_heads
    return trainer_class.build_network_architecture(
        plans_manager, configuration, 1, heads, enable_deep_supervision=False
    )


@lru_cache(maxsize=1)
def _progress_predictor_class():
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    class ProgressPredictor(nnUNetPredictor):
        """nnU-Net's predictor with a tile counter and a cancel check before every tile."""

        progress: ProgressCallback | None = None
        cancel: Callable[[], bool] | None = None
        tiles_done = 0
        tiles_total = 0

        def _internal_get_sliding_window_slicers(self, image_size):
            slicers = super()._internal_get_sliding_window_slicers(image_size)
            self.tiles_total = len(slicers) * len(self.list_of_parameters)
            return slicers

        def _internal_maybe_mirror_and_predict(self, x):
            if self.cancel is not None and self.cancel():
                raise PredictionCancelled("Segmentation was cancelled.")
            prediction = super()._internal_maybe_mirror_and_predict(x)
            self.tiles_done += 1
            if self.progress is not None:
                self.progress(self.tiles_done, self.tiles_total)
            return prediction

    return ProgressPredictor
