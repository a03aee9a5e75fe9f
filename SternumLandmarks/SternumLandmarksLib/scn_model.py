"""The SpatialConfiguration-Net, its target heatmaps and loss, and the model folder on disk.

The network is landmarker's ``OriginalSpatialConfigurationNet3d`` (local appearance times
spatial configuration, as the study built it). The target heatmaps are rendered here rather
than with landmarker's ``GaussianHeatmapGenerator``: that one evaluates a full covariance
form at every voxel (1.2 s for 34 heatmaps on a 64x48x32 grid here), while an isotropic
Gaussian is separable into three 1-D factors (0.01 s) and the study's sigma is one number
per landmark anyway.

A model folder holds ``config.json`` (the SCNConfig, the landmark ids and a record) and
``model.pth`` (network weights and the learnt sigmas, loadable with ``weights_only=True``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from SternumSSMLib.atomic import atomic_output_path, write_text_atomic
from torch import nn

from .scn_config import SCNConfig

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.pth"


class ModelFolderError(ValueError):
    """A landmark model folder is missing or incomplete."""


def build_network(config: SCNConfig, landmark_count: int) -> nn.Module:
    from landmarker.models import OriginalSpatialConfigurationNet3d

    network = OriginalSpatialConfigurationNet3d(
        in_channels=config.input_channels,
        out_channels=landmark_count,
        la_channels=config.local_channels,
        la_depth=config.local_depth,
        la_dropout=config.dropout,
        sp_channels=config.spatial_channels,
        sp_kernel_size=config.spatial_kernel,
        sp_downsample=config.spatial_downsample,
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


def load_model_folder(folder: Path | str) -> tuple[nn.Module, HeatmapRenderer, SCNConfig, tuple[str, ...], dict]:
    """Network (eval mode), renderer with the learnt sigmas, config, landmark ids and record."""
    folder = Path(folder)
    missing = [name for name in (CONFIG_FILE, WEIGHTS_FILE) if not (folder / name).is_file()]
    if missing:
        raise ModelFolderError(
            f"Landmark model folder {folder} lacks {', '.join(missing)}; choose a folder written by "
            "`sternum-ssm train-landmarks` (or the bundled demo model)."
        )
    description = json.loads((folder / CONFIG_FILE).read_text())
    config = SCNConfig.from_dict(description["config"])
    landmark_ids = tuple(description["landmark_ids"])
    weights = torch.load(folder / WEIGHTS_FILE, map_location="cpu", weights_only=True)
    network = build_network(config, len(landmark_ids))
    network.load_state_dict({name: tensor.float() for name, tensor in weights["network"].items()})
    network.eval()
    renderer = HeatmapRenderer(len(landmark_ids), config.sigma_initial, config.gamma)
    with torch.no_grad():
        renderer.sigmas.copy_(weights["sigmas"].float())
    return network, renderer, config, landmark_ids, description.get("record", {})
