"""The SpatialConfiguration-Net, its target heatmaps and loss, and the model folder on disk.

The network is the SCN of Payer et al. (2019) as the study built it: local appearance times spatial
configuration. It is written here rather than taken from a library so that installing it into Slicer
changes nothing Slicer bundles (landmarker 0.4.1 demands scipy 1.15, pillow 12 and torchvision, against
Slicer 5.10's scipy 1.13.1 and pillow 11.2.1). Its parameter names are those of landmarker's
``OriginalSpatialConfigurationNet3d``, with which the bundled model was trained, so that model loads
unchanged. The target heatmaps use an isotropic Gaussian, separable into three 1-D factors (0.01 s for
34 heatmaps on a 64x48x32 grid, against 1.2 s for a full covariance form); the study's sigma is one
number per landmark anyway.

A model folder holds ``config.json`` (the SCNConfig, the landmark ids and a record) and
``model.pth`` (network weights and the learnt sigmas, loadable with ``weights_only=True``).
"""

from __future__ import annotations

import json
import math
import pickle
from pathlib import Path

import torch
from SternumSSMLib.atomic import atomic_output_path, write_text_atomic
from torch import nn

from .scn_config import SCNConfig

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.pth"


class ModelFolderError(ValueError):
    """A landmark model folder is missing or incomplete."""


def _convolution(in_channels: int, out_channels: int, kernel: int) -> nn.Conv3d:
    return nn.Conv3d(in_channels, out_channels, kernel, padding="same")


def _convolution_relu(in_channels: int, out_channels: int, kernel: int = 3) -> list[nn.Module]:
    return [_convolution(in_channels, out_channels, kernel), nn.LeakyReLU(negative_slope=0.1)]


class _DownStage(nn.Module):
    """Two convolutions with dropout between them; returns the pooled features and the skip."""

    def __init__(self, channels: int, dropout: float) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(*_convolution_relu(channels, channels))
        self.dropout = nn.Dropout3d(dropout)
        self.conv2 = nn.Sequential(*_convolution_relu(channels, channels))
        self.pool = nn.AvgPool3d(2)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        skip = self.conv2(self.dropout(self.conv1(features)))
        return self.pool(skip), skip


class _UpStage(nn.Module):
    """The coarser features upsampled, plus a convolution of the same level's skip (a residual add)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(*_convolution_relu(channels, channels))
        self.upsample = nn.Upsample(scale_factor=2, mode="trilinear", align_corners=False)

    def forward(self, coarse: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.upsample(coarse) + self.conv1(skip)


class SpatialConfigurationNet(nn.Module):
    """Heatmaps = local appearance x tanh(spatial configuration), one channel per landmark.

    Attribute names and layer order reproduce landmarker 0.4.1's state-dict keys and PyTorch's
    initialisation order, so old model folders load strictly and a seed gives the same initial weights.
    """

    def __init__(
        self, in_channels: int, landmark_count: int, local_channels: int, local_depth: int, dropout: float,
        spatial_channels: int, spatial_kernel: int, spatial_downsample: int,
    ) -> None:
        super().__init__()
        self.first_conv = nn.Sequential(*_convolution_relu(in_channels, local_channels))
        self.la_downlayers = nn.ModuleList(_DownStage(local_channels, dropout) for _ in range(local_depth))
        self.up_layers = nn.ModuleList(_UpStage(local_channels) for _ in range(local_depth))
        self.bottleneck_layer = nn.Sequential(
            *_convolution_relu(local_channels, local_channels), *_convolution_relu(local_channels, local_channels)
        )
        self.last_layer = _convolution(local_channels, landmark_count, 1)
        self.sc_net = nn.Sequential(
            nn.AvgPool3d(spatial_downsample),
            *_convolution_relu(landmark_count, spatial_channels, spatial_kernel),
            *_convolution_relu(spatial_channels, spatial_channels, spatial_kernel),
            *_convolution_relu(spatial_channels, spatial_channels, spatial_kernel),
            _convolution(spatial_channels, landmark_count, spatial_kernel),
            nn.Upsample(scale_factor=spatial_downsample, mode="trilinear", align_corners=False),
            nn.Tanh(),
        )

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """(B, C, K, J, I) input to (B, landmarks, K, J, I) heatmaps."""
        features = self.first_conv(image)
        skips = []
        for stage in self.la_downlayers:
            features, skip = stage(features)
            skips.append(skip)
        features = self.bottleneck_layer(features)
        for stage, skip in zip(self.up_layers, reversed(skips), strict=True):
            features = stage(features, skip)
        local = self.last_layer(features)
        return local * self.sc_net(local)


def build_network(config: SCNConfig, landmark_count: int) -> SpatialConfigurationNet:
    network = SpatialConfigurationNet(
        in_channels=config.input_channels,
        landmark_count=landmark_count,
        local_channels=config.local_channels,
        local_depth=config.local_depth,
        dropout=config.dropout,
        spatial_channels=config.spatial_channels,
        spatial_kernel=config.spatial_kernel,
        spatial_downsample=config.spatial_downsample,
    )
    if config.spatial_output_bias:
        last_spatial = [layer for layer in network.sc_net if isinstance(layer, nn.Conv3d)][-1]
        nn.init.constant_(last_spatial.bias, config.spatial_output_bias)
    return network


class HeatmapRenderer(nn.Module):
    """g_i(x) = gamma / ((2 pi)^(3/2) sigma_i^3) exp(-|x - x_i|^2 / (2 sigma_i^2)), sigma_i learnable (voxels).

    Landmarks are (k, j, i) grid indices; a NaN landmark renders as an all-zero heatmap.
    """

    def __init__(self, landmark_count: int, sigma_initial: float, gamma: float) -> None:
        super().__init__()
        self.sigmas = nn.Parameter(torch.full((landmark_count,), float(sigma_initial)))
        self.gamma = gamma

    def peak_heights(self) -> torch.Tensor:
        return self.gamma / ((2 * math.pi) ** 1.5 * self.sigmas**3)

    def forward(self, landmarks_kji: torch.Tensor, shape_kji: tuple[int, int, int]) -> torch.Tensor:
        """(B, N, 3) grid indices to (B, N, K, J, I) heatmaps."""
        sigma = self.sigmas[None, :, None]
        # Missing landmarks are zeroed by a mask, not by nan_to_num: NaN inside the graph would
        # reach the sigma gradient as 0 * NaN = NaN.
        present = torch.isfinite(landmarks_kji).all(dim=-1)
        landmarks_kji = torch.where(present[..., None], landmarks_kji, torch.zeros_like(landmarks_kji))
        factors = []
        for axis, size in enumerate(shape_kji):
            positions = torch.arange(size, dtype=torch.float32, device=landmarks_kji.device)
            offset = positions[None, None, :] - landmarks_kji[:, :, axis : axis + 1]
            factors.append(torch.exp(-(offset**2) / (2 * sigma**2)))
        heatmaps = factors[0][..., :, None, None] * factors[1][..., None, :, None] * factors[2][..., None, None, :]
        scale = self.peak_heights()[None, :] * present
        return heatmaps * scale[:, :, None, None, None]


def scn_loss(
    predicted: torch.Tensor, target: torch.Tensor, renderer: HeatmapRenderer, config: SCNConfig
) -> tuple[torch.Tensor, dict[str, float]]:
    """Sum of squared heatmap errors per sample plus alpha |sigma|^2.

    The lambda |w|^2 term is Adam's weight decay on the network weights (see ``make_optimizer``).
    """
    heatmap = ((predicted - target) ** 2).sum() / predicted.shape[0]
    sigma = config.sigma_penalty * (renderer.sigmas**2).sum()
    return heatmap + sigma, {"heatmap_loss": float(heatmap.detach()), "sigma_loss": float(sigma.detach())}


def make_optimizer(network: nn.Module, renderer: HeatmapRenderer, config: SCNConfig) -> torch.optim.Optimizer:
    return torch.optim.Adam(
        [
            {"params": network.parameters(), "weight_decay": config.weight_decay},
            {"params": renderer.parameters(), "weight_decay": 0.0},
        ],
        lr=config.learning_rate,
        betas=config.betas,
    )


def learning_rate_factor(epoch: int, config: SCNConfig) -> float:
    """Constant, then linear decay to zero over the epochs after ``lr_decay_start_epoch`` (the study's schedule)."""
    if epoch < config.lr_decay_start_epoch:
        return 1.0
    remaining = max(config.epochs - config.lr_decay_start_epoch, 1)
    return max(1.0 - (epoch - config.lr_decay_start_epoch) / remaining, 0.0)


def save_model_folder(
    folder: Path, network: nn.Module, renderer: HeatmapRenderer, config: SCNConfig, landmark_ids: tuple[str, ...],
    record: dict,
) -> None:
    """Write config.json and model.pth into ``folder`` (created if needed), each atomically."""
    folder.mkdir(parents=True, exist_ok=True)
    weights = {"network": network.state_dict(), "sigmas": renderer.sigmas.detach().clone()}
    with atomic_output_path(folder / WEIGHTS_FILE, overwrite=True) as temporary:
        torch.save(weights, temporary)
    description = {"config": config.to_dict(), "landmark_ids": list(landmark_ids), "record": record}
    write_text_atomic(folder / CONFIG_FILE, json.dumps(description, indent=1) + "\n", overwrite=True)


def _damaged(path: Path, error: Exception) -> ModelFolderError:
    reason = str(error).strip().splitlines()[0].split(". ")[0] if str(error).strip() else type(error).__name__
    return ModelFolderError(
        f"Landmark model file {path} is damaged or incomplete ({reason}); copy the model folder again, "
        "or retrain it with `sternum-ssm train-landmarks` (an interrupted run resumes)."
    )


def load_model_folder(folder: Path | str) -> tuple[nn.Module, HeatmapRenderer, SCNConfig, tuple[str, ...], dict]:
    """Network (eval mode), renderer with the learnt sigmas, config, landmark ids and record."""
    folder = Path(folder)
    missing = [name for name in (CONFIG_FILE, WEIGHTS_FILE) if not (folder / name).is_file()]
    if missing:
        raise ModelFolderError(
            f"Landmark model folder {folder} lacks {', '.join(missing)}; choose a folder written by "
            "`sternum-ssm train-landmarks` (or the bundled demo model)."
        )
    # A truncated or foreign file fails deep inside json or torch; say which file and what to do instead.
    try:
        description = json.loads((folder / CONFIG_FILE).read_text())
        config = SCNConfig.from_dict(description["config"])
        landmark_ids = tuple(description["landmark_ids"])
    except (ValueError, KeyError, TypeError) as error:
        raise _damaged(folder / CONFIG_FILE, error) from None
    try:
        weights = torch.load(folder / WEIGHTS_FILE, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError) as error:
        raise _damaged(folder / WEIGHTS_FILE, error) from None
    network = build_network(config, len(landmark_ids))
    network.load_state_dict({name: tensor.float() for name, tensor in weights["network"].items()}, strict=True)
    network.eval()
    renderer = HeatmapRenderer(len(landmark_ids), config.sigma_initial, config.gamma)
    with torch.no_grad():
        renderer.sigmas.copy_(weights["sigmas"].float())
    return network, renderer, config, landmark_ids, description.get("record", {})
