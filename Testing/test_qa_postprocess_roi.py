"""QA flags, per-class post-processing and ROI crop/paste, on phantom label maps (no model needed)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from SternumSSMLib.anatomy import label_scheme
from SternumSSMLib.geometry import Volume, all_orientation_codes, orientation_direction, rotation_matrix
from SternumSSMLib.geometry import reindexed as reoriented
from SternumSSMLib.phantom import PhantomParameters, generate_phantom, with_orientation
from SternumSSMLib.postprocess import PostprocessSettings, postprocess
from SternumSSMLib.qa import cartilage_pieces_per_side, qa_flags
from SternumSSMLib.roi import Box, crop, index_slices, paste

SCHEME = label_scheme()
MANUBRIUM, BODY, XIPHOID, CARTILAGE = (SCHEME.by_name(n).value for n in SCHEME.names)
COARSE = (2.0, 2.0, 2.0)


@pytest.fixture(scope="module")
def phantom():
    return generate_phantom(PhantomParameters(spacing=COARSE))


def codes(flags) -> list[str]:
    return sorted(flag.code for flag in flags)


def test_a_normal_phantom_raises_no_flag(phantom):
    assert qa_flags(phantom.labels) == []


def test_no_sternum_is_one_clear_error(phantom):
    array = phantom.labels.array.copy()
    array[np.isin(array, (MANUBRIUM, BODY, XIPHOID))] = 0
    flags = qa_flags(Volume(array, phantom.labels.geometry))
    assert codes(flags) == ["no_sternum"]
    assert "No sternum found" in flags[0].message


def test_missing_class_and_volume_range(phantom):
    array = phantom.labels.array.copy()
    array[array == XIPHOID] = 0
    body = np.argwhere(array == BODY)
    array[tuple(body[: len(body) * 3 // 4].T)] = 0
    flags = qa_flags(Volume(array, phantom.labels.geometry))
    assert ("missing", "Xiphoid") in [(f.code, f.segment) for f in flags]
    assert ("volume", "Sternal_body") in [(f.code, f.segment) for f in flags]


def test_split_cartilage_and_truncation_are_flagged():
    split = generate_phantom(PhantomParameters(spacing=COARSE, split_cartilage=("right", 4)))
    assert cartilage_pieces_per_side(split.labels) == {"right": 8, "left": 7}
    flags = qa_flags(split.labels)
    assert codes(flags) == ["cartilage_pieces"] and "Right cartilage has 8 pieces" in flags[0].message
    cut = generate_phantom(PhantomParameters(spacing=COARSE, truncate_superior_mm=50.0))
    assert ("cut", "Manubrium") in [(f.code, f.segment) for f in qa_flags(cut.labels)]


def test_asymmetry_uses_the_patient_side_on_a_flipped_grid():
    flipped = generate_phantom(with_orientation(PhantomParameters(spacing=COARSE), orientation_direction("RAI")))
    array = flipped.labels.array.copy()
    index = np.argwhere(array == CARTILAGE)
    x_lps = flipped.labels.geometry.index_to_lps(index[:, ::-1])[:, 0]
    left = index[x_lps > 0]
    array[tuple(left[: len(left) // 2].T)] = 0
    flags = qa_flags(Volume(array, flipped.labels.geometry))
    asymmetry = [f for f in flags if f.code == "asymmetry"]
    assert len(asymmetry) == 1
    right_ml, left_ml = (float(part.split(" ml")[0].split()[-1]) for part in asymmetry[0].message.split(",")[:2])
    assert right_ml > 1.5 * left_ml


@pytest.fixture(scope="module")
def flagged():
    """A case with side-dependent flags: the right 4th cartilage split, the manubrium cut by the top of the scan."""
    return generate_phantom(PhantomParameters(spacing=COARSE, split_cartilage=("right", 4), truncate_superior_mm=50.0))


def flag_rows(labels: Volume, ct: Volume | None = None) -> list[tuple]:
    return [(f.code, f.severity, f.message, f.segment) for f in qa_flags(labels, ct=ct)]


def moved(volume: Volume, shift_mm: np.ndarray) -> Volume:
    geometry = volume.geometry
    return Volume(volume.array, dataclasses.replace(geometry, origin_lps=geometry.origin_lps + shift_mm))


def labels_crop(phantom) -> Volume:
    """The label map cut to its labels plus 3 voxels, within the image (the top face stays the scan's)."""
    occupied = np.argwhere(phantom.labels.array > 0)
    lo = np.maximum(occupied.min(axis=0) - 3, 0)
    hi = np.minimum(occupied.max(axis=0) + 4, phantom.labels.array.shape)
    return crop(phantom.labels, tuple(slice(a, b) for a, b in zip(lo, hi, strict=True)))


@pytest.fixture(scope="module")
def flagged_rows(flagged) -> list[tuple]:
    rows = flag_rows(flagged.labels, flagged.image)
    assert {"cut", "cartilage_pieces"} <= {row[0] for row in rows}
    assert any("Right cartilage has 8 pieces" in row[2] for row in rows)
    return rows


@pytest.mark.parametrize("shift_mm", [(200.0, 0.0, 0.0), (-35.0, -300.0, 500.0), (1e-9, 0.0, 0.0)])
def test_qa_flags_do_not_depend_on_the_world_origin(phantom, flagged, flagged_rows, shift_mm):
    """Before: +200 mm in x turned "no flags" into three (right cartilage 0 pieces, left 14, asymmetric)."""
    shift = np.array(shift_mm)
    assert flag_rows(moved(phantom.labels, shift), moved(phantom.image, shift)) == []
    assert flag_rows(moved(flagged.labels, shift), moved(flagged.image, shift)) == flagged_rows


def test_qa_flags_are_the_same_in_all_48_axis_orientations(flagged):
    labels = labels_crop(flagged)
    expected = flag_rows(labels)
    assert {"cut", "cartilage_pieces"} <= {row[0] for row in expected}
    for code in all_orientation_codes():
        assert flag_rows(reoriented(labels, code)) == expected, code


@pytest.mark.parametrize("code", ["RAI", "SLA", "IPR"])
def test_qa_flags_with_the_ct_are_the_same_in_other_axis_orientations(flagged, flagged_rows, code):
    assert flag_rows(reoriented(flagged.labels, code), reoriented(flagged.image, code)) == flagged_rows


def _with_islands(phantom) -> Volume:
    array = phantom.labels.array.copy()
    k, j, i = (n // 2 for n in array.shape)
    array[k, j, i - 40] = BODY  # an interior stray piece of bone
    array[k, j, 0] = MANUBRIUM  # a stray voxel on the scan boundary
    array[k + 2, j + 2, i - 40] = CARTILAGE  # a one-voxel cartilage island (8 mm^3)
    return Volume(array, phantom.labels.geometry)


def test_postprocess_keeps_the_largest_bone_piece_and_drops_islands(phantom):
    noisy = _with_islands(phantom)
    cleaned, record = postprocess(noisy)
    np.testing.assert_array_equal(cleaned.array, phantom.labels.array)
    steps = {step["class"]: step for step in record["steps"]}
    assert steps["Sternal_body"]["pieces_removed"] == 1 and steps["Manubrium"]["pieces_removed"] == 1
    assert steps["Manubrium"]["boundary_pieces_removed"] == 1 and steps["Sternal_body"]["boundary_pieces_removed"] == 0
    assert steps["Cartilage"]["pieces_removed"] == 1
    assert steps["Cartilage"]["pieces"] == 15  # 14 real pieces plus the island


def _with_strays_on_the_faces(phantom) -> Volume:
    """What a model leaves on the faces of an oblique grid: a few bone voxels and a thin cartilage sliver."""
    array = phantom.labels.array.copy()
    nk, nj, ni = array.shape
    array[nk // 2 : nk // 2 + 3, nj // 2 : nj // 2 + 3, 0] = BODY  # 9 voxels on the right face
    array[-1, 3:5, ni // 2 : ni // 2 + 4] = XIPHOID  # 8 voxels on the top face
    array[nk // 3 : nk // 3 + 20, 0, ni // 2 : ni // 2 + 15] = CARTILAGE  # 300 voxels (2.4 ml), one voxel deep
    assert not np.any(np.isin(phantom.labels.array[nk // 3 : nk // 3 + 20, :2, ni // 2 : ni // 2 + 15], (1, 2, 3, 4)))
    return Volume(array, phantom.labels.geometry)


def test_stray_voxels_on_the_image_faces_are_dropped_and_not_called_a_cut(phantom):
    noisy = _with_strays_on_the_faces(phantom)
    cleaned, record = postprocess(noisy)
    np.testing.assert_array_equal(cleaned.array, phantom.labels.array)
    steps = {step["class"]: step for step in record["steps"]}
    assert [steps[name]["boundary_pieces_removed"] for name in ("Sternal_body", "Xiphoid", "Cartilage")] == [1, 1, 1]
    assert steps["Cartilage"]["removed_ml"] == pytest.approx(2.4)
    assert qa_flags(cleaned) == []  # before: cut flags on body, xiphoid and cartilage
    # QA on the uncleaned labels (a hand-made segmentation gets no post-processing) raises no cut either.
    assert "cut" not in codes(qa_flags(noisy))


def test_a_structure_cut_apart_by_the_boundary_is_kept_and_flagged():
    cut = generate_phantom(PhantomParameters(spacing=COARSE, truncate_superior_mm=50.0))
    array = cut.labels.array.copy()
    top = np.flatnonzero(np.any(array == MANUBRIUM, axis=(1, 2))).max()
    assert top == array.shape[0] - 1  # axial grid: the manubrium reaches the top face
    # A 2 mm gap 6 mm below the face splits the manubrium into a slab on the face and the rest.
    layer = array[top - 3]
    layer[layer == MANUBRIUM] = 0
    split = Volume(array, cut.labels.geometry)
    cleaned, record = postprocess(split)
    np.testing.assert_array_equal(cleaned.array, split.array)
    manubrium = next(step for step in record["steps"] if step["class"] == "Manubrium")
    assert (manubrium["pieces"], manubrium["pieces_removed"]) == (2, 0)
    assert ("cut", "Manubrium") in [(f.code, f.segment) for f in qa_flags(cleaned)]


def test_postprocess_steps_can_be_switched_off(phantom):
    noisy = _with_islands(phantom)
    untouched, record = postprocess(
        noisy, PostprocessSettings(keep_largest_bone_piece=False, remove_cartilage_islands=False)
    )
    np.testing.assert_array_equal(untouched.array, noisy.array)
    assert [step["applied"] for step in record["steps"]] == [False] * 4


def test_postprocess_never_keeps_only_the_largest_cartilage(phantom):
    cleaned, _ = postprocess(phantom.labels)
    np.testing.assert_array_equal(cleaned.array, phantom.labels.array)


def test_roi_crop_and_paste_on_an_oblique_flipped_grid():
    direction = rotation_matrix([0.2, 0.1, 1.0], 20.0) @ orientation_direction("ASL")
    image = generate_phantom(with_orientation(PhantomParameters(spacing=(3.0, 2.5, 2.0)), direction)).image
    box = Box(np.array([-40.0, -130.0, -120.0]), np.array([40.0, -50.0, 20.0]))
    slices = index_slices(image.geometry, box)
    part = crop(image, slices)
    start = np.array([slices[2].start, slices[1].start, slices[0].start])
    np.testing.assert_allclose(
        part.geometry.index_to_lps(np.zeros((1, 3))), image.geometry.index_to_lps(start[None]), atol=1e-9
    )
    np.testing.assert_array_equal(part.array, image.array[slices])
    marker = Volume(np.full(part.array.shape, 7, np.int16), part.geometry)
    pasted = paste(image, marker, slices)
    inside = np.zeros(image.array.shape, bool)
    inside[slices] = True
    assert np.all(pasted.array[inside] == 7)
    np.testing.assert_array_equal(pasted.array[~inside], image.array[~inside])


def test_roi_outside_the_volume_is_refused(phantom):
    with pytest.raises(ValueError, match="outside the volume"):
        index_slices(phantom.image.geometry, Box(np.array([900.0, 900, 900]), np.array([950.0, 950, 950])))
    with pytest.raises(ValueError, match="lower < upper"):
        Box(np.array([0.0, 0, 0]), np.array([0.0, 10, 10]))


def test_box_from_slicer_ras_bounds():
    box = Box.from_ras_bounds([-10.0, 20.0, -30.0, 40.0, 5.0, 6.0])
    np.testing.assert_allclose(box.lo_lps, [-20.0, -40.0, 5.0])
    np.testing.assert_allclose(box.hi_lps, [10.0, 30.0, 6.0])
