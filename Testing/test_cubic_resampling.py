"""The one-axis-at-a-time cubic resampling against nnU-Net's own default resampling: the same values."""

from __future__ import annotations

import numpy as np
import pytest
from nnunetv2.preprocessing.resampling import default_resampling
from SternumSSMLib import cubic_resampling
from SternumSSMLib.cubic_resampling import resample_data_or_seg_to_shape


def _ct(shape, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    data = rng.normal(0.0, 300.0, size=(1, *shape)).astype(np.float32)
    data[0, : shape[0] // 2] += 800.0  # an edge, where splines overshoot and the clip matters
    return data


@pytest.mark.parametrize(
    ("shape", "new_shape"),
    [
        ((40, 50, 61), (20, 17, 30)),  # down along every axis, as a fine CT to the network's grid
        ((30, 20, 25), (45, 41, 12)),  # up along two axes
        ((7, 9, 11), (7, 4, 13)),  # one axis unchanged
        ((1, 9, 2), (3, 5, 4)),  # tiny axes: the spline's padding carries them
    ],
)
def test_the_values_are_nnunets_own(shape, new_shape, monkeypatch):
    data = _ct(shape)
    expected = default_resampling.resample_data_or_seg_to_shape(data, new_shape, (1.0, 1.0, 1.0), (2.0, 2.0, 2.0))
    monkeypatch.setattr(cubic_resampling, "SLAB_VALUES", 37)  # many slabs, a partial one at the end
    ours = resample_data_or_seg_to_shape(data, new_shape, (1.0, 1.0, 1.0), (2.0, 2.0, 2.0))
    assert ours.dtype == expected.dtype == np.float32 and ours.shape == expected.shape
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-3)  # HU; measured 0 to 1e-11
    assert ours.max() <= data.max() and ours.min() >= data.min()


def test_cases_it_does_not_cover_go_to_nnunets_function():
    data = _ct((12, 14, 16))
    calls = []
    original = default_resampling.resample_data_or_seg_to_shape

    def spy(*args, **kwargs):
        calls.append(args)
        return original(*args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(default_resampling, "resample_data_or_seg_to_shape", spy)
        resample_data_or_seg_to_shape(data, (6, 7, 8), (1.0, 1.0, 1.0), (2.0, 2.0, 2.0))
        assert calls == []
        # thick slices: nnU-Net resamples in-plane and then along z by nearest neighbour
        resample_data_or_seg_to_shape(data, (6, 7, 3), (1.0, 1.0, 5.0), (2.0, 2.0, 10.0), force_separate_z=None)
        resample_data_or_seg_to_shape(data, (6, 7, 8), (1.0, 1.0, 1.0), (2.0, 2.0, 2.0), order=1)
        resample_data_or_seg_to_shape((data > 0).astype(np.float32), (6, 7, 8), (1, 1, 1), (2, 2, 2), is_seg=True)
    assert len(calls) == 3


def test_the_models_configuration_resamples_the_ct_with_it():
    import torch
    from SternumSSMLib.segmentation_inference import BUNDLED_MODEL, SegmentationModel, _inference_configuration

    predictor = SegmentationModel(BUNDLED_MODEL)._predictor
    plans = _inference_configuration(predictor.configuration_manager, torch.get_num_threads(), "plans")
    assert plans.resampling_fn_data.func is resample_data_or_seg_to_shape
    assert plans.resampling_fn_data.keywords == predictor.configuration_manager.resampling_fn_data.keywords
    data = _ct((20, 24, 22))
    np.testing.assert_allclose(
        plans.resampling_fn_data(data, (10, 12, 11), (1.0, 1.0, 1.0), (2.0, 2.0, 2.0)),
        predictor.configuration_manager.resampling_fn_data(data, (10, 12, 11), (1.0, 1.0, 1.0), (2.0, 2.0, 2.0)),
        rtol=0,
        atol=1e-3,
    )
    torch_input = _inference_configuration(predictor.configuration_manager, 1, "torch")
    assert torch_input.configuration["resampling_fn_data"] == "resample_torch_fornnunet"
