"""nnU-Net v2 inference in-process: load a model folder once, predict many CT volumes.

Geometry: the input is a :class:`Volume` (array [k, j, i] plus LPS geometry). nnU-Net works on
bare arrays, so the array is first permuted and flipped (losslessly) to the axis order the
model was trained in (LPS-like, the closest signed permutation), predicted, and turned back.
Results come back on the input grid with our standard label values, whatever values the
model's ``dataset.json`` uses: its labels are matched to the anatomy **by name**.

Around the network the work follows nnU-Net's own preprocessing and export, with changes that leave
the model folder untouched (:func:`_inference_configuration`, :func:`_argmax_on_grid`): resampling is
nnU-Net's torch resampling (for the CT itself only with the opt-in ``input_resampling="torch"``), and
the labels come from the argmax at network resolution, with logits interpolated only where a cell's
labels differ.

Checkpoints are pickles and loading one can run code. The loader here uses
``torch.load(weights_only=True)``; a model folder whose checkpoint needs full unpickling is
refused unless the caller states that it trusts the folder.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import lru_cache, partial
from itertools import product
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from .anatomy import label_scheme
from .devices import DEVICES, Device, resolve_device
from .geometry import ImageGeometry, Volume, nearest_lps_axes
from .provenance import LOCALISER_FOLDER, model_id

if TYPE_CHECKING:
    import torch
    from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager

Preset = Literal["fast", "accurate"]
InputResampling = Literal["torch", "plans"]
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
    Both resample the CT as the model's plans name it unless ``input_resampling="torch"``
    (see :func:`_inference_configuration`).

    ``auto_roi``: when the model folder holds a ``localiser`` model, a coarse pass of it finds the
    structures first and the model runs only in their box (:mod:`.auto_roi`); without one it has no effect.
    """

    preset: Preset = "fast"
    device: Device = "auto"
    folds: tuple[str, ...] | None = None
    checkpoint_name: str = "checkpoint_final.pth"
    tile_step_size: float | None = None
    use_mirroring: bool | None = None
    input_resampling: InputResampling | None = None
    trust_pickled_checkpoint: bool = False
    auto_roi: bool = True

    def validate(self) -> None:
        problems = []
        if self.preset not in ("fast", "accurate"):
            problems.append(f"preset {self.preset!r} must be 'fast' or 'accurate'")
        if self.device not in DEVICES:
            problems.append(f"device {self.device!r} must be {', '.join(DEVICES[:-1])} or {DEVICES[-1]}")
        if self.input_resampling not in (None, "torch", "plans"):
            problems.append(f"input_resampling {self.input_resampling!r} must be 'torch' or 'plans'")
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
            # The bundled model was trained on scipy-resampled input; torch input saves ~4 s on a real-size CT
            # but costs 0.01-0.02 total Dice against the truth (bench/bench_realsize_ct.py), so it is opt-in.
            input_resampling=self.input_resampling or "plans",
        )


@dataclass
class SegmentationResult:
    """Label map (our values) on the input grid, plus what produced it."""

    labels: Volume
    probabilities: np.ndarray | None = None
    uncertainty: Volume | None = None
    record: dict = field(default_factory=dict)


def check_ct_volume(volume: Volume) -> None:
    """Refuse what cannot be a CT: not 3D, a single slice, not numbers, NaN, or one value everywhere.

    Segmentation and the dataset export share these checks, so nothing enters a training set
    that ``predict`` would refuse."""
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
        raise ValueError(
            f"The CT is empty: every voxel has the value {array.flat[0]}. Check that the right file was given "
            "(a constant image usually means a failed conversion or an empty series)."
        )


def to_model_axes(volume: Volume) -> tuple[np.ndarray, tuple[float, float, float], Callable[[np.ndarray], np.ndarray]]:
    """Array in the model's [z, y, x] (S, P, L increasing) order, its spacing, and the inverse mapping."""
    order, flips = nearest_lps_axes(volume.geometry)
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


@dataclass(frozen=True)
class TileGrid:
    """The fine model's sliding window along each CT array axis [k, j, i]: tile length and step in the
    model's voxels, and the model's voxel size (mm) there. nnU-Net resamples a box of ``n`` CT voxels of
    spacing ``d`` to ``round(n * d / spacing_mm)`` voxels and covers them with tiles."""

    patch: tuple[int, int, int]
    step: tuple[float, float, float]
    spacing_mm: tuple[float, float, float]

    def tiles(self, axis: int, ct_voxels: int, ct_spacing_mm: float) -> int:
        """Tiles along ``axis`` for a box of ``ct_voxels`` (nnU-Net's compute_steps_for_sliding_window)."""
        model_voxels = round(ct_spacing_mm / self.spacing_mm[axis] * ct_voxels)  # compute_new_shape's order
        if model_voxels <= self.patch[axis]:
            return 1
        return math.ceil((model_voxels - self.patch[axis]) / self.step[axis]) + 1

    def longest(self, axis: int, tiles: int, ct_spacing_mm: float) -> int:
        """The most CT voxels along ``axis`` that ``tiles`` tiles cover."""
        model_voxels = math.floor(self.patch[axis] + (tiles - 1) * self.step[axis] + 1e-9)
        ct_voxels = math.floor((model_voxels + 0.5) * self.spacing_mm[axis] / ct_spacing_mm) + 1
        while round(ct_spacing_mm / self.spacing_mm[axis] * ct_voxels) > model_voxels:  # numpy's rounding, as nnU-Net
            ct_voxels -= 1
        return ct_voxels


class SegmentationModel:
    """One nnU-Net model folder, loaded once, that predicts any number of CT volumes."""

    def __init__(self, model_folder: Path | str | None = None, settings: PredictionSettings | None = None):
        self.settings = settings or PredictionSettings()
        self.folder = ModelFolder.open(model_folder or BUNDLED_MODEL, self.settings.checkpoint_name)
        self.settings = self.settings.resolve(self.folder)
        self.model_hash = model_id(self.folder.path, self.settings.checkpoint_name)
        started = time.perf_counter()
        self._predictor = self._load()
        self.localiser = self._load_localiser()
        self.load_seconds = time.perf_counter() - started

    def _load_localiser(self) -> SegmentationModel | None:
        folder = self.folder.path / LOCALISER_FOLDER
        if not self.settings.auto_roi or not folder.is_dir():
            return None
        settings = PredictionSettings(
            device=self.settings.device,
            checkpoint_name=self.settings.checkpoint_name,
            trust_pickled_checkpoint=self.settings.trust_pickled_checkpoint,
            auto_roi=False,
        )
        return SegmentationModel(folder, settings)

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

    def tile_grid(self, geometry: ImageGeometry) -> TileGrid:
        """The network's sliding window along each array axis [k, j, i] of a CT on ``geometry``."""
        configuration = self._predictor.configuration_manager
        transpose = list(self._predictor.plans_manager.transpose_forward)
        order, _ = nearest_lps_axes(geometry)
        # model axes are LPS z, y, x; nnU-Net's patch and spacing are in its transposed order
        model_axis_of = {order[lps]: 2 - lps for lps in range(3)}  # index axis (i, j, k) -> model axis
        patch, spacing = [], []
        for array_axis in range(3):  # k, j, i
            position = transpose.index(model_axis_of[2 - array_axis])
            patch.append(int(configuration.patch_size[position]))
            spacing.append(float(configuration.spacing[position]))
        step = tuple(length * float(self.settings.tile_step_size) for length in patch)
        return TileGrid(tuple(patch), step, tuple(spacing))

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
        check_ct_volume(volume)
        started = time.perf_counter()
        array, spacing, back = to_model_axes(volume)
        self._predictor.progress = progress
        self._predictor.cancel = cancel
        self._predictor.tiles_done = 0
        steps: dict[str, float] = {}
        try:
            labels, probabilities = self._predict_model_axes(
                array, spacing, return_probabilities or return_uncertainty, steps
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
            "input_resampling": self.settings.input_resampling,
            "seconds": round(time.perf_counter() - started, 3),
            "step_seconds": {name: round(value, 3) for name, value in steps.items()},
            "tiles": self._predictor.tiles_done,
        }
        return result

    def _predict_model_axes(
        self, array: np.ndarray, spacing: tuple[float, ...], with_probabilities: bool, steps: dict[str, float]
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """nnU-Net's preprocessing, sliding window and export on an array in the model's axes: labels (model
        values) on the array's grid, and the class probabilities there when asked for (else None). ``steps``
        gets the seconds of preprocessing, network and the way back to the array's grid."""
        import torch

        predictor = self._predictor
        clock = time.perf_counter()
        configuration = _inference_configuration(
            predictor.configuration_manager, torch.get_num_threads(), self.settings.input_resampling
        )
        # run_case_npy makes the float32 copy itself
        data, _, properties = configuration.preprocessor_class(verbose=False).run_case_npy(
            array[None],
            None,
            {"spacing": list(spacing)},
            predictor.plans_manager,
            configuration,
            predictor.dataset_json,
        )
        steps["preprocessing"], clock = time.perf_counter() - clock, time.perf_counter()
        logits = predictor.predict_logits_from_preprocessed_data(torch.from_numpy(data)).cpu()
        steps["network"], clock = time.perf_counter() - clock, time.perf_counter()
        try:
            return self._export(logits, configuration, properties, with_probabilities)
        finally:
            steps["back_to_ct_grid"] = time.perf_counter() - clock

    def _export(self, logits, configuration, properties: dict, with_probabilities: bool):
        import torch
        from nnunetv2.inference.export_prediction import convert_predicted_logits_to_segmentation_with_correct_shape

        predictor = self._predictor
        if with_probabilities:
            return convert_predicted_logits_to_segmentation_with_correct_shape(
                logits,
                predictor.plans_manager,
                configuration,
                predictor.label_manager,
                properties,
                True,
                torch.get_num_threads(),
            )
        return _labels_on_input_grid(logits, configuration, predictor.plans_manager, properties), None


def _inference_configuration(
    configuration: ConfigurationManager, threads: int, input_resampling: InputResampling
) -> ConfigurationManager:
    """The model's configuration with faster resampling that leaves the model folder (and its hash) as trained.

    The bundled model's plans, like most, name nnU-Net's default ``resample_data_or_seg_to_shape``: scipy on
    one core, 31 s of a 61 s real-size prediction. nnU-Net 2.8.1 picks resampling functions by their names in
    the plans, so they are swapped here, at prediction time:
    - Probabilities go back to the CT's grid by nnU-Net's torch resampling (``resample_torch_fornnunet``,
      ``threads``; linear, as the plans' order-1 scipy): same labels.
    - The CT goes to the network's grid as the plans name it, where that is nnU-Net's default cubic resampling
      by the same arithmetic one axis at a time (:mod:`.cubic_resampling`: the same values, 2-3x faster).
      With ``input_resampling="torch"`` it goes by torch instead: linear, where the bundled plans name cubic
      splines. The smoother CT moves the labels: total Dice 0.978 against the plans' resampling on a real-size
      CT and 0.01-0.02 lower against the phantoms' truth, cartilage most (bench/bench_realsize_ct.py).
    - The segmentation the preprocessor resamples is the nonzero mask, unused without a cascade: not resampled.
    """
    from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager

    torch_resampling = {"is_seg": False, "force_separate_z": None, "num_threads": threads}
    swapped = {
        "resampling_fn_probabilities": "resample_torch_fornnunet",
        "resampling_fn_probabilities_kwargs": torch_resampling,
        "resampling_fn_seg": "no_resampling_hack",
        "resampling_fn_seg_kwargs": {},
    }
    if input_resampling == "torch":
        swapped |= {"resampling_fn_data": "resample_torch_fornnunet", "resampling_fn_data_kwargs": torch_resampling}
        return ConfigurationManager(configuration.configuration | swapped)
    separable = configuration.configuration["resampling_fn_data"] == "resample_data_or_seg_to_shape"
    return (_separable_configuration_class() if separable else ConfigurationManager)(
        configuration.configuration | swapped
    )


@lru_cache(maxsize=1)
def _separable_configuration_class():
    """nnU-Net's ConfigurationManager whose CT resampling is :mod:`.cubic_resampling`'s twin of the default."""
    from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager

    from .cubic_resampling import resample_data_or_seg_to_shape

    class SeparableResampling(ConfigurationManager):
        @property
        def resampling_fn_data(self):
            return partial(resample_data_or_seg_to_shape, **self.configuration["resampling_fn_data_kwargs"])

    return SeparableResampling


def _labels_on_input_grid(
    logits: torch.Tensor, configuration: ConfigurationManager, plans_manager, properties: dict
) -> np.ndarray:
    """nnU-Net's export (``convert_predicted_logits_to_segmentation_with_correct_shape``) without probabilities:
    the argmax of the logits resampled to the cropped input, put back into the uncropped, untransposed grid."""
    from acvl_utils.cropping_and_padding.bounding_boxes import insert_crop_into_image
    from nnunetv2.preprocessing.resampling.default_resampling import determine_do_sep_z_and_axis

    input_spacing = [properties["spacing"][axis] for axis in plans_manager.transpose_forward]
    # resample_torch_fornnunet's own choice: linear on every axis, or nearest along a thick-slice axis
    separate, thick_axis = determine_do_sep_z_and_axis(None, configuration.spacing, input_spacing)
    nearest_axes = {int(thick_axis)} if separate else set()
    cropped = _argmax_on_grid(logits.numpy(), properties["shape_after_cropping_and_before_resampling"], nearest_axes)
    labels = np.zeros(properties["shape_before_cropping"], dtype=np.uint8)
    labels = insert_crop_into_image(labels, cropped, properties["bbox_used_for_cropping"])
    return labels.transpose(plans_manager.transpose_backward)


def _source_indices(size_in: int, size_out: int, nearest: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Along one axis, for each output index: the two input indices it interpolates between and the weight of
    the second, as torch's ``interpolate`` computes them (align_corners=False; 'nearest-exact' if ``nearest``)."""
    out = np.arange(size_out)
    scale = size_in / size_out
    if nearest:
        first = np.minimum(np.floor((out + 0.5) * scale).astype(np.int64), size_in - 1)
        return first, first, np.zeros(size_out, dtype=np.float32)
    source = np.maximum((out + 0.5) * scale - 0.5, 0.0)
    first = source.astype(np.int64)
    return first, np.minimum(first + 1, size_in - 1), (source - first).astype(np.float32)


def _argmax_on_grid(logits: np.ndarray, shape: tuple[int, ...], nearest_axes: set[int]) -> np.ndarray:
    """The argmax of ``logits`` [class, z, y, x] linearly resampled to ``shape``, from the argmax at their own grid.

    Each resampled voxel is a weighted mean of a cell of 2x2x2 logit vectors (one along a 'nearest' axis). If the
    corners of its cell share one argmax, the mean has that argmax too, so only voxels in cells whose corners
    disagree, along the labels' borders, are interpolated: the labels of resampling every logit map, without
    the full-resolution float maps (1.4 GB and most of the time for a 512x470x297 CT).
    """
    coarse = logits.argmax(0).astype(np.uint8)
    per_axis = [_source_indices(coarse.shape[a], shape[a], a in nearest_axes) for a in range(3)]
    steps = [0 if a in nearest_axes else 1 for a in range(3)]
    padded = np.pad(coarse, [(0, step) for step in steps], mode="edge")
    lowest, highest = coarse.copy(), coarse.copy()
    for shift in product(*(range(step + 1) for step in steps)):
        corner = padded[tuple(slice(d, d + n) for d, n in zip(shift, coarse.shape, strict=True))]
        np.minimum(lowest, corner, out=lowest)
        np.maximum(highest, corner, out=highest)
    cells = np.ix_(*(first for first, _, _ in per_axis))
    labels = coarse[cells]
    border = np.nonzero((lowest != highest)[cells])
    mean = np.zeros((logits.shape[0], len(border[0])), dtype=np.float32)
    for corner in product((0, 1), repeat=3):
        weight = np.ones(len(border[0]), dtype=np.float32)
        index = []
        for axis, (first, second, fraction) in enumerate(per_axis):
            at = border[axis]
            weight *= fraction[at] if corner[axis] else 1.0 - fraction[at]
            index.append((second if corner[axis] else first)[at])
        mean += weight * logits[:, index[0], index[1], index[2]]
    labels[border] = mean.argmax(0)
    return labels


def _build_network(trainer_name: str, plans_manager, configuration, dataset_json: dict):
    """The architecture the checkpoint was trained with.

    For nnUNetTrainer (and the standard trainers, which keep its architecture) this is the call its
    ``build_network_architecture`` makes; importing the trainer module itself would add ~2 s to every model
    load (its logger imports seaborn). Other trainers are found by name and build their own."""
    heads = plans_manager.get_label_manager(dataset_json).num_segmentation_heads
    if trainer_name == "nnUNetTrainer":
        from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

        return get_network_from_plans(
            configuration.network_arch_class_name,
            configuration.network_arch_init_kwargs,
            configuration.network_arch_init_kwargs_req_import,
            1,
            heads,
            allow_init=True,
            deep_supervision=False,
        )
    from nnunetv2.inference.predict_from_raw_data import recursive_find_trainer_class_by_name

    trainer_class = recursive_find_trainer_class_by_name(trainer_name)
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
