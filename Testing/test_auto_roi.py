"""The automatic ROI's geometry: the structures' box in LPS, its faces, growing it, and QA on a box."""

from __future__ import annotations

import numpy as np
import pytest
from SternumSSMLib.auto_roi import fit_to_tiles, grow, structures_box, touched_inner_faces
from SternumSSMLib.geometry import ImageGeometry, Volume, orientation_direction, rotation_matrix
from SternumSSMLib.geometry import reindexed as reoriented
from SternumSSMLib.phantom import generate_phantom, random_parameters
from SternumSSMLib.qa import qa_flags
from SternumSSMLib.roi import crop, index_slices, with_border


def _block_labels(direction: np.ndarray, origin=(-40.0, 20.0, 300.0)) -> Volume:
    geometry = ImageGeometry(origin_lps=origin, spacing=(2.0, 1.5, 3.0), direction_lps=direction, size=(30, 40, 20))
    array = np.zeros(geometry.shape_kji, np.uint8)
    array[5:9, 10:20, 7:12] = 2
    array[6, 12, 13] = 4
    return Volume(array, geometry)


def _physical_box(labels: Volume) -> np.ndarray:
    box = structures_box(labels, 10.0)
    return np.r_[box.lo_lps, box.hi_lps]


def test_the_structures_box_is_the_same_for_every_axis_order_and_a_tiny_origin_shift():
    labels = _block_labels(np.eye(3))
    expected = _physical_box(labels)
    # whole voxels: [7, 13] along i at 2 mm, [10, 19] along j at 1.5 mm, [5, 8] along k at 3 mm
    np.testing.assert_allclose(expected[:3], [-40 + 14.0 - 1 - 10, 20 + 15.0 - 0.75 - 10, 300 + 15.0 - 1.5 - 10])
    np.testing.assert_allclose(expected[3:], [-40 + 26.0 + 1 + 10, 20 + 28.5 + 0.75 + 10, 300 + 24.0 + 1.5 + 10])
    for code in ("LPS", "RAS", "PLI", "SRA", "IPR"):
        np.testing.assert_allclose(_physical_box(reoriented(labels, code)), expected, atol=1e-9)
    shifted = _block_labels(np.eye(3), origin=(-40.0 + 1e-9, 20.0, 300.0 - 1e-9))
    np.testing.assert_allclose(_physical_box(shifted), expected, atol=1e-6)


def test_every_storage_of_the_same_voxels_reindexes_to_one_array_and_its_slices_map_back():
    from SternumSSMLib.geometry import all_orientation_codes, lps_order_code, slices_before_reindexing

    volume = Volume(np.arange(7 * 6 * 5).reshape(7, 6, 5), ImageGeometry(
        origin_lps=(1.0, 2.0, 3.0), spacing=(1.0, 2.0, 3.0), direction_lps=np.eye(3), size=(5, 6, 7)))
    slices = (slice(1, 5), slice(2, 4), slice(0, 3))
    for code in all_orientation_codes():
        stored = reoriented(volume, code)
        ordered_code = lps_order_code(stored.geometry)
        np.testing.assert_array_equal(reoriented(stored, ordered_code).array, volume.array)
        part = stored.array[slices_before_reindexing(slices, ordered_code, stored.array.shape)]
        np.testing.assert_array_equal(np.sort(part, axis=None), np.sort(volume.array[slices], axis=None))


def test_the_box_of_an_oblique_grid_holds_every_labelled_voxel_and_crops_back_to_them():
    labels = _block_labels(rotation_matrix([1.0, 2.0, 3.0], 23.0) @ orientation_direction("PIL"))
    box = structures_box(labels, 0.0)
    present = np.argwhere(labels.array)[:, ::-1].astype(float)
    centres = labels.geometry.index_to_lps(present)
    assert np.all(centres >= box.lo_lps) and np.all(centres <= box.hi_lps)
    slices = index_slices(labels.geometry, box)
    inside = crop(labels, slices)
    assert int(np.count_nonzero(inside.array)) == int(np.count_nonzero(labels.array))


def test_nothing_labelled_has_no_box():
    labels = _block_labels(np.eye(3))
    assert structures_box(Volume(np.zeros_like(labels.array), labels.geometry), 10.0) is None


def test_only_inner_faces_with_labels_count_and_growing_opens_just_those():
    shape = (20, 40, 30)
    slices = (slice(0, 10), slice(5, 25), slice(8, 30))  # low k and high i lie on the CT's own faces
    spacing_kji = np.array([3.0, 1.5, 2.0])
    crop_labels = np.zeros((10, 20, 22), np.uint8)
    crop_labels[0, 3:9, 3:9] = 1  # low k face: the CT's own face, the scan cuts it there
    crop_labels[4:7, -1, 5:8] = 2  # high j face, inside the CT: 9 voxels of 6 mm^2, a section of 54 mm^2
    crop_labels[5:9, 6:12, -1] = 3  # high i face: the CT's own face
    crop_labels[2, 8, 0] = 4  # low i face, inside the CT: one stray voxel (4.5 mm^2) is no section
    assert touched_inner_faces(crop_labels, slices, shape, spacing_kji) == [(1, +1)]
    crop_labels[2:5, 8, 0] = 4  # three voxels along k: 13.5 mm^2, still under 25 mm^2
    assert touched_inner_faces(crop_labels, slices, shape, spacing_kji) == [(1, +1)]
    crop_labels[2:5, 8:10, 0] = 4  # 27 mm^2: a structure may go on past the face
    assert touched_inner_faces(crop_labels, slices, shape, spacing_kji) == [(1, +1), (2, -1)]
    grown = grow(slices, [(1, +1)], np.array([3.0, 1.5, 2.0]), 6.0, shape)
    assert grown == (slice(0, 10), slice(5, 29), slice(8, 30))
    assert grow(slices, [(1, -1)], np.array([3.0, 1.5, 2.0]), 60.0, shape)[1] == slice(0, 25)
    assert with_border(slices, shape) == (slice(0, 11), slice(4, 26), slice(7, 30))


@pytest.fixture(scope="module")
def phantom():
    return generate_phantom(random_parameters(5004, spacing=(2.0, 2.0, 2.0)))


def test_qa_on_the_box_with_its_border_gives_the_flags_of_the_whole_grid(phantom):
    """segment_ct runs QA on the box plus one voxel: the same flags as on the whole grid, where the box's
    inner faces are background; a box reaching the CT's face still reports the scan cutting a structure."""
    labels = phantom.labels
    whole = [flag.code for flag in qa_flags(labels, ct=phantom.image)]
    slices = index_slices(labels.geometry, structures_box(labels, 0.0))  # the labels touch every face of the box
    assert all(part.start > 0 for part in slices)
    on_box = [flag.code for flag in qa_flags(crop(labels, with_border(slices, labels.array.shape)), ct=phantom.image)]
    assert on_box == whole
    assert "cut" in [flag.code for flag in qa_flags(crop(labels, slices), ct=phantom.image)]
    # a truncated scan: the box reaches the top slice, and the cut flag survives the crop
    truncated = generate_phantom(random_parameters(5004, spacing=(2.0, 2.0, 2.0), truncate_superior_mm=50.0))
    slices = index_slices(truncated.labels.geometry, structures_box(truncated.labels, 3.0))
    cropped = crop(truncated.labels, with_border(slices, truncated.labels.array.shape))
    codes = [flag.code for flag in qa_flags(cropped, ct=truncated.image)]
    assert "cut" in codes
    assert codes == [flag.code for flag in qa_flags(truncated.labels, ct=truncated.image)]



def _tile_grid(step_share: float = 0.8):
    from SternumSSMLib.segmentation_inference import TileGrid

    patch = (64, 80, 80)
    return TileGrid(patch, tuple(step_share * length for length in patch), (2.0, 2.0, 2.0))


@pytest.mark.parametrize("step_share", [0.5, 0.8, 1.0])
def test_the_tile_count_is_nnunets_own_and_longest_is_the_most_those_tiles_cover(step_share):
    from nnunetv2.inference.sliding_window_prediction import compute_steps_for_sliding_window

    grid = _tile_grid(step_share)
    for axis, ct_spacing in ((0, 1.0), (1, 0.7), (2, 0.83)):
        for ct_voxels in range(20, 700, 7):
            model_voxels = round(ct_voxels * ct_spacing / 2.0)
            padded = max(model_voxels, grid.patch[axis])  # nnU-Net pads a smaller image to one tile
            steps = compute_steps_for_sliding_window((padded,) * 3, (grid.patch[axis],) * 3, step_share)[0]
            assert grid.tiles(axis, ct_voxels, ct_spacing) == len(steps)
        for tiles in (1, 2, 3, 5):
            longest = grid.longest(axis, tiles, ct_spacing)
            assert grid.tiles(axis, longest, ct_spacing) == tiles
            assert grid.tiles(axis, longest + 1, ct_spacing) == tiles + 1


def test_fitting_the_box_to_the_tiles_never_adds_a_tile_and_takes_the_margin_those_tiles_hold():
    grid, spacing = _tile_grid(), np.array([1.0, 0.7, 0.7])
    shape = (400, 500, 500)
    # k: 110 voxels at 1 mm (55 model voxels) inside, 120 outside: one tile of 64 holds both, so all the margin;
    # j: 150 voxels at 0.7 mm inside, 240 outside (84, two tiles): one tile holds 230 voxels (80.5 model
    #    voxels, which numpy rounds to 80), so 40 more on each side;
    # i: the outer box meets the scan's edge, so the room on that side is what there is.
    inner = (slice(100, 210), slice(200, 350), slice(5, 205))
    outer = (slice(95, 215), slice(155, 395), slice(0, 250))
    fitted = fit_to_tiles(inner, outer, grid, spacing)
    for axis, (small, large, box) in enumerate(zip(inner, outer, fitted, strict=True)):
        assert large.start <= box.start <= small.start and small.stop <= box.stop <= large.stop
        tiles = grid.tiles(axis, small.stop - small.start, spacing[axis])
        assert grid.tiles(axis, box.stop - box.start, spacing[axis]) == tiles
        assert box.stop - box.start == min(grid.longest(axis, tiles, spacing[axis]), large.stop - large.start)
        assert 0 <= box.stop <= shape[axis]
    assert fitted[0] == outer[0]
    assert fitted[1] == slice(160, 390)
    assert fitted[2] == slice(0, 230)  # 5 voxels of room below, the other 25 above
    assert fit_to_tiles(inner, inner, grid, spacing) == inner


@pytest.mark.parametrize("code", ["LPS", "RAS", "PLI", "SRA", "IPR"])
def test_the_models_tiles_follow_the_patient_axes_of_any_axis_order(code):
    from SternumSSMLib.segmentation_inference import BUNDLED_MODEL, SegmentationModel

    model = SegmentationModel(BUNDLED_MODEL)
    geometry = reoriented(_block_labels(np.eye(3)), code).geometry
    grid = model.tile_grid(geometry)
    # the bundled plans: 64 voxels along S-I, 80 along P-A and L-R, all at 2 mm; fast preset step 0.8
    superior_axis = int(np.argmax(np.abs(geometry.direction_lps[2])))  # index axis (i, j, k) along z
    assert [grid.patch[2 - axis] for axis in range(3)] == [64 if axis == superior_axis else 80 for axis in range(3)]
    assert grid.spacing_mm == (2.0, 2.0, 2.0)
    np.testing.assert_allclose(grid.step, [0.8 * length for length in grid.patch])


# --------------------------------------------------------------------------- with the bundled model's localiser


@pytest.fixture(scope="module")
def model():
    from SternumSSMLib.segmentation_inference import BUNDLED_MODEL, SegmentationModel

    return SegmentationModel(BUNDLED_MODEL)


@pytest.fixture(scope="module")
def whole_scan():
    return generate_phantom(random_parameters(5100, hard_cases=False, spacing=(2.0, 2.0, 2.0)))


@pytest.fixture(scope="module")
def both_ways(model, whole_scan):
    from SternumSSMLib.segment import segment_ct

    return segment_ct(model, whole_scan.image), segment_ct(model, whole_scan.image, auto_roi=False)


def test_the_bundled_model_finds_the_sternum_first_and_agrees_with_the_whole_volume(model, whole_scan, both_ways):
    from SternumSSMLib.metrics import dice_per_class

    auto, full = both_ways
    assert model.localiser is not None
    located = auto.record["auto_roi"]
    assert located["found"] and located["share_of_voxels"] < 0.5 and full.record["auto_roi"] is None
    assert auto.record["tiles"] < full.record["tiles"]
    box = tuple(slice(start, stop) for start, stop in located["box_index_kji"])
    outside = np.ones(auto.labels.array.shape, bool)
    outside[box] = False
    assert not np.any(auto.labels.array[outside])
    assert not np.any(full.labels.array[outside])  # the box held everything the whole-volume pass found
    assert dice_per_class(auto.labels.array, full.labels.array)["Total"] > 0.97
    assert dice_per_class(auto.labels.array, whole_scan.labels.array)["Total"] > 0.9
    assert [flag.code for flag in auto.flags] == [flag.code for flag in full.flags]


def test_a_box_that_cuts_the_structures_is_grown_until_they_fit(model, whole_scan, both_ways, monkeypatch):
    from SternumSSMLib import segment
    from SternumSSMLib.metrics import dice_per_class
    from SternumSSMLib.roi import Box

    def too_tight(labels, margin_mm=0.0):
        box = structures_box(labels, margin_mm)
        # with the 15-25 mm margin added: from 5 mm inside the structures' own box to 5 mm outside
        return Box(box.lo_lps + 20.0, box.hi_lps - 20.0)

    monkeypatch.setattr(segment, "structures_box", too_tight)
    grown = segment.segment_ct(model, whole_scan.image)
    assert grown.record["auto_roi"]["growths"] >= 1
    # another box means other tiles, and this small model's cartilage moves with them (~0.05 Dice)
    assert dice_per_class(grown.labels.array, both_ways[0].labels.array)["Total"] > 0.93
    truth = whole_scan.labels.array
    assert dice_per_class(grown.labels.array, truth)["Total"] > dice_per_class(both_ways[0].labels.array, truth)[
        "Total"] - 0.01


def test_a_scan_without_the_structures_is_refused_before_the_fine_pass(model, monkeypatch):
    from SternumSSMLib.segment import segment_ct

    rng = np.random.default_rng(0)
    geometry = ImageGeometry(origin_lps=(-150.0, -120.0, -100.0), spacing=(3.0, 3.0, 3.0),
                             direction_lps=np.eye(3), size=(100, 80, 70))
    water = Volume(rng.normal(40.0, 20.0, geometry.shape_kji).astype(np.int16), geometry)

    def no_fine_pass(*args, **kwargs):
        raise AssertionError("the full-resolution pass ran")

    monkeypatch.setattr(model, "predict", no_fine_pass)
    outcome = segment_ct(model, water)
    assert [flag.code for flag in outcome.flags] == ["no_sternum"]
    assert "localiser found no sternum" in outcome.flags[0].message and "--no-auto-roi" in outcome.flags[0].message
    assert not np.any(outcome.labels.array) and outcome.labels.geometry.same_grid(geometry)
    assert outcome.record["auto_roi"]["found"] is False


def test_the_localiser_sees_a_fine_ct_block_averaged_with_exact_geometry():
    from SternumSSMLib.auto_roi import block_mean

    geometry = ImageGeometry(origin_lps=(10.0, -5.0, 3.0), spacing=(0.7, 0.9, 2.5),
                             direction_lps=rotation_matrix([1.0, 1.0, 0.0], 20.0) @ orientation_direction("RAI"),
                             size=(9, 7, 4))
    ramp = np.add.outer(np.add.outer(np.arange(4) * 100.0, np.arange(7) * 10.0), np.arange(9) * 1.0)
    coarse = block_mean(Volume(ramp.astype(np.int16), geometry))
    assert coarse.geometry.size == (4, 3, 4)  # factors 2 mm // spacing: 2, 2, 1; trailing partial blocks dropped
    np.testing.assert_allclose(coarse.geometry.spacing, [1.4, 1.8, 2.5])
    # a linear ramp's block mean is its value at the block centre, which is where the coarse voxel sits
    centres = coarse.geometry.index_to_lps(np.argwhere(np.ones(coarse.array.shape))[:, ::-1].astype(float))
    fine_index = geometry.lps_to_index(centres)
    expected = fine_index[:, 2] * 100 + fine_index[:, 1] * 10 + fine_index[:, 0]
    np.testing.assert_allclose(coarse.array.ravel(), expected, atol=1e-4)


@pytest.mark.parametrize("code", ["RAS", "PLI", "SAR"])
def test_the_box_does_not_depend_on_how_the_ct_stores_its_axes(model, code):
    """Block averaging drops a trailing partial block and the margin's odd voxel goes to one side: both
    are decided in LPS order, so the same voxels stored with swapped or reversed axes get the same box."""
    from SternumSSMLib.geometry import lps_order_code
    from SternumSSMLib.segment import _locate

    phantom = generate_phantom(random_parameters(5101, hard_cases=False, spacing=(1.0, 1.0, 1.25)))
    odd = tuple(slice(0, size - (1 - size % 2)) for size in phantom.image.array.shape)  # partial blocks of 2
    image = crop(phantom.image, odd)

    def box_in_lps_order(stored: Volume) -> np.ndarray:
        slices, located = _locate(model, stored, cancel=None)
        assert located["found"]
        inside = np.zeros(stored.array.shape, np.uint8)
        inside[slices] = 1
        return reoriented(Volume(inside, stored.geometry), lps_order_code(stored.geometry)).array

    expected = box_in_lps_order(image)
    assert 0 < expected.mean() < 0.8
    np.testing.assert_array_equal(box_in_lps_order(reoriented(image, code)), expected)


def test_the_same_voxels_stored_another_way_get_the_same_segmentation(model, whole_scan, both_ways):
    from SternumSSMLib.geometry import lps_order_code
    from SternumSSMLib.segment import segment_ct

    stored = reoriented(whole_scan.image, "AIL")
    outcome = segment_ct(model, stored)
    back = reoriented(outcome.labels, lps_order_code(outcome.labels.geometry))
    expected = reoriented(both_ways[0].labels, lps_order_code(whole_scan.image.geometry))
    np.testing.assert_array_equal(back.array, expected.array)
