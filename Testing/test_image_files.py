"""One home for reading image files: one suffix list for every command, one CT reader, one label reader."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from SternumSSMLib.geometry import ImageGeometry, Volume
from SternumSSMLib.image_files import case_id_of, covering_grid, ct_files, read_ct, read_ct_with_source, read_labels


def test_a_case_id_is_the_name_without_the_longest_image_suffix():
    assert case_id_of(Path("out/case_01.seg.nrrd")) == "case_01"  # a segmentation, not case "case_01.seg"
    assert case_id_of(Path("case_01.nii.gz")) == "case_01"
    assert case_id_of(Path("CASE_01.NHDR")) == "CASE_01"


def test_a_folder_of_cts_lists_every_image_format_but_not_segmentations_or_partial_files(tmp_path):
    geometry = ImageGeometry([1.0, 2.0, 3.0], [1.0, 1.5, 2.0], np.eye(3), (5, 4, 3))
    volume = Volume(np.arange(60, dtype=np.int16).reshape(3, 4, 5), geometry)
    sitk.WriteImage(volume.to_sitk(), str(tmp_path / "a.nhdr"))  # header and a detached data file
    sitk.WriteImage(volume.to_sitk(), str(tmp_path / "b.mha"))
    for name in ("b.seg.nrrd", ".b.0123abcd.partial.nrrd", "notes.txt"):
        (tmp_path / name).write_text("")
    assert [path.name for path in ct_files([str(tmp_path)])] == ["a.nhdr", "b.mha"]
    ct, source = read_ct_with_source(tmp_path / "a.nhdr")
    np.testing.assert_array_equal(ct.array, volume.array)
    assert source["kind"] == "file" and source["format"] == ".nhdr" and len(source["sha256"]) == 64
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_ct(tmp_path / "missing.nrrd")


def test_labels_are_placed_on_a_grid_that_differs_by_whole_voxels_and_errors_name_the_file(tmp_path):
    ct = ImageGeometry([0.0, 0.0, 0.0], [1.0, 1.0, 1.0], np.eye(3), (6, 6, 6))
    part = ImageGeometry([2.0, 1.0, 0.0], [1.0, 1.0, 1.0], np.eye(3), (2, 2, 2))  # a cropped .seg.nrrd
    sitk.WriteImage(Volume(np.full((2, 2, 2), 2, np.uint8), part).to_sitk(), str(tmp_path / "part.nrrd"))
    labels = read_labels(tmp_path / "part.nrrd", grid=ct)
    assert labels.geometry.same_grid(ct) and labels.array[0:2, 1:3, 2:4].tolist() == [[[2, 2], [2, 2]]] * 2
    assert int(np.count_nonzero(labels.array)) == 8
    assert covering_grid(ct, part).size == (6, 6, 6)
    half_shift = ImageGeometry([0.5, 0.0, 0.0], [1.0, 1.0, 1.0], np.eye(3), (6, 6, 6))
    assert covering_grid(ct, half_shift) is None
    with pytest.raises(ValueError, match=r"part\.nrrd: the label map's voxel grid differs"):
        read_labels(tmp_path / "part.nrrd", grid=half_shift)
