"""The model evaluation that writes evaluation.json: exact mirrored copies, and one held-out case end to end."""

from __future__ import annotations

import numpy as np
import pytest
from SternumSSMLib.geometry import reindexed
from SternumSSMLib.phantom import generate_phantom, random_parameters
from SternumSSMLib.segmentation_inference import BUNDLED_MODEL
from SternumSSMLib.segmentation_model_evaluation import MIRRORED, evaluate_segmentation_model, on_grid


def test_a_mirrored_copy_comes_back_onto_the_grid_voxel_for_voxel():
    labels = generate_phantom(random_parameters(5100, spacing=(4.0, 3.0, 3.5))).labels
    mirrored = reindexed(labels, MIRRORED)
    assert not mirrored.geometry.same_grid(labels.geometry)  # another index order, the same voxel centres
    np.testing.assert_array_equal(on_grid(mirrored, labels), labels.array)


@pytest.mark.slow
def test_one_held_out_case_with_and_without_the_automatic_roi():
    result = evaluate_segmentation_model(BUNDLED_MODEL, seeds=(5004,), copies=False)
    case = result["cases"][0]
    assert case["seed"] == 5004 and case["dice"]["Total"] > 0.9  # evaluation.json: 0.928
    assert case["full_pass"]["agreement_with_auto_roi"]["Total"] > 0.95
    summary = result["summary"]
    assert summary["mean_dice"]["Total"] == round(case["dice"]["Total"], 4)
    assert summary["full_pass"]["total_cost_of_auto_roi"] == round(
        summary["full_pass"]["mean_total"] - summary["mean_dice"]["Total"], 4
    )
