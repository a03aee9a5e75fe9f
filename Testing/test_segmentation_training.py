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


def test_the_training_mix_oversamples_hard_cases_rotates_and_crops_the_asked_shares():
    from SternumSSMLib.segmentation_training import DemoTrainingSettings, training_phantom_parameters

    plain = DemoTrainingSettings()
    mixed = DemoTrainingSettings(oblique_share=0.5, crop_share=0.3, oversample_hard_cases=True)
    seeds = range(1000, 1400)
    drawn = [training_phantom_parameters(seed, mixed) for seed in seeds]
    before = [training_phantom_parameters(seed, plain) for seed in seeds]
    long_manubrium = np.mean([params.manubrium_body_ratio >= 0.7 for params, _ in drawn])
    assert 0.2 < long_manubrium < 0.3
    assert np.mean([params.manubrium_body_ratio >= 0.7 for params, _ in before]) < 0.2
    rotations = [np.degrees(np.arccos(np.clip((np.trace(np.array(p.direction_lps)) - 1) / 2, -1, 1)))
                 for p, _ in drawn]
    oblique = np.array(rotations) > 1e-6
    assert 0.42 < oblique.mean() < 0.58
    assert np.all((np.array(rotations)[oblique] >= 5.0 - 1e-6) & (np.array(rotations)[oblique] <= 25.0 + 1e-6))
    margins = np.array([margin for _, margin in drawn])
    assert 0.22 < np.mean(margins > 0) < 0.38 and np.all((margins == 0) | ((margins >= 10) & (margins <= 40)))
    assert all(margin == 0 and p.direction_lps == plain_p.direction_lps
               for (p, margin), (plain_p, _) in zip(before, before, strict=True))
    for params, _ in drawn:
        params.validate()



def test_fine_training_cases_take_a_ct_spacing_in_the_asked_share_and_leave_every_other_draw_alone():
    from dataclasses import replace

    from SternumSSMLib.segmentation_training import DemoTrainingSettings, training_phantom_parameters

    mixed = DemoTrainingSettings(oblique_share=0.5, crop_share=0.3, oversample_hard_cases=True)
    fine = replace(mixed, fine_share=0.5, fine_spacing_mm=(0.7, 1.5))
    seeds = range(1000, 1400)
    coarse_cases = [training_phantom_parameters(seed, mixed) for seed in seeds]
    fine_cases = [training_phantom_parameters(seed, fine) for seed in seeds]
    spacings = np.array([params.spacing for params, _ in fine_cases])
    is_fine = np.all(spacings != 2.0, axis=1)
    assert 0.42 < is_fine.mean() < 0.58
    assert np.all(spacings[~is_fine] == 2.0)
    assert np.all((spacings[is_fine] >= 0.7) & (spacings[is_fine] <= 1.5))
    assert len({tuple(row) for row in spacings[is_fine]}) == is_fine.sum()  # each axis drawn per case
    for (coarse, coarse_margin), (drawn, margin) in zip(coarse_cases, fine_cases, strict=True):
        assert replace(drawn, spacing=coarse.spacing) == coarse and margin == coarse_margin


def test_a_cropped_training_case_keeps_every_label_with_its_margin_and_geometry():
    from SternumSSMLib.phantom import generate_phantom, random_parameters
    from SternumSSMLib.segmentation_training import crop_to_structures

    phantom = generate_phantom(random_parameters(1002, spacing=(3.0, 3.0, 3.0)))
    image, labels = crop_to_structures(phantom.image, phantom.labels, 15.0)
    assert image.geometry.same_grid(labels.geometry)
    assert np.count_nonzero(labels.array) == np.count_nonzero(phantom.labels.array)
    assert labels.array.size < 0.5 * phantom.labels.array.size
    # the crop is a whole-voxel window of the scan: same voxels at the same LPS points
    offset = phantom.image.geometry.lps_to_index(image.geometry.origin_lps[None])[0]
    np.testing.assert_allclose(offset, np.round(offset), atol=1e-9)
    i, j, k = np.round(offset).astype(int)
    window = tuple(slice(start, start + size) for start, size in zip((k, j, i), image.array.shape, strict=True))
    assert np.array_equal(image.array, phantom.image.array[window])
    for axis in range(3):  # 15 mm at 3 mm = 5 voxels of margin, unless the scan ends first
        filled = np.flatnonzero(np.any(labels.array, axis=tuple(a for a in range(3) if a != axis)))
        assert filled[0] in (0, 5) and labels.array.shape[axis] - 1 - filled[-1] in (0, 5)
        assert window[axis].start == 0 or filled[0] == 5
