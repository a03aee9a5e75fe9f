"""SpatialConfiguration-Net library parts that need no trained model: config, preprocessing,
coordinate-space augmentation, target heatmaps, peak decoding, confidence and training I/O."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from SternumLandmarksLib.landmark_prediction import (
    LandmarkModel,
    decode_heatmaps,
    find_duplicates,
    peak_separation,
    refine_peaks,
)
from SternumLandmarksLib.landmark_preprocessing import (
    Augmentation,
    CTMismatchError,
    EmptyMaskError,
    FieldOfViewError,
    network_grid,
    prepare_case,
    random_augmentation,
)
from SternumLandmarksLib.landmark_training import (
    LOG_FILE,
    PLOT_FILE,
    RESUME_FILE,
    phantom_cases,
    read_log,
    train_landmark_model,
)
from SternumLandmarksLib.scn_config import STUDY_CONFIG, AugmentationConfig, SCNConfig, load_config
from SternumLandmarksLib.scn_model import WEIGHTS_FILE, HeatmapRenderer, ModelFolderError
from SternumSSMLib.anatomy import label_scheme
from SternumSSMLib.geometry import Volume, orientation_direction, rotation_matrix
from SternumSSMLib.phantom import PhantomParameters, generate_phantom, with_orientation

TINY = {"grid_shape_kji": [32, 24, 16], "spacing_mm": 6.0, "local_channels": 4, "spatial_channels": 4,
        "spatial_kernel": 3, "epochs": 2, "lr_decay_start_epoch": 1, "iterations_per_epoch": 2, "learning_rate": 1e-3}


def test_default_config_is_the_study_file():
    study = load_config(STUDY_CONFIG)
    assert study == SCNConfig()
    assert (study.local_channels, study.local_depth, study.dropout, study.spatial_kernel) == (64, 3, 0.5, 7)
    assert (study.sigma_initial, study.gamma, study.sigma_penalty, study.weight_decay) == (3.0, 1000.0, 100.0, 0.0005)


def test_the_ct_channel_experiment_differs_from_the_demo_config_only_in_the_ct_channel():
    from SternumLandmarksLib.scn_config import CPU_DEMO_CONFIG

    demo, with_ct = load_config(CPU_DEMO_CONFIG), load_config(CPU_DEMO_CONFIG.with_name("scn_cpu_demo_ct_channel.json"))
    assert (demo.input_channels, with_ct.input_channels) == (1, 2)
    assert replace(with_ct, ct_margin_mm=0.0) == demo


def test_config_refuses_unknown_keys_and_grids_the_network_cannot_pool():
    with pytest.raises(ValueError, match="Unknown SCN config keys"):
        SCNConfig.from_dict({"sigma": 2})
    with pytest.raises(ValueError, match="divisible by 8"):
        SCNConfig.from_dict({"grid_shape_kji": [60, 48, 32]})
    with pytest.raises(FileNotFoundError, match="not found"):
        load_config("/nonexistent/config.json")


@pytest.fixture(scope="module")
def axial_and_oblique():
    plain = PhantomParameters(spacing=(2.0, 2.0, 2.0))
    direction = rotation_matrix([1.0, -2.0, 0.5], 19.0) @ orientation_direction("RIA")
    oblique = with_orientation(plain, direction, spacing=(1.7, 2.3, 2.0))
    return generate_phantom(plain), generate_phantom(oblique)


def test_oblique_flipped_scan_gives_the_same_network_input(axial_and_oblique):
    axial, oblique = axial_and_oblique
    config = SCNConfig.from_dict({"grid_shape_kji": [64, 48, 32]})
    first = prepare_case("a", axial.labels, axial.landmarks.positions, config)
    second = prepare_case("b", oblique.labels, oblique.landmarks.positions, config)
    # The grid is LPS-aligned: its centre moves by under one network voxel, the mask overlaps almost fully.
    assert np.linalg.norm(first.grid.origin_lps - second.grid.origin_lps) < config.spacing_mm
    shift = np.rint((second.grid.origin_lps - first.grid.origin_lps) / config.spacing_mm).astype(int)
    assert np.all(shift == 0)
    overlap = np.minimum(first.mask, second.mask).sum() / np.maximum(first.mask, second.mask).sum()
    assert overlap > 0.8
    # The same physical landmarks land on the same grid indices.
    np.testing.assert_allclose(
        first.grid.index_to_lps(first.landmarks_kji), second.grid.index_to_lps(second.landmarks_kji), atol=1e-6
    )
    np.testing.assert_allclose(first.grid.index_to_lps(first.landmarks_kji), axial.landmarks.positions, atol=1e-9)


def test_sternum_frame_follows_the_tilted_sternum_on_any_scan_orientation(axial_and_oblique):
    axial, oblique = axial_and_oblique
    config = SCNConfig.from_dict({"grid_shape_kji": [96, 32, 48], "spacing_mm": 2.0, "grid_frame": "sternum"})
    first = prepare_case("a", axial.labels, axial.landmarks.positions, config)
    second = prepare_case("b", oblique.labels, oblique.landmarks.positions, config)
    direction = first.grid.direction_lps
    np.testing.assert_allclose(direction.T @ direction, np.eye(3), atol=1e-9)
    assert np.linalg.det(direction) == pytest.approx(1.0)
    # The phantom's sternum leans 22 degrees from vertical, its top posterior (+P in LPS); the curved
    # manubrium-body joint tips the mask's long axis a few degrees further.
    tilt = np.deg2rad(PhantomParameters().sternal_tilt_deg)
    assert np.degrees(np.arccos(direction[:, 2] @ [0.0, np.sin(tilt), np.cos(tilt)])) < 8.0
    assert np.degrees(np.arccos(direction[2, 2])) > 15.0
    assert direction[0, 0] > 0.99  # the grid's i axis stays patient left
    # An oblique, flipped scan of the same body gives the same frame and the same landmark indices.
    angle = np.degrees(np.arccos(np.clip((np.trace(direction.T @ second.grid.direction_lps) - 1) / 2, -1, 1)))
    assert angle < 1.0
    assert np.max(np.abs(first.landmarks_kji - second.landmarks_kji)) < 0.75
    np.testing.assert_allclose(first.grid.index_to_lps(first.landmarks_kji), axial.landmarks.positions, atol=1e-9)
    # The tilted sternum fits a grid that is only 64 mm deep; the LPS-aligned grid of that size refuses it.
    with pytest.raises(FieldOfViewError, match="lps frame"):
        network_grid(axial.labels, replace(config, grid_frame="lps"))


def test_grid_is_centred_on_the_mask_and_holds_every_landmark(axial_and_oblique):
    axial, _ = axial_and_oblique
    case = prepare_case("a", axial.labels, axial.landmarks.positions, SCNConfig.from_dict({}))
    inside = np.all((case.landmarks_kji >= 0) & (case.landmarks_kji <= np.array(case.mask.shape) - 1), axis=1)
    assert inside.all()
    # Landmarks sit on the outline, where the interpolated mask is partial.
    values = case.mask[tuple(np.rint(case.landmarks_kji).astype(int).T)]
    assert np.mean((values > 0.05) & (values < 0.95)) > 0.3 or np.mean(values > 0) > 0.8


def test_a_stray_island_does_not_move_the_grid(axial_and_oblique):
    """Predicted segmentations can keep a small island at the scan boundary; it must not shift the grid."""
    axial, _ = axial_and_oblique
    config = SCNConfig()
    with_island = axial.labels.array.copy()
    with_island[-3:, -3:, -3:] = 2  # 27 voxels of "sternal body" in a far corner
    island = network_grid(Volume(with_island, axial.labels.geometry), config)
    np.testing.assert_allclose(island.origin_lps, network_grid(axial.labels, config).origin_lps)


def test_empty_mask_is_refused_with_the_fix(axial_and_oblique):
    axial, _ = axial_and_oblique
    cartilage_only = Volume(np.where(axial.labels.array == 4, 4, 0).astype(np.uint8), axial.labels.geometry)
    with pytest.raises(EmptyMaskError, match="segment the CT first"):
        network_grid(cartilage_only, SCNConfig())


def test_ct_channel_is_windowed_kept_near_the_mask_and_orientation_free(axial_and_oblique):
    axial, oblique = axial_and_oblique
    config = SCNConfig.from_dict({"grid_shape_kji": [64, 48, 32], "ct_margin_mm": 12.0})
    first = prepare_case("a", axial.labels, None, config, axial.image)
    second = prepare_case("b", oblique.labels, None, config, oblique.image)
    assert first.channels.shape == (2, 64, 48, 32)
    mask, ct = first.channels
    assert ct.min() >= 0.0 and ct.max() <= 1.0
    # Nothing beyond the margin; the bone inside the mask saturates the window, soft tissue beside it does not.
    from scipy import ndimage

    far = ndimage.distance_transform_edt(mask < 0.5) * config.spacing_mm > config.ct_margin_mm + 1e-6
    assert far.any() and not ct[far].any()
    assert np.median(ct[mask > 0.9]) > 0.8
    ring = ~far & (mask == 0)
    assert 0.05 < np.median(ct[ring]) < 0.8
    # The oblique mirrored scan gives the same CT channel up to resampling.
    both = (first.channels[0] > 0.5) & (second.channels[0] > 0.5)
    assert np.median(np.abs(first.channels[1][both] - second.channels[1][both])) < 0.1


def test_a_model_input_that_needs_the_ct_refuses_to_go_without_it(axial_and_oblique):
    axial, _ = axial_and_oblique
    config = SCNConfig.from_dict({"ct_margin_mm": 10.0})
    with pytest.raises(CTMismatchError, match="give the CT"):
        prepare_case("a", axial.labels, None, config)
    broken = axial.image.array.astype(np.float32)
    broken[0, 0, 0] = np.nan
    with pytest.raises(CTMismatchError, match="NaN"):
        prepare_case("a", axial.labels, None, config, Volume(broken, axial.image.geometry))
    with pytest.raises(ValueError, match="ct_margin_mm"):
        SCNConfig.from_dict({"ct_margin_mm": -1.0})
    # The study's input: the mask alone, whatever CT is passed.
    assert prepare_case("a", axial.labels, None, SCNConfig(), axial.image).channels.shape[0] == 1


def test_a_mask_larger_than_the_grid_is_refused_with_its_size(axial_and_oblique):
    axial, _ = axial_and_oblique
    leaked = axial.labels.array.copy()
    body = label_scheme().by_name("Sternal_body").value
    # A leak through the sternum along the whole scan makes the "sternum" longer than the grid.
    _, j, i = np.rint(np.argwhere(leaked == body).mean(axis=0)).astype(int)
    leaked[:, j - 3 : j + 3, i - 3 : i + 3] = body
    with pytest.raises(FieldOfViewError, match=r"grid holds only 93 x 141 x 189 mm.*leaks"):
        network_grid(Volume(leaked, axial.labels.geometry), SCNConfig.from_dict({"grid_shape_kji": [64, 48, 32]}))
    network_grid(axial.labels, SCNConfig.from_dict({"grid_shape_kji": [64, 48, 32]}))  # the sternum itself fits


def test_augmentation_moves_points_exactly_with_the_image():
    """A blob's centroid after resampling through the transform sits where the points map says."""
    shape = (40, 36, 32)
    rng = np.random.default_rng(3)
    centre = np.array([17.3, 20.6, 12.2])
    grid = np.indices(shape).astype(float)
    blob = np.exp(-sum((grid[axis] - centre[axis]) ** 2 for axis in range(3)) / (2 * 2.0**2))
    for _ in range(5):
        augmentation = random_augmentation(rng, shape, AugmentationConfig(translation_voxels=5, rotation_deg=5))
        moved = augmentation.image(blob)
        centroid = (np.indices(shape).reshape(3, -1) * moved.ravel()).sum(axis=1) / moved.sum()
        np.testing.assert_allclose(centroid, augmentation.points(centre)[0], atol=0.05)
    assert np.allclose(Augmentation.identity().points(centre), centre)


def test_augmentation_stays_within_the_configured_ranges():
    rng = np.random.default_rng(0)
    shape = (64, 48, 32)
    centre = (np.array(shape) - 1) / 2
    for _ in range(50):
        augmentation = random_augmentation(rng, shape, AugmentationConfig())
        scale = 1 / np.cbrt(np.linalg.det(augmentation.matrix))
        assert 0.9 - 1e-9 <= scale <= 1.1 + 1e-9
        rotation = augmentation.matrix * scale
        angle = np.degrees(np.arccos(np.clip((np.trace(rotation) - 1) / 2, -1, 1)))
        assert angle <= 5.0 + 1e-6
        translation = augmentation.matrix @ centre + augmentation.offset - centre
        assert np.all(np.abs(translation) <= 5.0 + 1e-9)


def test_target_heatmap_is_the_normalised_gaussian_with_learnable_sigma():
    renderer = HeatmapRenderer(2, sigma_initial=3.0, gamma=1000.0)
    points = torch.tensor([[[20.25, 15.5, 10.75], [float("nan")] * 3]])
    heatmaps = renderer(points, (40, 32, 24))
    assert heatmaps.shape == (1, 2, 40, 32, 24)
    assert float(heatmaps[0, 1].detach().abs().max()) == 0.0
    # gamma times a normalised Gaussian sums to gamma.
    assert float(heatmaps[0, 0].detach().sum()) == pytest.approx(1000.0, rel=1e-3)
    refined, _ = refine_peaks(heatmaps[0, :1].detach().numpy())
    np.testing.assert_allclose(refined[0], [20.25, 15.5, 10.75], atol=0.02)
    heatmaps[0, 0].max().backward()
    assert renderer.sigmas.grad is not None and renderer.sigmas.grad[0] < 0


def test_a_missing_landmark_keeps_the_sigma_gradient_finite():
    """A truncated scan has NaN landmarks; their zero heatmaps must not poison training with NaN."""
    renderer = HeatmapRenderer(2, sigma_initial=3.0, gamma=1000.0)
    points = torch.tensor([[[10.0, 8.0, 6.0], [float("nan")] * 3]])
    (renderer(points, (16, 16, 16)) ** 2).sum().backward()
    assert torch.isfinite(renderer.sigmas.grad).all()
    assert renderer.sigmas.grad[1] == 0.0


def test_sub_voxel_refinement_and_confidence_shape():
    renderer = HeatmapRenderer(3, 2.0, 1000.0)
    points = torch.tensor([[[10.4, 9.7, 8.2], [15.0, 6.0, 5.0], [0.0, 0.0, 0.0]]])
    heatmaps = renderer(points, (24, 20, 16))[0].detach().numpy()
    heatmaps[2] = 0.0
    # A second mode for landmark 1: the duplicate failure pattern.
    heatmaps[1] += renderer(torch.tensor([[[15.0, 14.0, 5.0]] * 3]), (24, 20, 16))[0, 1].detach().numpy() * 0.9
    peaks, values = refine_peaks(heatmaps)
    np.testing.assert_allclose(peaks[0], [10.4, 9.7, 8.2], atol=0.02)
    separation = peak_separation(heatmaps, peaks, np.full(3, 6.0))
    assert separation[0] > 0.98  # exp(-9/2) of the peak remains at 3 sigma
    assert separation[1] < 0.2
    assert separation[2] == 0.0 and values[2] == 0.0


def test_decoding_places_confident_points_and_leaves_hopeless_ones_unplaced():
    config = SCNConfig.from_dict({"grid_shape_kji": [24, 24, 16], "spacing_mm": 2.0, "duplicate_distance_mm": 5.0})
    renderer = HeatmapRenderer(4, 3.0, 1000.0)
    points = torch.tensor([[[8.0, 8.0, 8.0], [8.5, 8.0, 8.0], [16.0, 16.0, 8.0], [0.0, 0.0, 0.0]]])
    heatmaps = renderer(points, (24, 24, 16))[0].detach().numpy()
    heatmaps[3] = 0.0
    heatmaps[2] *= 0.3  # a weak peak: placed, but not confident
    from SternumLandmarksLib.landmark_preprocessing import NetworkGrid

    grid = NetworkGrid(origin_lps=np.array([10.0, -20.0, 5.0]), spacing_mm=2.0, shape_kji=(24, 24, 16))
    prediction = decode_heatmaps(heatmaps, grid, renderer, config, ("A", "B", "C", "D"))
    np.testing.assert_allclose(prediction.points("LPS").positions[0], [26.0, -4.0, 21.0], atol=0.05)
    np.testing.assert_allclose(prediction.points("RAS").positions[0], [-26.0, 4.0, 21.0], atol=0.05)
    assert prediction.placed.tolist() == [True, True, True, False]
    assert np.isnan(prediction.points().positions[3]).all()
    assert prediction.confident.tolist() == [True, True, False, False]
    assert prediction.duplicate_ids == {"A", "B"}
    text = "\n".join(prediction.flags())
    assert "D not placed" in text and "C low confidence" in text and "A and B are 1.0 mm apart" in text


def test_find_duplicates_ignores_missing_points():
    points = np.array([[0, 0, 0], [0, 0, 2.0], [np.nan] * 3, [0, 0, 20.0]])
    assert find_duplicates(points, ("a", "b", "c", "d"), 3.0) == [("a", "b", 2.0)]


@pytest.fixture(scope="module")
def tiny_cases():
    return phantom_cases([2000, 2001, 2002], spacing_mm=4.0)


def test_training_writes_log_plot_and_a_weights_only_model(tmp_path, tiny_cases):
    config = SCNConfig.from_dict(TINY)
    summary = train_landmark_model(tiny_cases[:2], tiny_cases[2:], tmp_path / "model", config, show_progress=False)
    folder = tmp_path / "model"
    rows = read_log(folder / LOG_FILE)
    assert [int(row["epoch"]) for row in rows] == [1, 2]
    assert all(float(row["val_mean_ipe_mm"]) > 0 for row in rows)
    assert summary["best_mean_ipe_mm"] == pytest.approx(min(float(row["val_mean_ipe_mm"]) for row in rows))
    assert (folder / PLOT_FILE).stat().st_size > 1000
    torch.load(folder / WEIGHTS_FILE, weights_only=True)
    model = LandmarkModel(folder)
    prediction = model.predict(tiny_cases[0].labels)
    assert prediction.landmarks_lps.names == tiny_cases[0].landmarks.names
    assert json.loads((folder / "config.json").read_text())["record"]["best_epoch"] == summary["best_epoch"]


def test_a_model_trained_with_the_ct_channel_reads_the_ct(tmp_path, tiny_cases):
    config = SCNConfig.from_dict({**TINY, "ct_margin_mm": 12.0, "epochs": 1})
    train_landmark_model(tiny_cases[:2], tiny_cases[2:], tmp_path / "model", config, show_progress=False)
    model = LandmarkModel(tmp_path / "model")
    assert model.reads_ct
    first_convolution = next(m for m in model.network.modules() if isinstance(m, torch.nn.Conv3d))
    assert first_convolution.in_channels == 2
    with pytest.raises(CTMismatchError, match="give the CT"):
        model.predict(tiny_cases[0].labels)
    prediction = model.predict(tiny_cases[0].labels, tiny_cases[0].ct)
    assert prediction.landmarks_lps.names == tiny_cases[0].landmarks.names


def test_interrupted_training_resumes_to_the_same_weights(tmp_path, tiny_cases):
    config = SCNConfig.from_dict(TINY)
    train_landmark_model(tiny_cases[:2], tiny_cases[2:], tmp_path / "straight", config, show_progress=False)

    class SimulatedCrashError(Exception):
        pass

    def stop(row):
        raise SimulatedCrashError

    with pytest.raises(SimulatedCrashError):
        train_landmark_model(tiny_cases[:2], tiny_cases[2:], tmp_path / "resumed", config, False, after_epoch=stop)
    assert len(read_log(tmp_path / "resumed" / LOG_FILE)) == 1
    # With progress shown, a training iteration is first timed to print the expected time: that probe
    # must leave the weights and random streams as they were.
    train_landmark_model(tiny_cases[:2], tiny_cases[2:], tmp_path / "resumed", config, show_progress=True)
    assert [row["epoch"] for row in read_log(tmp_path / "resumed" / LOG_FILE)] == ["1", "2"]
    straight = torch.load(tmp_path / "straight" / RESUME_FILE, weights_only=True)["network"]
    resumed = torch.load(tmp_path / "resumed" / RESUME_FILE, weights_only=True)["network"]
    for name, tensor in straight.items():
        torch.testing.assert_close(resumed[name], tensor)


def test_training_refuses_a_folder_it_cannot_resume_and_a_changed_config(tmp_path, tiny_cases):
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="choose a new output folder"):
        train_landmark_model(tiny_cases[:1], [], occupied, SCNConfig.from_dict(TINY), show_progress=False)
    assert (occupied / "notes.txt").read_text() == "keep me"
    train_landmark_model(tiny_cases[:1], [], tmp_path / "model", SCNConfig.from_dict(TINY), show_progress=False)
    with pytest.raises(ValueError, match="same config"):
        changed = SCNConfig.from_dict({**TINY, "learning_rate": 0.5})
        train_landmark_model(tiny_cases[:1], [], tmp_path / "model", changed, show_progress=False)


def test_missing_model_folder_names_the_fix(tmp_path):
    with pytest.raises(ModelFolderError, match="train-landmarks"):
        LandmarkModel(tmp_path)
    shutil.rmtree(tmp_path)


def test_calibration_places_what_validation_says_is_usually_right_and_refuses_a_hopeless_model():
    from SternumLandmarksLib.landmark_calibration import calibrate_thresholds

    confidence = np.array([0.9, 0.8, 0.7, 0.3, 0.2, 0.1, 0.05, 0.01])
    errors = np.array([1.0, 1.5, 2.0, 15.0, 2.0, 20.0, 30.0, np.nan])  # NaN: no ground truth, ignored
    calibration = calibrate_thresholds(confidence, errors, ["a"])
    # From 0.05 on, 4 of 7 points are within 10 mm (>= half); from 0.7 on none is beyond 10 mm (<= 5 %).
    assert (calibration.placed_above, calibration.confident_above) == (0.05, 0.7)
    assert calibration.validation_points == 7 and calibration.to_dict()["chosen_by"].startswith("placed_above")
    hopeless = calibrate_thresholds(np.array([0.02, 0.01]), np.array([90.0, 95.0]), ["a"])
    assert (hopeless.placed_above, hopeless.confident_above) == (1.0, 1.0)
    assert hopeless.validation_mean_ipe_mm == pytest.approx(92.5)


def test_the_bundled_model_keeps_its_config_thresholds():
    from SternumLandmarksLib.landmark_calibration import CALIBRATION_FILE
    from SternumLandmarksLib.landmark_commands import threshold_source
    from SternumLandmarksLib.landmark_prediction import BUNDLED_LANDMARK_MODEL

    assert not (BUNDLED_LANDMARK_MODEL / CALIBRATION_FILE).exists()
    model = LandmarkModel(BUNDLED_LANDMARK_MODEL)
    assert model.calibration is None and (model.config.placed_above, model.config.confident_above) == (0.01, 0.2)
    assert "from the model's config" in threshold_source(model)


def test_training_calibrates_thresholds_and_place_landmarks_says_why_points_are_unplaced(tmp_path, tiny_cases, capsys):
    from SternumLandmarksLib.landmark_calibration import CALIBRATION_FILE
    from SternumSSMLib.case_files import write_volume
    from SternumSSMLib.cli import main

    config = tmp_path / "tiny.json"
    config.write_text(json.dumps({**TINY, "grid_frame": "lps"}))
    code = main(["train-landmarks", "--phantoms", "2", "--validation-phantoms", "1", "--preset", "cpu",
                 "--config", str(config), "--output", str(tmp_path / "model"), "--device", "cpu"])  # fmt: skip
    assert code == 0
    captured = capsys.readouterr()
    assert "Expected time on cpu: about" in captured.err and "per epoch (2 iterations of" in captured.err
    summary = json.loads(captured.out)
    calibration = json.loads((tmp_path / "model" / CALIBRATION_FILE).read_text())
    assert summary["calibration"] == calibration and calibration["validation_cases"] == ["phantom3000"]
    assert "lowest confidence" in calibration["chosen_by"] and calibration["validation_points"] == 34
    model = LandmarkModel(tmp_path / "model")
    assert model.config.local_channels == 4 and model.config.grid_frame == "lps"  # cpu preset, then --config
    assert (model.config.placed_above, model.config.confident_above) == (
        calibration["placed_above"], calibration["confident_above"])

    # Two epochs of a 4-channel network: an under-trained model; its calibrated threshold leaves it
    # placing nothing, and the command says why, one line per point.
    assert calibration["placed_above"] == 1.0
    segmentation = write_volume(tiny_cases[0].labels, tmp_path / "case1.nrrd")
    assert main(["place-landmarks", str(segmentation), "--model", str(tmp_path / "model"),
                 "--output", str(tmp_path / "out")]) == 0  # fmt: skip
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("case1.nrrd: 0 of 34 landmarks placed; thresholds calibrated on 1 validation case")
    assert lines[1].startswith("  not placed (34): No landmark placed: all 34 of the model's peaks")
    assert "below its calibrated placement threshold 1. The model may be under-trained (validation mean IPE" in lines[1]
    assert lines[2].startswith("    L01  confidence ") and len(lines) == 2 + 34
    record = json.loads((tmp_path / "out" / "case1.json").read_text())
    assert record["unplaced_reason"] == lines[1].split(": ", 1)[1]


def test_a_truncated_model_and_a_2d_segmentation_give_one_line_errors(tmp_path, capsys):
    from SternumLandmarksLib.landmark_prediction import BUNDLED_LANDMARK_MODEL
    from SternumSSMLib.cli import main

    model = tmp_path / "model"
    shutil.copytree(BUNDLED_LANDMARK_MODEL, model)
    weights = (model / WEIGHTS_FILE).read_bytes()
    (model / WEIGHTS_FILE).write_bytes(weights[: len(weights) // 2])
    sitk.WriteImage(sitk.GetImageFromArray(np.ones((3, 4, 5), np.uint8)), str(tmp_path / "volume.nrrd"))
    sitk.WriteImage(sitk.GetImageFromArray(np.ones((4, 5), np.uint8)), str(tmp_path / "slice.nrrd"))
    assert main(["place-landmarks", str(tmp_path / "volume.nrrd"), "--model", str(model),
                 "--output", str(tmp_path / "out")]) == 2  # fmt: skip
    error = capsys.readouterr().err.strip().splitlines()
    assert error[1:] == [  # after "Loading landmark model ...", one line and no traceback
        f"sternum-ssm place-landmarks: error: Landmark model file {model / WEIGHTS_FILE} is damaged or incomplete "
        "(PytorchStreamReader failed reading zip archive: failed finding central directory); copy the model folder "
        "again, or retrain it with `sternum-ssm train-landmarks` (an interrupted run resumes)."
    ]
    assert main(["place-landmarks", str(tmp_path / "slice.nrrd"), "--output", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "slice.nrrd is a 2D image with 1 component(s); a segmentation must be a 3D" in error[0]
    assert not (tmp_path / "out").exists()
