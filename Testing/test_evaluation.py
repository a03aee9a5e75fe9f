"""Evaluation metrics against hand-computed values, and `sternum-ssm evaluate` end to end."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import slicerio
from SternumSSMLib.case_files import write_volume
from SternumSSMLib.cli import main
from SternumSSMLib.evaluation import OUTPUT_FILES, compare_landmarks, on_common_grid
from SternumSSMLib.geometry import ImageGeometry, PointSet, Volume
from SternumSSMLib.image_files import read_labels
from SternumSSMLib.landmark_files import write_landmarks_csv
from SternumSSMLib.metrics import (
    dice_per_class,
    landmark_error_table,
    landmark_errors,
    segmentation_scores,
    surface_distances,
)


def grid(shape_kji=(12, 12, 12), spacing_ijk=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0)) -> ImageGeometry:
    return ImageGeometry(origin_lps=origin, spacing=spacing_ijk, direction_lps=np.eye(3), size=shape_kji[::-1])


def labels(geometry: ImageGeometry, boxes: dict[int, tuple[slice, slice, slice]]) -> Volume:
    array = np.zeros(geometry.shape_kji, dtype=np.uint8)
    for value, box in boxes.items():
        array[box] = value
    return Volume(array=array, geometry=geometry)


CUBE = (slice(2, 6), slice(2, 6), slice(2, 6))
CUBE_SHIFTED_I = (slice(2, 6), slice(2, 6), slice(3, 7))


def test_cubes_shifted_by_one_voxel_and_over_segmentation() -> None:
    geometry = grid()
    predicted = labels(geometry, {1: CUBE, 2: (slice(7, 11), slice(2, 6), slice(2, 7))})
    reference = labels(geometry, {1: CUBE_SHIFTED_I, 2: (slice(7, 11), slice(2, 6), slice(2, 6))})
    scores = segmentation_scores(predicted, reference)

    manubrium = scores["Manubrium"]  # 64 voxels each, 48 shared
    assert manubrium["dice"] == pytest.approx(0.75)
    assert manubrium["sensitivity"] == pytest.approx(0.75)
    assert manubrium["volume_similarity"] == pytest.approx(0.0)
    body = scores["Sternal_body"]  # 80 predicted voxels hold all 64 reference voxels
    assert body["dice"] == pytest.approx(128 / 144)
    assert body["sensitivity"] == pytest.approx(1.0)
    assert body["volume_similarity"] == pytest.approx(2 * 16 / 144)  # positive: over-segmented
    total = scores["Total"]
    assert total["dice"] == pytest.approx(2 * (48 + 64) / (128 + 144))
    assert total["sensitivity"] == pytest.approx((48 + 64) / 128)
    assert total["dice"] == pytest.approx(dice_per_class(predicted.array, reference.array)["Total"])
    # Of each cube's 56 surface voxels, 20 lie 1 mm from the other surface (a moved face and the
    # centre of the opposite face); the rest touch it.
    assert manubrium["asd_mm"] == pytest.approx(40 / 112)


def test_empty_masks_are_explicit() -> None:
    geometry = grid()
    predicted = labels(geometry, {1: CUBE, 3: (*CUBE_SHIFTED_I[:2], slice(8, 10))})
    reference = labels(geometry, {1: CUBE, 4: (slice(8, 10), slice(8, 10), slice(8, 10))})
    scores = segmentation_scores(predicted, reference)

    assert scores["Manubrium"]["dice"] == 1.0 and scores["Manubrium"]["asd_mm"] == 0.0
    assert all(math.isnan(value) for key, value in scores["Sternal_body"].items() if not key.endswith("voxels"))
    xiphoid, cartilage = scores["Xiphoid"], scores["Cartilage"]  # prediction only, reference only
    assert xiphoid["dice"] == 0 and math.isnan(xiphoid["sensitivity"]) and xiphoid["volume_similarity"] == 2
    assert cartilage["dice"] == 0 and cartilage["sensitivity"] == 0 and cartilage["volume_similarity"] == -2
    assert math.isnan(xiphoid["asd_mm"]) and math.isnan(cartilage["asd_mm"])
    assert scores["Total"]["asd_mm"] == 0.0  # pooled over classes with both surfaces


def test_surface_distance_uses_anisotropic_spacing_in_array_order() -> None:
    geometry = grid((5, 5, 8), spacing_ijk=(0.5, 1.0, 3.0))
    one = np.zeros(geometry.shape_kji, dtype=bool)
    along_i, along_k = one.copy(), one.copy()
    one[2, 2, 2], along_i[2, 2, 6], along_k[3, 2, 2] = True, True, True
    spacing_kji = geometry.spacing[::-1]
    assert surface_distances(one, along_i, spacing_kji).mean() == pytest.approx(4 * 0.5)
    assert surface_distances(one, along_k, spacing_kji).mean() == pytest.approx(3.0)
    scores = segmentation_scores(Volume(one.astype(np.uint8), geometry), Volume(along_k.astype(np.uint8), geometry))
    assert scores["Manubrium"]["asd_mm"] == pytest.approx(3.0)


def test_surface_at_the_grid_edge_is_the_same_as_inside_a_larger_grid() -> None:
    """A structure cut by the field of view keeps its cut face as surface, whatever the crop."""
    predicted, reference = np.zeros((6, 7, 8), dtype=bool), np.zeros((6, 7, 8), dtype=bool)
    predicted[0:4, 1:5, 0:5], reference[0:3, 1:6, 0:4] = True, True
    spacing_kji = np.array([2.0, 1.0, 0.5])
    padded = [np.pad(mask, 3) for mask in (predicted, reference)]
    edge = surface_distances(predicted, reference, spacing_kji)
    assert np.sort(edge) == pytest.approx(np.sort(surface_distances(*padded, spacing_kji)))
    assert edge.mean() > 0


@pytest.mark.parametrize("spacing_ijk", [(1.0, 1.0, 1.0), (0.8, 1.0, 2.0)])
def test_asd_of_concentric_spheres_is_the_radius_gap(spacing_ijk) -> None:
    spacing_kji = np.array(spacing_ijk[::-1])
    shape = tuple(int(40 / s) for s in spacing_kji)
    centre = (np.array(shape) - 1) / 2
    radius = np.sqrt(
        sum(((axis - c) * s) ** 2 for axis, c, s in zip(np.indices(shape), centre, spacing_kji, strict=True))
    )
    geometry = grid(shape, spacing_ijk)
    inner = Volume((radius <= 8).astype(np.uint8), geometry)
    outer = Volume((radius <= 11).astype(np.uint8), geometry)
    assert segmentation_scores(inner, outer)["Manubrium"]["asd_mm"] == pytest.approx(3.0, abs=0.4)
    assert segmentation_scores(outer, inner)["Manubrium"]["volume_similarity"] > 0


def test_scores_refuse_different_grids() -> None:
    with pytest.raises(ValueError, match="different voxel grids"):
        segmentation_scores(labels(grid(), {1: CUBE}), labels(grid(spacing_ijk=(1, 1, 2)), {1: CUBE}))


def crop(volume: Volume, box: tuple[slice, slice, slice], shift_mm: float = 0.0) -> Volume:
    """A sub-volume on the same grid, as Slicer crops a .seg.nrrd; ``shift_mm`` moves it along L."""
    geometry, array = volume.geometry, volume.array[box]
    start_lps = geometry.index_to_lps(np.array([[box[2].start, box[1].start, box[0].start]], dtype=float))[0]
    origin = start_lps + np.array([shift_mm, 0.0, 0.0])
    return Volume(array, ImageGeometry(origin, geometry.spacing, geometry.direction_lps, array.shape[::-1]))


def test_grids_cropped_differently_are_compared_on_a_covering_grid() -> None:
    geometry = grid(spacing_ijk=(0.7, 1.0, 2.0), origin=(4.0, -2.0, 1.0))
    predicted = labels(geometry, {1: CUBE, 2: (slice(7, 11), slice(2, 6), slice(2, 7))})
    reference = labels(geometry, {1: CUBE_SHIFTED_I, 2: (slice(7, 11), slice(2, 6), slice(2, 6))})
    expected = segmentation_scores(predicted, reference)
    cropped_p = crop(predicted, (slice(1, 12), slice(1, 7), slice(1, 8)))
    cropped_r = crop(reference, (slice(2, 11), slice(0, 9), slice(2, 12)))
    on_grid = on_common_grid(cropped_p, cropped_r)
    assert on_grid[0].geometry.same_grid(on_grid[1].geometry)
    for name, scores in segmentation_scores(*on_grid).items():
        assert scores == pytest.approx(expected[name], nan_ok=True)

    with pytest.raises(ValueError, match=r"case07.*up to whole voxels"):
        on_common_grid(crop(predicted, (slice(1, 12), slice(1, 7), slice(1, 8)), shift_mm=0.35), cropped_r, "case07")


def test_landmark_table_and_table_without_points_beyond_10_mm() -> None:
    errors = np.array([1.0, 1.0, 1.0, 3.0, 3.0, 5.0, 12.0, np.nan])
    table = landmark_error_table(errors)
    assert (table["points"], table["missing"], table["excluded"]) == (7, 1, 0)
    assert table["median_mm"] == 3.0
    assert table["mean_mm"] == pytest.approx(26 / 7)
    assert table["sd_mm"] == pytest.approx(np.std(errors[:7], ddof=1))
    assert (table["O_2"], table["O_4"], table["O_10"]) == pytest.approx((400 / 7, 200 / 7, 100 / 7))

    within = landmark_error_table(errors, exclude_beyond_mm=10)
    assert (within["points"], within["missing"], within["excluded"]) == (6, 1, 1)
    assert within["mean_mm"] == pytest.approx(14 / 6)
    assert (within["O_2"], within["O_4"], within["O_10"]) == pytest.approx((50.0, 100 / 6, 0.0))
    assert math.isnan(landmark_error_table(np.array([np.nan]))["median_mm"])
    with pytest.raises(ValueError, match="NaN"):
        landmark_error_table(np.array([1.0, -1.0]))


def reference_points() -> PointSet:
    positions = np.array([[0, 0, 0], [10, 0, 0], [0, 10, 0], [0, 0, 10], [5, 5, 5]], dtype=float)
    positions[4] = np.nan
    return PointSet(names=("L01", "L02", "L03", "L04", "L05"), positions=positions, coordinate_system="LPS")


def predicted_points() -> PointSet:
    """Rows in another order; errors 5 (3-4-0), 0, 13 (5-12-0); L04 missing here, L05 in the reference."""
    reference = reference_points()
    offsets = {"L01": (3, 4, 0), "L02": (0, 0, 0), "L03": (5, 12, 0), "L04": (np.nan,) * 3, "L05": (0, 0, 0)}
    names = ("L05", "L03", "L01", "L04", "L02")
    positions = [reference.positions[reference.names.index(n)] + offsets[n] for n in names]
    positions[0] = np.array([1.0, 2.0, 3.0])
    return PointSet(names=names, positions=np.array(positions), coordinate_system="LPS")


def test_landmark_errors_match_by_name_and_count_missing_points() -> None:
    comparison = compare_landmarks(predicted_points(), reference_points())
    np.testing.assert_allclose(comparison.errors_mm, [5.0, 0.0, 13.0, np.nan, np.nan])
    assert comparison.missing == ("", "", "", "prediction", "reference")
    assert landmark_error_table(comparison.errors_mm)["missing"] == 2


def test_lps_and_ras_inputs_give_the_same_errors() -> None:
    in_lps = landmark_errors(predicted_points(), reference_points())
    in_ras = landmark_errors(predicted_points().to("RAS"), reference_points())
    both_ras = landmark_errors(predicted_points().to("RAS"), reference_points().to("RAS"))
    np.testing.assert_allclose(in_ras, in_lps)
    np.testing.assert_allclose(both_ras, in_lps)
    mislabelled = PointSet(predicted_points().to("RAS").names, predicted_points().to("RAS").positions, "LPS")
    assert np.nanmax(np.abs(landmark_errors(mislabelled, reference_points()) - in_lps)) > 1


def test_landmark_errors_refuse_other_protocols() -> None:
    other = PointSet(("L01", "L02", "X03", "L04", "L05"), reference_points().positions, "LPS")
    with pytest.raises(ValueError, match=r"only predicted \['X03'\].*only in the reference \['L03'\]"):
        landmark_errors(other, reference_points())
    doubled = PointSet(("L01", "L01", "L03", "L04", "L05"), reference_points().positions, "LPS")
    with pytest.raises(ValueError, match="more than once"):
        landmark_errors(doubled, reference_points())


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------


def write_cropped_seg_nrrd(volume: Volume, path, crop: tuple[slice, slice, slice]) -> None:
    """A .seg.nrrd on a sub-grid (as Slicer crops to the segments), values unlike the standard ones."""
    sub = volume.array[crop]
    start_ijk = [crop[2].start, crop[1].start, crop[0].start]
    ijk_to_lps = volume.geometry.ijk_to_lps()
    ijk_to_lps[:3, 3] = volume.geometry.index_to_lps(np.array([start_ijk], dtype=float))[0]
    segmentation = slicerio.create_segmentation(sub.shape[::-1], ijk_to_lps)
    for value, name in ((1, "Manubrium"), (2, "Sternal_body")):
        slicerio.add_segment(segmentation, sub.transpose(2, 1, 0) == value, {"id": f"s{value}", "name": name})
    slicerio.write_segmentation(str(path), segmentation)


@pytest.fixture
def study(tmp_path):
    """Predictions (flat, as `predict` writes) and a dataset-style reference folder."""
    predictions, reference = tmp_path / "predictions", tmp_path / "dataset"
    for folder in (predictions, reference / "labelsTr", reference / "landmarks"):
        folder.mkdir(parents=True)
    geometry = grid(spacing_ijk=(1.0, 1.0, 2.0), origin=(-5.0, 3.0, 10.0))
    truth = labels(geometry, {1: CUBE, 2: (slice(7, 11), slice(2, 6), slice(2, 6))})
    for case in ("case01", "case02", "case03"):
        write_volume(truth, reference / "labelsTr" / f"{case}.nrrd")
        write_landmarks_csv(reference / "landmarks" / f"{case}.csv", reference_points(), "LPS")
    write_volume(
        labels(geometry, {1: CUBE_SHIFTED_I, 2: (slice(7, 11), slice(2, 6), slice(2, 6))}), predictions / "case01.nrrd"
    )
    write_cropped_seg_nrrd(truth, predictions / "case02.seg.nrrd", (slice(1, 12), slice(1, 7), slice(1, 7)))
    write_landmarks_csv(predictions / "case01.csv", predicted_points(), "RAS")
    write_landmarks_csv(predictions / "case02.csv", reference_points(), "LPS")
    write_landmarks_csv(predictions / "case04.csv", reference_points(), "LPS")
    return predictions, reference, tmp_path / "evaluation"


def read_rows(path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_cli_end_to_end(study, capsys) -> None:
    predictions, reference, output = study
    assert (
        main(["evaluate", "--predictions", str(predictions), "--reference", str(reference), "--output", str(output)])
        == 0
    )
    printed = capsys.readouterr().out

    segmentation = {(r["case"], r["class"]): r for r in read_rows(output / "segmentation.csv")}
    assert float(segmentation["case01", "Manubrium"]["dice"]) == pytest.approx(0.75)
    assert float(segmentation["case01", "Sternal_body"]["dice"]) == 1.0
    assert float(segmentation["case02", "Total"]["dice"]) == 1.0  # the cropped .seg.nrrd, read by segment name
    assert segmentation["case01", "Xiphoid"]["dice"] == ""  # absent on both sides
    assert {case for case, _ in segmentation} == {"case01", "case02"}

    landmarks = read_rows(output / "landmarks.csv")
    assert len(landmarks) == 10
    case01 = {r["landmark"]: r for r in landmarks if r["case"] == "case01"}
    assert float(case01["L03"]["ipe_mm"]) == pytest.approx(13.0)  # RAS prediction against an LPS reference
    assert (case01["L04"]["ipe_mm"], case01["L04"]["missing"]) == ("", "prediction")

    markdown = (output / "evaluation.md").read_text()
    assert markdown == printed
    assert "| | Manubrium | Sternal body | Xiphoid | Cartilage | Total |" in markdown
    assert "| Dice | 0.875 | 1.000 | – | – | " in markdown
    for row in ("| Sensitivity |", "| ASD (mm) |", "| VS |"):
        assert row in markdown
    assert "| Points | Median (mm) | Mean ± SD (mm) | O_2 | O_4 | O_10 |" in markdown
    assert "| 7 | 0.00 | 2.57 ± 4.96 | 28.57% | 28.57% | 14.29% |" in markdown  # 5, 0, 13 and 0, 0, 0, 0
    assert "## Landmarks without points beyond 10 mm (1 excluded)" in markdown
    assert "| 6 | 0.00 | 0.83 ± 2.04 | 16.67% | 16.67% | 0.00% |" in markdown
    assert "- segmentation reference without prediction: 1 case (case03)" in markdown
    assert "- landmark reference without prediction: 1 case (case03)" in markdown
    assert "- landmark prediction without reference: 1 case (case04)" in markdown

    assert (
        main(["evaluate", "--predictions", str(predictions), "--reference", str(reference), "--output", str(output)])
        == 2
    )  # earlier results are not replaced silently
    assert "already exist" in capsys.readouterr().err


def test_cli_refuses_mismatched_geometry_without_writing(study, capsys) -> None:
    predictions, reference, output = study
    write_volume(labels(grid(spacing_ijk=(1.0, 1.0, 1.5)), {1: CUBE}), predictions / "case03.nii.gz")
    code = main(["evaluate", "--predictions", str(predictions), "--reference", str(reference), "--output", str(output)])
    error = capsys.readouterr().err
    assert code == 2
    assert "case03" in error and "resample the prediction onto the reference grid" in error
    assert not output.exists()


def test_cli_refuses_missing_reference_and_unpaired_folders(study, tmp_path, capsys) -> None:
    predictions, _, output = study
    assert (
        main(
            [
                "evaluate",
                "--predictions",
                str(predictions),
                "--reference",
                str(tmp_path / "nowhere"),
                "--output",
                str(output),
            ]
        )
        == 2
    )
    assert "Reference folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert (
        main(
            [
                "evaluate",
                "--predictions",
                str(predictions),
                "--reference",
                str(tmp_path / "empty"),
                "--output",
                str(output),
            ]
        )
        == 2
    )
    assert "No case" in capsys.readouterr().err
    assert not any((output / name).exists() for name in OUTPUT_FILES)


def test_unpaired_cases_are_summarised_and_nothing_placed_is_said_in_words(study, capsys) -> None:
    predictions, reference, output = study
    truth = read_labels(reference / "labelsTr" / "case01.nrrd")
    for number in range(5, 30):  # 25 more reference cases that have no prediction
        write_volume(truth, reference / "labelsTr" / f"case{number:02d}.nrrd")
    unplaced = PointSet(reference_points().names, np.full((5, 3), np.nan), "LPS")
    write_landmarks_csv(predictions / "case01.csv", unplaced, "LPS", overwrite=True)
    assert main(["evaluate", "--predictions", str(predictions), "--reference", str(reference),
                 "--output", str(output)]) == 0  # fmt: skip
    captured = capsys.readouterr()
    assert "nan" not in captured.err.lower() and "nan" not in captured.out.lower()
    assert "case01: landmarks no IPE: none of the 5 points could be compared (5 not placed in the prediction" in (
        captured.err
    )
    lines = [line for line in captured.out.splitlines() if "segmentation reference without prediction" in line]
    assert lines == ["- segmentation reference without prediction: 26 cases (case03, case05, case06, case07, case08 "
                     "and 21 more)"]
