"""The SpatialConfiguration-Net is our own code: the bundled model loads into it strictly, weights only, and
it computes what the library it was trained with (landmarker 0.4.1's OriginalSpatialConfigurationNet3d)
computed: reference figures below were recorded from that network with the same weights and input."""

from __future__ import annotations

import torch
from SternumLandmarksLib.landmark_prediction import BUNDLED_LANDMARK_MODEL
from SternumLandmarksLib.scn_model import WEIGHTS_FILE, load_model_folder

# Per-heatmap sum and maximum over the grid, for the bundled weights on the seeded random mask below.
# The network before owning it gave exactly these (largest difference of any voxel 0.0).
REFERENCE_SUMS = [
    2617.53, -803.321, 158.575, 1874.51, 673.69, 694.51, 426.058, 809.686, -130.809, 329.073, 1801.09, -483.089,
    -1870.03, -2463.26, -41.3588, -2821.43, -2143.67, -1609.85, -436.161, 626.879, 74.73, -2085.48, 239.619,
    -34.9424, -293.646, 334.735, -590.644, 65.9318, -594.568, 818.812, 98.8409, -535.339, 2931.87, 958.263,
]
REFERENCE_MAXES = [
    0.145493, 0.115484, 0.0975405, 0.0719554, 0.083117, 0.104703, 0.117246, 0.118759, 0.0812125, 0.0651171,
    0.0574212, 0.0632233, 0.0798411, 0.0783911, 0.107963, 0.147174, 0.0875304, 0.158835, 0.0836538, 0.105393,
    0.0898832, 0.0844026, 0.0780432, 0.0509509, 0.0819574, 0.0983251, 0.0400861, 0.0490436, 0.0836145, 0.146254,
    0.170925, 0.0945844, 0.0855384, 0.129496,
]


def test_bundled_weights_load_strictly_into_our_network():
    weights = torch.load(BUNDLED_LANDMARK_MODEL / WEIGHTS_FILE, map_location="cpu", weights_only=True)["network"]
    network, _, config, landmark_ids, _ = load_model_folder(BUNDLED_LANDMARK_MODEL)
    expected = {name: tuple(tensor.shape) for name, tensor in weights.items()}
    assert {name: tuple(tensor.shape) for name, tensor in network.state_dict().items()} == expected
    assert not network.training and len(landmark_ids) == 34 and config.local_depth == 3


def test_bundled_model_gives_the_heatmaps_it_was_trained_to_give():
    network, _, config, _, _ = load_model_folder(BUNDLED_LANDMARK_MODEL)
    generator = torch.Generator().manual_seed(0)
    mask = (torch.rand((1, 1, *config.grid_shape_kji), generator=generator) > 0.7).float()
    with torch.no_grad():
        heatmaps = network(mask)[0].flatten(1)
    torch.testing.assert_close(heatmaps.sum(1), torch.tensor(REFERENCE_SUMS), rtol=1e-4, atol=0.05)
    torch.testing.assert_close(heatmaps.amax(1), torch.tensor(REFERENCE_MAXES), rtol=1e-4, atol=1e-5)

