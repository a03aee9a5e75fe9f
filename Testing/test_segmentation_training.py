"""The CPU demo trainer's two xiphoid levers: a heavier cross-entropy weight and xiphoid-centred patches.

Built from the bundled model's own plans and dataset.json, as the training script builds it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from SternumSSMLib.anatomy import label_scheme
from SternumSSMLib.segmentation_inference import BUNDLED_MODEL
from SternumSSMLib.segmentation_training import _cpu_demo_trainer_class, _focused_data_loader_class

XIPHOID = label_scheme().by_name("Xiphoid").value


@pytest.fixture()
def trainer_factory(tmp_path, monkeypatch):
    # nnU-Net reads its folders from the environment when used; the trainer must not write elsewhere.
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(name, str(tmp_path / name))
    plans = json.loads((BUNDLED_MODEL / "plans.json").read_text())
    dataset = json.loads((BUNDLED_MODEL / "dataset.json").read_text())

    def make(**options):
        trainer_class = _cpu_demo_trainer_class(**options)
        return trainer_class({**plans, "continue_training": False}, "3d_fullres", "all", dataset)

    return make


def _loss_with_wrong_xiphoid(trainer) -> float:
    """The loss (full-resolution term) when the xiphoid voxels are predicted as sternal body."""
    target = torch.zeros(1, 1, 8, 8, 8)
    target[:, :, 2:5, 2:5, 2:5] = XIPHOID
    logits = torch.full((1, 5, 8, 8, 8), -4.0)
    logits[:, 0] = 4.0
    logits[:, 2, 2:5, 2:5, 2:5] = 4.0
    logits[:, 0, 2:5, 2:5, 2:5] = -4.0
    return float(trainer._build_loss().loss(logits, target))


def test_xiphoid_loss_weight_reaches_the_cross_entropy(trainer_factory):
    plain, weighted = trainer_factory(), trainer_factory(xiphoid_loss_weight=5.0)
    assert plain._build_loss().loss.ce.weight is None
    weights = weighted._build_loss().loss.ce.weight
    assert weights[XIPHOID] == 5.0 and torch.all(weights[np.arange(5) != XIPHOID] == 1.0)
    assert _loss_with_wrong_xiphoid(weighted) > _loss_with_wrong_xiphoid(plain) + 1.0


def test_focused_loader_centres_the_given_share_of_foreground_patches_on_the_xiphoid(monkeypatch):
    from nnunetv2.training.dataloading.data_loader import nnUNetDataLoader

    chosen = []

    def record(self, data_shape, force_fg, class_locations, overwrite_class=None, verbose=False):
        chosen.append(overwrite_class)
        return None

    monkeypatch.setattr(nnUNetDataLoader, "get_bbox", record)
    loader = _focused_data_loader_class(XIPHOID, 0.35).__new__(_focused_data_loader_class(XIPHOID, 0.35))
    locations = {label: np.zeros((1, 4), int) for label in (1, 2, 3, 4)}
    np.random.seed(0)
    for _ in range(2000):
        loader.get_bbox((64, 64, 64), True, locations)
    share = chosen.count(XIPHOID) / len(chosen)
    assert 0.31 < share < 0.39
    chosen.clear()
    loader.get_bbox((64, 64, 64), False, locations)  # a random (not foreground) patch stays random
    assert chosen == [None]
