"""SpatialConfiguration-Net settings: one dataclass, the study's values as defaults, JSON files for variants.

``data/scn_study.json`` restates the study's configuration (thesis §2.1.6 and §3.4);
``data/scn_cpu_demo.json`` is the small configuration the bundled demo model was trained with.
They are the named presets ``study`` and ``cpu``. A config file lists only the values it changes;
every other value comes from the preset it is applied to (the study's by default).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

DATA = Path(__file__).parent / "data"
STUDY_CONFIG = DATA / "scn_study.json"
CPU_DEMO_CONFIG = DATA / "scn_cpu_demo.json"
GRID_FRAMES = ("lps", "sternum")
PRESETS = {"study": STUDY_CONFIG, "cpu": CPU_DEMO_CONFIG}


@dataclass(frozen=True)
class AugmentationConfig:
    """One random transform per sample, applied to the mask by one resampling and exactly to the points."""

    translation_voxels: float = 5.0
    rotation_deg: float = 5.0
    scale_range: tuple[float, float] = (0.9, 1.1)


@dataclass(frozen=True)
class SCNConfig:
    """Preprocessing, network, loss, training and prediction settings of the landmark model."""

    # Preprocessing: a grid of isotropic voxels centred on the mask's bounding box. grid_frame "lps"
    # aligns it with LPS (the study); "sternum" turns its head-foot axis onto the mask's long axis
    # (left-right kept as close to patient left as possible), so a tilted sternum needs no room for its tilt.
    spacing_mm: float = 3.0
    grid_shape_kji: tuple[int, int, int] = (80, 56, 32)
    grid_frame: str = "lps"
    # Optional second input channel: the CT, windowed to [0, 1], within this distance of the mask
    # (zero elsewhere). 0 gives the study's input, the mask alone.
    ct_margin_mm: float = 0.0
    ct_window_hu: tuple[float, float] = (-150.0, 350.0)
    # Network (landmarker's OriginalSpatialConfigurationNet3d).
    local_channels: int = 64
    local_depth: int = 3
    dropout: float = 0.5
    spatial_channels: int = 64
    spatial_kernel: int = 7
    spatial_downsample: int = 4
    # Output = local x tanh(spatial). With both factors near zero at the start, training sits on
    # a saddle; a positive bias on the last spatial convolution (tanh(1) = 0.76) lets the local
    # part learn first. 0 keeps landmarker's (PyTorch's) initialisation.
    spatial_output_bias: float = 0.0
    # Target heatmaps and loss: sum of squared heatmap errors + alpha |sigma|^2 + lambda |w|^2.
    sigma_initial: float = 3.0
    gamma: float = 1000.0
    sigma_penalty: float = 100.0
    weight_decay: float = 0.0005
    # Optimiser and schedule: Adam, constant rate, then linear decay to zero.
    learning_rate: float = 1e-4
    betas: tuple[float, float] = (0.5, 0.999)
    epochs: int = 5000
    lr_decay_start_epoch: int = 2500
    batch_size: int = 1
    iterations_per_epoch: int = 0  # 0: one pass over the training cases
    validate_every: int = 1
    augmentation: AugmentationConfig = field(default_factory=AugmentationConfig)
    # Prediction. Confidence depends on the grid and the learnt sigmas, so train-landmarks sets each
    # model's thresholds from its validation cases (calibration.json, see landmark_calibration); these
    # are used only by a model folder without that file. The defaults came from the first demo model.
    # Half the smallest distance between neighbouring landmarks on the phantoms (5.9 mm).
    duplicate_distance_mm: float = 3.0
    confident_above: float = 0.4
    placed_above: float = 0.05
    seed: int = 0

    @property
    def input_channels(self) -> int:
        return 2 if self.ct_margin_mm > 0 else 1

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict, base: SCNConfig | None = None) -> SCNConfig:
        """``base`` (default: the study's values) with the keys in ``values`` changed."""
        # Keys starting with "_" are comments (a JSON file has no other way to cite its source).
        values = {key: value for key, value in values.items() if not key.startswith("_")}
        known = {item.name for item in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"Unknown SCN config keys {unknown}; known keys are {sorted(known)}.")
        if "augmentation" in values:
            values["augmentation"] = AugmentationConfig(**_tuples(values["augmentation"]))
        config = replace(base or cls(), **_tuples(values))
        config.check()
        return config

    def check(self) -> None:
        # Three average-poolings halve the local path; the spatial path pools by spatial_downsample and upsamples.
        multiple = math.lcm(2**self.local_depth, self.spatial_downsample)
        if any(size % multiple for size in self.grid_shape_kji):
            raise ValueError(
                f"grid_shape_kji {self.grid_shape_kji} must be divisible by {multiple} "
                f"(2^local_depth and spatial_downsample); round each size up to a multiple of {multiple}."
            )
        if self.ct_margin_mm < 0 or self.ct_window_hu[0] >= self.ct_window_hu[1]:
            raise ValueError(
                f"ct_margin_mm must be >= 0 and ct_window_hu increasing; got {self.ct_margin_mm}, {self.ct_window_hu}."
            )
        if self.grid_frame not in GRID_FRAMES:
            raise ValueError(f"grid_frame must be one of {GRID_FRAMES}, got {self.grid_frame!r}.")
        if self.spacing_mm <= 0:
            raise ValueError(f"spacing_mm must be positive, got {self.spacing_mm}.")


def _tuples(values: dict) -> dict:
    return {key: tuple(value) if isinstance(value, list) else value for key, value in values.items()}


def load_config(path: Path | str | None = None, preset: str = "study") -> SCNConfig:
    """The named preset (``PRESETS``) with the keys in ``path`` (JSON, only the changed keys) changed."""
    if preset not in PRESETS:
        raise ValueError(f"Unknown preset {preset!r}; choose one of {', '.join(PRESETS)}.")
    base = SCNConfig.from_dict(json.loads(PRESETS[preset].read_text()))
    if path is None:
        return base
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"SCN config {path} not found; pass a JSON file, or none for the preset's values.")
    return SCNConfig.from_dict(json.loads(path.read_text()), base=base)
