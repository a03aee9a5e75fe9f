"""Export from the scene: fixed values by name, landmarks in both systems, correction effort, nnU-Net's own check."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
import SimpleITK as sitk
from SternumSSMLib import scene_contract
from SternumSSMLib.anatomy import default_protocol
from SternumSSMLib.case_files import write_case, write_volume
from SternumSSMLib.cli import main
from SternumSSMLib.dataset import MANIFEST, dataset_problems, read_manifest
from SternumSSMLib.export import Prediction, describe_export, export_case
from SternumSSMLib.export_nodes import export_from_scene
from SternumSSMLib.geometry import PointSet, Volume, orientation_direction, rotation_matrix
from SternumSSMLib.landmark_files import read_landmarks_csv
from SternumSSMLib.markups import create_landmarks_node, landmark_points, read_markups, set_landmark_positions
from SternumSSMLib.phantom import PhantomParameters, generate_phantom, with_orientation
from SternumSSMLib.provenance import model_id
from SternumSSMLib.segmentation_nodes import segmentation_from_labelmap
from SternumSSMLib.volume_nodes import volume_node_from_volume


@pytest.fixture(scope="module")
def phantom():
    return generate_phantom(PhantomParameters(spacing=(3.0, 3.0, 3.0)))


@pytest.fixture(scope="module")
def oblique_phantom():
    """Mirrored (RAI) and rotated off every axis, with anisotropic spacing."""
    direction = rotation_matrix([1.0, 0.2, 0.4], 17.0) @ orientation_direction("RAI")
    return generate_phantom(with_orientation(PhantomParameters(seed=3), direction, spacing=(3.0, 2.5, 3.5)))


def scene_case(scene, phantom):
    volume = volume_node_from_volume(scene, phantom.image, "CT")
    segmentation = segmentation_from_labelmap(scene, phantom.labels, name="Corrected")
    landmarks = create_landmarks_node(scene)
    set_landmark_positions(landmarks, phantom.landmarks)
    return volume, segmentation, landmarks


def test_values_follow_names_whatever_the_order_colour_or_alias(mrml_scene, phantom, tmp_path):
    volume, segmentation_node, _ = scene_case(mrml_scene, phantom)
    segmentation = segmentation_node.GetSegmentation()
    segmentation.RemoveSegment(segmentation.GetSegmentIdBySegmentName("Xiphoid"))
    body = segmentation.GetSegment(segmentation.GetSegmentIdBySegmentName("Sternal_body"))
    body.SetName("Sternum_body")
    body.SetColor(0.1, 0.9, 0.1)
    segmentation.SetSegmentIndex(segmentation.GetSegmentIdBySegmentName("Cartilage"), 0)
    segmentation.SetSegmentIndex(segmentation.GetSegmentIdBySegmentName("Manubrium"), 2)

    result = export_from_scene(
        volume,
        segmentation_node,
        tmp_path / "ds",
        "case_0001",
        "tester",
        segment_names={"Sternum_body": "Sternal_body"},
    )

    expected = np.where(phantom.labels.array == 3, 0, phantom.labels.array)
    written = sitk.ReadImage(str(tmp_path / "ds/labelsTr/case_0001.nrrd"))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(written), expected)
    image = sitk.ReadImage(str(tmp_path / "ds/imagesTr/case_0001_0000.nrrd"))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), phantom.image.array)
    for read in (written, image):
        np.testing.assert_allclose(read.GetOrigin(), phantom.image.geometry.origin_lps, atol=1e-6)
        np.testing.assert_allclose(read.GetSpacing(), phantom.image.geometry.spacing, atol=1e-9)
    assert result.empty_segments == ["Xiphoid"]
    assert result.record["segments"]["empty"] == ["Xiphoid"]
    assert "empty segments: Xiphoid" in result.summary()


def test_unknown_segment_names_are_an_error_listing_the_expected_names(mrml_scene, phantom, tmp_path):
    volume, segmentation_node, _ = scene_case(mrml_scene, phantom)
    segmentation = segmentation_node.GetSegmentation()
    segmentation.GetSegment(segmentation.GetSegmentIdBySegmentName("Xiphoid")).SetName("Xyphoid")
    with pytest.raises(ValueError, match=r"\['Xyphoid'\] .* Manubrium, Sternal_body, Xiphoid, Cartilage"):
        export_from_scene(volume, segmentation_node, tmp_path / "ds", "case_0001")
    assert not (tmp_path / "ds").exists()


def test_overlapping_segments_are_an_error_naming_the_voxel_count(mrml_scene, phantom, tmp_path):
    only_manubrium = Volume(np.where(phantom.labels.array == 1, 1, 0).astype(np.uint8), phantom.labels.geometry)
    overlap = np.zeros_like(phantom.labels.array)
    overlap[tuple(np.argwhere(phantom.labels.array == 1)[:10].T)] = 4  # 10 manubrium voxels also cartilage
    node = segmentation_from_labelmap(mrml_scene, only_manubrium)
    other = segmentation_from_labelmap(mrml_scene, Volume(overlap, phantom.labels.geometry))
    node.GetSegmentation().CopySegmentFromSegmentation(
        other.GetSegmentation(), other.GetSegmentation().GetNthSegmentID(0)
    )
    volume = volume_node_from_volume(mrml_scene, phantom.image, "CT")
    with pytest.raises(ValueError, match="Manubrium and Cartilage share 10 voxels"):
        export_from_scene(volume, node, tmp_path / "ds", "case_0001")
    assert not (tmp_path / "ds").exists()


@pytest.mark.parametrize("system", ["LPS", "RAS"])
def test_landmarks_round_trip_on_an_oblique_flipped_volume(mrml_scene, oblique_phantom, tmp_path, system):
    volume, segmentation, landmarks = scene_case(mrml_scene, oblique_phantom)
    landmarks.UnsetNthControlPointPosition(4)  # a missing landmark stays missing
    result = export_from_scene(
        volume, segmentation, tmp_path / "ds", "case_0001", landmarks_node=landmarks, landmark_coordinate_system=system
    )
    expected = oblique_phantom.landmarks.positions.copy()
    expected[4] = np.nan
    csv_points = read_landmarks_csv(result.paths["landmarks_csv"])
    assert csv_points.coordinate_system == system
    assert csv_points.names == default_protocol().ids
    np.testing.assert_allclose(csv_points.to("LPS").positions, expected, atol=1e-6)
    assert "L05,,," in result.paths["landmarks_csv"].read_text()

    loaded = landmark_points(read_markups(mrml_scene, result.paths["landmarks_mrk"]), "LPS")
    np.testing.assert_allclose(loaded.positions, expected, atol=1e-6)
    raw = json.loads(result.paths["landmarks_mrk"].read_text())["markups"][0]
    assert raw["coordinateSystem"] == "LPS"
    raw_positions = np.array(
        [p["position"] if p["positionStatus"] == "defined" else [np.nan] * 3 for p in raw["controlPoints"]]
    )
    np.testing.assert_allclose(raw_positions, expected, atol=1e-6)
    assert [p["label"] for p in raw["controlPoints"]] == list(default_protocol().ids)


def test_correction_effort_from_the_prediction_recorded_in_the_scene(mrml_scene, phantom, tmp_path):
    predicted_labels = phantom.labels
    corrected = phantom.labels.array.copy()
    cartilage = np.argwhere(corrected == 4)
    corrected[tuple(cartilage[:40].T)] = 0  # the annotator erased 40 cartilage voxels
    volume = volume_node_from_volume(mrml_scene, phantom.image, "CT")
    prediction_node = segmentation_from_labelmap(mrml_scene, predicted_labels, name="Prediction")
    corrected_node = segmentation_from_labelmap(mrml_scene, Volume(corrected, phantom.labels.geometry), "Corrected")
    predicted_points = create_landmarks_node(mrml_scene, name="Predicted landmarks")
    set_landmark_positions(predicted_points, phantom.landmarks)
    final_positions = phantom.landmarks.positions.copy()
    final_positions[0] += [3.0, 4.0, 0.0]  # L01 dragged by 5 mm
    final_points = create_landmarks_node(mrml_scene, name="Landmarks")
    set_landmark_positions(final_points, PointSet(phantom.landmarks.names, final_positions, "LPS"))
    model = tmp_path / "model"
    (model / "fold_0").mkdir(parents=True)
    (model / "dataset.json").write_text("{}")
    (model / "fold_0" / "checkpoint_final.pth").write_bytes(b"weights")
    exported_at = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
    predicted_at = (exported_at - timedelta(minutes=30)).isoformat()
    corrected_node.SetAttribute(scene_contract.UNEDITED_PREDICTION_ATTRIBUTE, prediction_node.GetID())
    corrected_node.SetAttribute(scene_contract.MODEL_FOLDER, str(model))
    corrected_node.SetAttribute(scene_contract.PRESET, "fast")
    corrected_node.SetAttribute(scene_contract.PREDICTED_AT, predicted_at)
    corrected_node.SetAttribute(scene_contract.QA_FLAGS, json.dumps(["Xiphoid volume implausible"]))
    corrected_node.SetAttribute(scene_contract.POSTPROCESSING, json.dumps(["largest component"]))
    final_points.SetAttribute(scene_contract.PREDICTION_MARKUPS_ID, predicted_points.GetID())

    result = export_from_scene(
        volume, corrected_node, tmp_path / "ds", "case_0001", "A. Annotator", final_points, clock=lambda: exported_at
    )

    record = read_manifest(tmp_path / "ds")[-1]
    assert record == result.record
    effort = record["correction"]["segmentation"]
    n = int((phantom.labels.array == 4).sum())
    assert effort["changed_voxels"] == {"Manubrium": 0, "Sternal_body": 0, "Xiphoid": 0, "Cartilage": 40}
    assert effort["changed_voxels_total"] == 40
    assert effort["dice"]["Manubrium"] == 1.0
    assert effort["dice"]["Cartilage"] == pytest.approx(2 * (n - 40) / (2 * n - 40), abs=1e-6)
    landmarks = record["correction"]["landmarks"]
    assert landmarks["displacement_mm"]["L01"] == pytest.approx(5.0, abs=1e-6)
    assert landmarks["displacement_mm"]["L02"] == pytest.approx(0.0, abs=1e-6)
    assert landmarks["max_mm"] == pytest.approx(5.0, abs=1e-6)
    assert record["correction"]["seconds_from_prediction"] == 1800.0  # the clock is frozen, so this is exact
    prediction = record["prediction"]
    assert prediction["model_sha256"] == model_id(model)
    assert (prediction["preset"], prediction["qa_flags"], prediction["postprocessing"]) == (
        "fast",
        ["Xiphoid volume implausible"],
        ["largest component"],
    )
    assert record["annotator"] == "A. Annotator" and record["tool"]["name"] == "sternum-ssm"
    assert "Dice prediction vs correction" in result.summary() and "mean 0.15 mm" in result.summary()


def test_no_patient_identifier_reaches_file_names_or_the_manifest(mrml_scene, phantom, tmp_path):
    volume, segmentation, landmarks = scene_case(mrml_scene, phantom)
    volume.SetName("DOE^JANE 19570312 PID12345")
    volume.SetAttribute("DICOM.instanceUIDs", "1.2.826.0.1.3680043.2.1125.1 1.2.826.0.1.3680043.2.1125.2")
    export_from_scene(volume, segmentation, tmp_path / "ds", "case_0001", landmarks_node=landmarks)
    texts = [(tmp_path / "ds" / MANIFEST).read_text()] + [str(p) for p in (tmp_path / "ds").rglob("*")]
    for identifier in ("DOE", "JANE", "19570312", "PID12345", "1.2.826.0.1.3680043"):
        assert not any(identifier in text for text in texts)
    assert read_manifest(tmp_path / "ds")[0]["source"]["kind"] == "dicom"


def test_nnunet_verify_dataset_integrity_accepts_an_exported_dataset(mrml_scene, phantom, tmp_path):
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

    root = tmp_path / "Dataset501_Sternum"
    volume, segmentation, landmarks = scene_case(mrml_scene, phantom)
    export_from_scene(volume, segmentation, root, "case_0001", landmarks_node=landmarks)
    export_from_scene(volume, segmentation, root, "case_0001", landmarks_node=landmarks)  # a second version
    second = generate_phantom(PhantomParameters(seed=4, spacing=(3.0, 3.0, 3.0)))
    export_case(root, "case_0002", second.image, second.labels, second.landmarks)
    export_case(root, "held_out", second.image, second.labels, split="test")
    assert dataset_problems(root) == []
    verify_dataset_integrity(str(root), num_processes=1)  # raises on any problem


def test_describe_export_says_what_will_be_written(mrml_scene, phantom, tmp_path):
    assert "new dataset will be created" in describe_export(tmp_path / "ds", "case_0001")
    export_case(tmp_path / "ds", "case_0001", phantom.image, phantom.labels)
    text = describe_export(tmp_path / "ds", "case_0001")
    assert "becomes version 2" in text and "archive/case_0001/" in text
    assert "imagesTr/case_0002_0000.nrrd" in describe_export(tmp_path / "ds", "case_0002")


def test_labels_off_the_image_grid_are_refused_not_resampled(phantom, tmp_path):
    shifted = Volume(
        phantom.labels.array,
        type(phantom.labels.geometry)(
            origin_lps=phantom.labels.geometry.origin_lps + 1.0,
            spacing=phantom.labels.geometry.spacing,
            direction_lps=phantom.labels.geometry.direction_lps,
            size=phantom.labels.geometry.size,
        ),
    )
    with pytest.raises(ValueError, match="not on the image's voxel grid"):
        export_case(tmp_path / "ds", "case_0001", phantom.image, shifted)


def test_cli_export_from_case_files(phantom, tmp_path, capsys):
    write_case(phantom, tmp_path / "cases", "phantom000")
    arguments = [
        "export",
        "--image", str(tmp_path / "cases/images/phantom000.nrrd"),
        "--segmentation", str(tmp_path / "cases/labels/phantom000.seg.nrrd"),
        "--landmarks", str(tmp_path / "cases/landmarks/phantom000.mrk.json"),
        "--dataset", str(tmp_path / "ds"),
        "--case-id", "case_0001",
        "--annotator", "cli",
    ]  # fmt: skip
    assert main(arguments) == 0
    assert "Case case_0001 version 1 (train)" in capsys.readouterr().out
    record = read_manifest(tmp_path / "ds")[0]
    assert record["source"]["kind"] == "file" and record["annotator"] == "cli"
    written = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "ds/labelsTr/case_0001.nrrd")))
    np.testing.assert_array_equal(written, phantom.labels.array)
    assert main([*arguments[:-4], "--case-id", "case_0001"]) == 0  # same CT again: version 2
    assert [r["version"] for r in read_manifest(tmp_path / "ds")] == [1, 2]


def test_cli_export_reads_the_run_record_beside_the_prediction(phantom, tmp_path, capsys):
    """``--prediction X.seg.nrrd`` takes model, preset and time from the ``X.json`` that predict wrote beside it."""
    from SternumSSMLib.predict_command import write_prediction

    write_case(phantom, tmp_path / "cases", "phantom000")
    missed = phantom.labels.array.copy()
    missed[missed == 3] = 0  # the model missed the xiphoid
    record = {
        "model_folder": "/models/Dataset501_Sternum", "model_sha256": "d" * 64, "preset": "accurate",
        "predicted_at": "2026-01-02T03:04:05+00:00", "postprocessing": [{"step": "largest component"}],
        "qa_flags": [{"code": "missing", "severity": "error", "message": "no Xiphoid", "segment": "Xiphoid"}],
    }  # fmt: skip
    predicted = tmp_path / "predictions" / "phantom000.seg.nrrd"
    predicted.parent.mkdir()
    write_prediction(Volume(missed, phantom.labels.geometry), record, predicted, predicted.with_name("phantom000.json"))
    arguments = [
        "export",
        "--image", str(tmp_path / "cases/images/phantom000.nrrd"),
        "--segmentation", str(tmp_path / "cases/labels/phantom000.seg.nrrd"),
        "--prediction", str(predicted),
        "--dataset", str(tmp_path / "ds"),
    ]  # fmt: skip

    assert main([*arguments, "--case-id", "case_0001"]) == 0
    exported = read_manifest(tmp_path / "ds")[-1]
    assert exported["prediction"] == {
        "model_sha256": "d" * 64, "model_name": "Dataset501_Sternum", "preset": "accurate",
        "predicted_at": record["predicted_at"], "postprocessing": record["postprocessing"],
        "qa_flags": record["qa_flags"],
    }  # fmt: skip
    assert exported["correction"]["segmentation"]["changed_voxels_total"] == int((phantom.labels.array == 3).sum())
    assert "note" not in capsys.readouterr().err

    # An option given on the command line wins over the record.
    assert main([*arguments, "--case-id", "case_0002", "--preset", "fast"]) == 0
    assert read_manifest(tmp_path / "ds")[-1]["prediction"]["preset"] == "fast"
    assert read_manifest(tmp_path / "ds")[-1]["prediction"]["model_sha256"] == "d" * 64

    # Without the record: today's behaviour, saying what the manifest will not know.
    predicted.with_name("phantom000.json").unlink()
    assert main([*arguments, "--case-id", "case_0003", "--preset", "fast"]) == 0
    err = capsys.readouterr().err
    assert "no run record" in err and "phantom000.json" in err and "--model-folder, --predicted-at" in err
    exported = read_manifest(tmp_path / "ds")[-1]
    assert exported["prediction"]["model_sha256"] is None and exported["prediction"]["preset"] == "fast"
    assert exported["correction"]["segmentation"]["changed_voxels_total"] > 0

    # A record that is not one is an error naming the file, not a silent fallback.
    predicted.with_name("phantom000.json").write_text("[1, 2")
    assert main([*arguments, "--case-id", "case_0004"]) == 2
    assert "phantom000.json beside the prediction is not a run record" in capsys.readouterr().err


def test_summary_groups_correction_effort_by_round(phantom, tmp_path):
    from SternumSSMLib.dataset_summary import dataset_summary, plot_summary, summary_text

    worse = phantom.labels.array.copy()
    worse[worse == 3] = 0  # the first model misses the xiphoid
    first = Prediction(labels=Volume(worse, phantom.labels.geometry), model_sha256="a" * 64, preset="fast")
    second = Prediction(labels=phantom.labels, model_sha256="b" * 64, preset="fast")
    export_case(tmp_path / "ds", "manual_1", phantom.image, phantom.labels)
    export_case(tmp_path / "ds", "case_0001", phantom.image, phantom.labels, prediction=first)
    export_case(tmp_path / "ds", "case_0002", phantom.image, phantom.labels, prediction=second)
    summary = dataset_summary(tmp_path / "ds")
    assert summary["training_cases"] == 3 and summary["last_round"] == 2
    rows = {row["round"]: row for row in summary["rounds"]}
    assert rows[0]["model"] == "manual" and rows[0]["mean_dice"] is None
    assert rows[1]["model"] == "a" * 12 and rows[1]["mean_changed_voxels"] == int((phantom.labels.array == 3).sum())
    assert rows[1]["mean_dice"] == pytest.approx(0.75)  # Xiphoid 0, three classes 1
    assert rows[2]["mean_dice"] == 1.0 and rows[2]["mean_changed_voxels"] == 0
    text = summary_text(summary)
    assert "Correction effort is recorded for 2 of the 3 current cases" in text
    # Each figure says how many cases it covers; the manual round has none.
    assert "    2  bbbbbbbbbbbb      1   1.000    (1)" in text
    assert "    0  manual            1       -    (0)" in text
    assert (rows[0]["dice_cases"], rows[1]["dice_cases"], rows[1]["landmark_displacement_cases"]) == (0, 1, 0)
    assert plot_summary(summary, tmp_path / "rounds.png").stat().st_size > 1000


def test_the_segmentation_steps_run_record_is_used_as_provenance(mrml_scene, phantom, tmp_path):
    volume, segmentation, _ = scene_case(mrml_scene, phantom)
    run_record = {"model_sha256": "c" * 64, "preset": "accurate"}
    segmentation.SetAttribute(scene_contract.SEGMENTATION_RECORD_ATTRIBUTE, json.dumps(run_record))
    segmentation.SetAttribute(scene_contract.PRESET, "fast")  # an explicit attribute wins
    record = export_from_scene(volume, segmentation, tmp_path / "ds", "case_0001").record
    assert record["prediction"]["model_sha256"] == "c" * 64 and record["prediction"]["preset"] == "fast"
    assert record["correction"]["segmentation"] is None  # the unedited prediction was not kept


def far_away(points: PointSet, names: tuple[str, ...], offset_mm: float) -> PointSet:
    positions = points.positions.copy()
    for name in names:
        positions[points.names.index(name)] += [offset_mm, 0.0, 0.0]
    return PointSet(points.names, positions, points.coordinate_system)


def test_landmarks_outside_the_ct_are_refused_naming_them(phantom, tmp_path):
    outside = far_away(phantom.landmarks, ("L01", "L07"), 10_000.0)  # 10 m off: the wrong file or system
    with pytest.raises(ValueError, match=r"2 landmark\(s\) lie outside the CT.*L01 \(.*L07 \(") as error:
        export_case(tmp_path / "ds", "case_0001", phantom.image, phantom.labels, outside)
    assert "L02" not in str(error.value)
    assert not (tmp_path / "ds").exists()
    # Within the margin (a point extrapolated just past the scan's edge) is accepted.
    geometry = phantom.image.geometry
    edge = geometry.index_to_lps(np.array([[geometry.size[0] - 0.5, 10.0, 10.0]]))[0]
    positions = phantom.landmarks.positions.copy()
    positions[0] = edge + 5.0 * geometry.direction_lps[:, 0]  # 5 mm past the last voxel's outer edge
    inside = PointSet(phantom.landmarks.names, positions, "LPS")
    export_case(tmp_path / "ds", "case_0001", phantom.image, phantom.labels, inside)


def test_a_constant_ct_is_refused_as_predict_refuses_it(phantom, tmp_path, capsys):
    blank = Volume(np.zeros_like(phantom.image.array), phantom.image.geometry)
    empty = Volume(np.zeros_like(phantom.labels.array), phantom.labels.geometry)
    write_volume(blank, tmp_path / "blank.nrrd")
    write_volume(empty, tmp_path / "empty.nrrd")
    code = main(["export", "--image", str(tmp_path / "blank.nrrd"), "--segmentation", str(tmp_path / "empty.nrrd"),
                 "--dataset", str(tmp_path / "ds"), "--case-id", "case_0001", "--allow-empty-segmentation"])
    assert code == 2
    assert "The CT is empty: every voxel has the value 0" in capsys.readouterr().err
    assert not (tmp_path / "ds").exists()


def test_an_empty_segmentation_needs_the_option_and_the_check_flags_it(phantom, tmp_path, capsys):
    empty = Volume(np.zeros_like(phantom.labels.array), phantom.labels.geometry)
    with pytest.raises(ValueError, match=r"segmentation is empty.*--allow-empty-segmentation"):
        export_case(tmp_path / "ds", "case_0001", phantom.image, empty)
    assert not (tmp_path / "ds").exists()
    export_case(tmp_path / "ds", "case_0001", phantom.image, phantom.labels)
    assert main(["dataset-summary", "--dataset", str(tmp_path / "ds"), "--check"]) == 0
    out = capsys.readouterr().out
    assert "Checked 1 case version(s)" in out and "no problems" in out
    export_case(tmp_path / "ds", "no_sternum", phantom.image, empty, allow_empty_segmentation=True)
    assert main(["dataset-summary", "--dataset", str(tmp_path / "ds"), "--check"]) == 1
    out = capsys.readouterr().out
    assert "1 problem(s)" in out and "problem: case no_sternum: its segmentation is empty" in out


def test_cli_export_takes_a_plain_label_map_by_value(phantom, tmp_path, capsys):
    write_case(phantom, tmp_path / "cases", "phantom000", label_format="nrrd")
    arguments = ["export", "--image", str(tmp_path / "cases/images/phantom000.nrrd"),
                 "--dataset", str(tmp_path / "new" / "datasets" / "ds"), "--case-id", "case_0001"]  # fmt: skip
    # Standard values 1-4 need no option; the dataset's missing parent folders are created.
    assert main([*arguments, "--segmentation", str(tmp_path / "cases/labels/phantom000.nrrd")]) == 0
    written = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "new/datasets/ds/labelsTr/case_0001.nrrd")))
    np.testing.assert_array_equal(written, phantom.labels.array)
    # Other values need --label-value, as for import.
    shifted = Volume(np.where(phantom.labels.array > 0, phantom.labels.array + 10, 0), phantom.labels.geometry)
    write_volume(shifted, tmp_path / "shifted.nrrd")
    assert main([*arguments[:-1], "case_0002", "--segmentation", str(tmp_path / "shifted.nrrd")]) == 2
    assert "label values [11, 12, 13, 14] have no standard name" in capsys.readouterr().err
    values = ["--label-value", "11=Manubrium", "--label-value", "12=Sternal_body", "--label-value", "13=Xiphoid",
              "--label-value", "14=Cartilage"]  # fmt: skip
    assert main([*arguments[:-1], "case_0002", "--segmentation", str(tmp_path / "shifted.nrrd"), *values]) == 0
    written = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "new/datasets/ds/labelsTr/case_0002.nrrd")))
    np.testing.assert_array_equal(written, phantom.labels.array)
