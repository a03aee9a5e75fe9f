"""Study-style folders into a dataset: DICOM, inconsistent label values, aliases, common crop, a report per case."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
import slicerio
from dicom_series_writer import PATIENT_TAGS, write_dicom_series
from SternumSSMLib.anatomy import default_protocol
from SternumSSMLib.case_files import write_volume
from SternumSSMLib.cli import main
from SternumSSMLib.dataset import MANIFEST, dataset_problems, read_manifest
from SternumSSMLib.dataset_summary import dataset_summary
from SternumSSMLib.geometry import ImageGeometry, Volume
from SternumSSMLib.phantom import PhantomParameters, generate_phantom
from SternumSSMLib.study_import import import_study, label_box_lps


def write_inconsistent_segmentation(labels: Volume, path) -> None:
    """A .seg.nrrd whose label values follow creation order (Cartilage 1, ...) and with one misspelled name."""
    ijk_to_lps = labels.geometry.ijk_to_lps()
    segmentation = slicerio.create_segmentation(labels.geometry.size, ijk_to_lps)
    voxels_ijk = labels.array.transpose(2, 1, 0)
    for value, name in ((4, "Cartilage"), (2, "Sternum_body"), (1, "Manubrium"), (3, "Xiphoid")):
        slicerio.add_segment(segmentation, voxels_ijk == value, {"id": name, "name": name})
    slicerio.write_segmentation(str(path), segmentation)


def write_study_csv(points, path, extra_rows: int = 3) -> None:
    """Study CSV: no coordinate declaration, RAS, numbered names, extra surface points after the 34."""
    ras = points.to("RAS").positions
    rows = ["name,X,Y,Z"] + [f"{i + 1},{x:.6f},{y:.6f},{z:.6f}" for i, (x, y, z) in enumerate(ras)]
    rows += [f"surface{i},{i:.1f},0.0,0.0" for i in range(extra_rows)]
    path.write_text("\n".join(rows) + "\n")


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    for folder in ("images", "labels", "landmarks"):
        (root / folder).mkdir()
    a = generate_phantom(PhantomParameters(seed=1, spacing=(3.0, 3.0, 3.0)))
    b = generate_phantom(PhantomParameters(seed=2, spacing=(3.0, 3.0, 3.0)))
    write_dicom_series(a.image, root / "images" / "caseA")
    write_inconsistent_segmentation(a.labels, root / "labels" / "caseA.seg.nrrd")
    write_study_csv(a.landmarks, root / "landmarks" / "caseA.csv")
    # Case B: NRRD CT, a plain label map cropped to the labelled region (as Slicer crops .seg.nrrd files).
    write_volume(b.image, root / "images" / "caseB.nrrd")
    nonzero = np.argwhere(b.labels.array > 0)
    lo, hi = nonzero.min(axis=0), nonzero.max(axis=0) + 1
    cropped = b.labels.array[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
    geometry = b.labels.geometry
    sub_grid = ImageGeometry(geometry.index_to_lps(lo[::-1][None].astype(float))[0], geometry.spacing,
                             geometry.direction_lps, cropped.shape[::-1])  # fmt: skip
    write_volume(Volume(np.ascontiguousarray(cropped), sub_grid), root / "labels" / "caseB.nrrd")
    write_study_csv(b.landmarks, root / "landmarks" / "caseB.csv")
    # Case C has no label map; case D's label map has a segment nobody can map.
    write_volume(b.image, root / "images" / "caseC.nrrd")
    write_volume(b.image, root / "images" / "caseD.nrrd")
    bad = slicerio.create_segmentation(b.labels.geometry.size, b.labels.geometry.ijk_to_lps())
    slicerio.add_segment(bad, b.labels.array.transpose(2, 1, 0) == 2, {"id": "Rib", "name": "Rib"})
    slicerio.write_segmentation(str(root / "labels" / "caseD.seg.nrrd"), bad)
    return root, a, b


def test_import_accepts_good_cases_and_refuses_the_rest_with_reasons(study, tmp_path):
    root, a, b = study
    report = import_study(
        root / "images", root / "labels", tmp_path / "ds", landmarks=root / "landmarks",
        landmark_coordinate_system="RAS", aliases={"Sternum_body": "Sternal_body"}, annotator="study",
    )  # fmt: skip
    assert report.accepted == [("caseA", "caseA", 1), ("caseB", "caseB", 1)]
    reasons = dict(report.refused)
    assert reasons["caseC"] == "no label map with this name"
    assert "['Rib'] are not standard names" in reasons["caseD"]
    assert "refused  caseD" in report.text()

    ds = tmp_path / "ds"
    image_a = sitk.ReadImage(str(ds / "imagesTr/caseA_0000.nrrd"))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image_a), a.image.array)
    np.testing.assert_allclose(image_a.GetOrigin(), a.image.geometry.origin_lps, atol=1e-4)
    np.testing.assert_allclose(image_a.GetSpacing(), a.image.geometry.spacing, atol=1e-6)
    labels_a = sitk.GetArrayFromImage(sitk.ReadImage(str(ds / "labelsTr/caseA.nrrd")))
    np.testing.assert_array_equal(labels_a, a.labels.array)  # values standardised by name
    labels_b = sitk.GetArrayFromImage(sitk.ReadImage(str(ds / "labelsTr/caseB.nrrd")))
    np.testing.assert_array_equal(labels_b, b.labels.array)  # placed back on the CT grid exactly

    lines = (ds / "landmarks/caseA.csv").read_text().splitlines()
    assert lines[0] == "# coordinate_system = LPS" and len(lines) == 2 + 34 + 3
    assert lines[2].startswith("L01,") and lines[-1].startswith("surface2,")
    from SternumSSMLib.landmark_files import read_landmarks_csv

    points = read_landmarks_csv(ds / "landmarks/caseA.csv")
    np.testing.assert_allclose(points.positions[:34], a.landmarks.positions, atol=1e-5)
    assert points.names[:34] == default_protocol().ids
    assert json.loads((ds / "dataset.json").read_text())["numTraining"] == 2
    assert dataset_problems(ds) == []


def test_no_dicom_patient_tag_reaches_the_dataset(study, tmp_path):
    root, _, _ = study
    import_study(root / "images", root / "labels", tmp_path / "ds", aliases={"Sternum_body": "Sternal_body"})
    text = (tmp_path / "ds" / MANIFEST).read_text() + " ".join(str(p) for p in (tmp_path / "ds").rglob("*"))
    for value in PATIENT_TAGS.values():
        assert value not in text
    record = next(r for r in read_manifest(tmp_path / "ds") if r["case_id"] == "caseA")
    assert record["source"]["kind"] == "dicom" and len(record["source"]["sha256"]) == 64
    sample = sitk.ReadImage(str(tmp_path / "ds/imagesTr/caseA_0000.nrrd"))
    assert not any(value in sample.GetMetaData(k) for k in sample.GetMetaDataKeys() for value in PATIENT_TAGS.values())


def test_common_crop_keeps_every_label_and_its_position(study, tmp_path):
    root, a, b = study
    report = import_study(root / "images", root / "labels", tmp_path / "ds", aliases={"Sternum_body": "Sternal_body"},
                          crop_margin_mm=6.0)  # fmt: skip
    assert [case for _, case, _ in report.accepted] == ["caseA", "caseB"]
    union = np.stack([label_box_lps(a.labels), label_box_lps(b.labels)])
    for name, phantom in (("caseA", a), ("caseB", b)):
        image = Volume.from_sitk(sitk.ReadImage(str(tmp_path / f"ds/imagesTr/{name}_0000.nrrd")))
        labels = Volume.from_sitk(sitk.ReadImage(str(tmp_path / f"ds/labelsTr/{name}.nrrd")))
        assert image.array.size < phantom.image.array.size / 2
        assert image.geometry.same_grid(labels.geometry)
        np.testing.assert_array_equal(np.bincount(labels.array.ravel(), minlength=5)[1:],
                                      np.bincount(phantom.labels.array.ravel(), minlength=5)[1:])  # fmt: skip
        # Each kept voxel holds the original value at the same physical point.
        start = np.rint(phantom.image.geometry.lps_to_index(image.geometry.origin_lps[None])[0]).astype(int)
        k, j, i = start[::-1]
        nk, nj, ni = image.array.shape
        np.testing.assert_array_equal(image.array, phantom.image.array[k : k + nk, j : j + nj, i : i + ni])
        box = np.stack([union[:, 0].min(axis=0) - 6.0, union[:, 1].max(axis=0) + 6.0])
        corners = image.geometry.corners_lps()
        assert np.all(corners >= box[0] - 1e-6) and np.all(corners <= box[1] + 1e-6)
    assert "cropped to LPS box" in report.text()


def test_cli_import_numbers_cases_and_writes_the_report(study, tmp_path, capsys):
    root, _, _ = study
    report_file = tmp_path / "report.txt"
    code = main([
        "import", "--images", str(root / "images"), "--labels", str(root / "labels"),
        "--landmarks", str(root / "landmarks"), "--landmarks-coordinate-system", "RAS",
        "--dataset", str(tmp_path / "ds"), "--alias", "Sternum_body=Sternal_body", "--case-prefix", "nmdid",
        "--report", str(report_file),
    ])  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert "accepted caseA as nmdid_0001" in out and "accepted caseB as nmdid_0002" in out
    assert report_file.read_text().startswith("Accepted 2 case(s), refused 2.")
    assert sorted(p.name for p in (tmp_path / "ds/imagesTr").iterdir()) == [
        "nmdid_0001_0000.nrrd",
        "nmdid_0002_0000.nrrd",
    ]
    assert (
        main(["dataset-summary", "--dataset", str(tmp_path / "ds"), "--check", "--plot", str(tmp_path / "s.png")]) == 0
    )
    assert "2 training and 0 test cases" in capsys.readouterr().out
    assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"
    assert dataset_summary(tmp_path / "ds")["rounds"][0]["model"] == "manual"


def test_landmarks_need_a_stated_coordinate_system(study, tmp_path):
    root, _, _ = study
    with pytest.raises(ValueError, match="State the landmark files' coordinate system"):
        import_study(root / "images", root / "labels", tmp_path / "ds", landmarks=root / "landmarks")
    assert not (tmp_path / "ds").exists()


def test_a_folder_without_any_ct_fails_and_says_what_it_looked_for(study, tmp_path, capsys):
    root, _, _ = study
    (tmp_path / "not_cts").mkdir()
    (tmp_path / "not_cts" / "notes.txt").write_text("no CT here")
    code = main(["import", "--images", str(tmp_path / "not_cts"), "--labels", str(root / "labels"),
                 "--dataset", str(tmp_path / "ds")])  # fmt: skip
    assert code == 2
    error = capsys.readouterr().err
    assert f"No CT found in {tmp_path / 'not_cts'}" in error and "DICOM series folders" in error and ".nii.gz" in error
    assert not (tmp_path / "ds").exists()

