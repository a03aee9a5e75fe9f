"""Phantom cases on disk: study formats, declared coordinates, nothing overwritten."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
import slicerio
from SternumSSMLib.anatomy import label_scheme
from SternumSSMLib.case_files import write_case
from SternumSSMLib.cli import main
from SternumSSMLib.geometry import PointSet, orientation_direction, rotation_matrix
from SternumSSMLib.landmark_files import read_landmarks_csv, write_landmarks_csv
from SternumSSMLib.markups import landmark_points, read_markups
from SternumSSMLib.phantom import PhantomParameters, generate_phantom, with_orientation


@pytest.fixture(scope="module")
def oblique_phantom():
    direction = rotation_matrix([1.0, 0.2, 0.4], 17.0) @ orientation_direction("RAI")
    return generate_phantom(with_orientation(PhantomParameters(seed=5), direction, spacing=(2.5, 2.0, 3.0)))


@pytest.fixture(scope="module")
def written_case(oblique_phantom, tmp_path_factory):
    folder = tmp_path_factory.mktemp("cases")
    return folder, write_case(oblique_phantom, folder, "case007")


def test_image_keeps_hu_and_oblique_geometry(oblique_phantom, written_case):
    _, paths = written_case
    image = sitk.ReadImage(str(paths["image"]))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), oblique_phantom.image.array)
    np.testing.assert_allclose(
        np.array(image.GetDirection()).reshape(3, 3), oblique_phantom.image.geometry.direction_lps, atol=1e-6
    )
    np.testing.assert_allclose(image.GetOrigin(), oblique_phantom.image.geometry.origin_lps, atol=1e-4)
    assert image.GetPixelID() == sitk.sitkInt16


def test_seg_nrrd_carries_standard_values_by_name(oblique_phantom, written_case):
    _, paths = written_case
    segmentation = slicerio.read_segmentation(str(paths["labels"]))
    by_name = {segment["name"]: segment["labelValue"] for segment in segmentation["segments"]}
    assert by_name == {c.name: c.value for c in label_scheme().classes}
    voxels_ijk = segmentation["voxels"]
    # slicerio indexes [i, j, k] and crops to the segment extent; compare within that extent.
    offset = np.rint(
        oblique_phantom.labels.geometry.lps_to_index(np.array(segmentation["ijkToLPS"])[:3, 3][None])[0]
    ).astype(int)
    ni, nj, nk = voxels_ijk.shape
    expected = oblique_phantom.labels.array[
        offset[2] : offset[2] + nk, offset[1] : offset[1] + nj, offset[0] : offset[0] + ni
    ]
    np.testing.assert_array_equal(np.transpose(voxels_ijk, (2, 1, 0)), expected)
    assert np.count_nonzero(expected) == np.count_nonzero(oblique_phantom.labels.array)


def test_landmark_csv_declares_lps_and_round_trips(oblique_phantom, written_case):
    _, paths = written_case
    assert paths["landmarks_csv"].read_text().splitlines()[0] == "# coordinate_system = LPS"
    points = read_landmarks_csv(paths["landmarks_csv"])
    assert points.coordinate_system == "LPS"
    assert points.names == oblique_phantom.landmarks.names
    np.testing.assert_allclose(points.positions, oblique_phantom.landmarks.positions, atol=1e-3)


def test_mrk_json_loads_into_slicer_at_the_same_place(oblique_phantom, written_case, mrml_scene):
    _, paths = written_case
    document = json.loads(paths["landmarks_mrk"].read_text())
    assert document["markups"][0]["coordinateSystem"] == "LPS"
    node = read_markups(mrml_scene, paths["landmarks_mrk"])
    ras = landmark_points(node, "RAS")
    expected_ras = oblique_phantom.landmarks.to("RAS")
    np.testing.assert_allclose(ras.positions, expected_ras.positions, atol=1e-3)
    assert ras.names == expected_ras.names


def test_parameters_record_the_knobs(written_case):
    _, paths = written_case
    recorded = json.loads(paths["parameters"].read_text())
    assert recorded["seed"] == 5
    assert recorded["spacing"] == [2.5, 2.0, 3.0]
    assert recorded["expected_cartilage_pieces_per_side"] == {"right": 7, "left": 7}


def test_an_existing_case_is_never_overwritten(oblique_phantom, written_case):
    folder, paths = written_case
    before = {name: path.read_bytes() for name, path in paths.items()}
    with pytest.raises(FileExistsError, match="case007"):
        write_case(oblique_phantom, folder, "case007")
    assert {name: path.read_bytes() for name, path in paths.items()} == before
    leftovers = [p for p in folder.rglob("*") if ".partial" in p.name]
    assert leftovers == []


def test_bad_case_id_is_refused(oblique_phantom, tmp_path):
    with pytest.raises(ValueError, match="Case id"):
        write_case(oblique_phantom, tmp_path, "../escape")
    assert list(tmp_path.iterdir()) == []


def test_missing_landmarks_stay_missing_in_csv(tmp_path):
    points = PointSet(
        names=("L01", "L02", "L03"), positions=[[1, 2, 3], [np.nan] * 3, [4, 5, 6]], coordinate_system="RAS"
    )
    path = write_landmarks_csv(tmp_path / "points.csv", points, coordinate_system="LPS")
    assert path.read_text().splitlines()[3] == "L02,,,"
    read = read_landmarks_csv(path)
    assert read.names == points.names
    np.testing.assert_array_equal(read.defined, [True, False, True])
    np.testing.assert_allclose(read.to("RAS").positions[[0, 2]], points.positions[[0, 2]])


def test_study_csv_needs_a_stated_coordinate_system(tmp_path):
    study = tmp_path / "study.csv"
    study.write_text("Name,X,Y,Z\nP1,10.5,-3,7\nP2,1,2,3\n")
    with pytest.raises(ValueError, match="does not declare its coordinate system"):
        read_landmarks_csv(study)
    points = read_landmarks_csv(study, coordinate_system="RAS")
    assert points.coordinate_system == "RAS"
    np.testing.assert_allclose(points.positions[0], [10.5, -3, 7])
    declared = write_landmarks_csv(tmp_path / "declared.csv", points, coordinate_system="LPS")
    with pytest.raises(ValueError, match="declares LPS"):
        read_landmarks_csv(declared, coordinate_system="RAS")


def test_malformed_csv_names_the_row(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("# coordinate_system = LPS\nname,X,Y,Z\nL01,1,2,3\nL02,1,abc,3\n")
    with pytest.raises(ValueError, match=r"row 3.*'abc'"):
        read_landmarks_csv(bad)
    infinite = tmp_path / "inf.csv"
    infinite.write_text("# coordinate_system = LPS\nname,X,Y,Z\nL01,1,inf,3\n")
    with pytest.raises(ValueError, match="not finite"):
        read_landmarks_csv(infinite)


def test_cli_writes_cases_and_refuses_to_overwrite(tmp_path, capsys):
    arguments = ["phantom", "--output", str(tmp_path), "--cases", "2", "--spacing", "3", "3", "3"]
    arguments += ["--label-format", "nrrd", "--image-format", "nii.gz", "--orientation", "RAS"]
    assert main(arguments) == 0
    labels = sorted((tmp_path / "labels").iterdir())
    assert [p.name for p in labels] == ["phantom000.nrrd", "phantom001.nrrd"]
    label_image = sitk.ReadImage(str(labels[0]))
    np.testing.assert_allclose(np.array(label_image.GetDirection()).reshape(3, 3), orientation_direction("RAS"))
    assert set(np.unique(sitk.GetArrayFromImage(label_image))) <= {0, 1, 2, 3, 4}
    before = labels[0].read_bytes()
    assert main(arguments) == 2
    assert "already has files" in capsys.readouterr().err
    assert labels[0].read_bytes() == before
