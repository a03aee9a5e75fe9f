"""`sternum-ssm learning-curve`: nested subsets, one resumable model per size, the study's tables per size."""

from __future__ import annotations

import csv
import json

import pytest
from SternumLandmarksLib.landmark_training import LandmarkCase
from SternumLandmarksLib.learning_curve import nested_subsets
from SternumSSMLib.cli import main

TINY = {"grid_shape_kji": [32, 24, 16], "spacing_mm": 6.0, "local_channels": 4, "spatial_channels": 4,
        "spatial_kernel": 3, "epochs": 1, "lr_decay_start_epoch": 1, "iterations_per_epoch": 1}


def test_subsets_are_nested_and_never_hold_validation_cases():
    pool = [LandmarkCase(f"c{i}", None, None) for i in range(12)]
    subsets, validation = nested_subsets(pool, [3, 5, 10], validation_count=2)
    ids = {size: [case.case_id for case in cases] for size, cases in subsets.items()}
    assert ids[5][:3] == ids[3] and ids[10][:5] == ids[5]
    assert not {case.case_id for case in validation} & set(ids[10])
    with pytest.raises(ValueError, match="exceed the 10 cases"):
        nested_subsets(pool, [11], validation_count=2)


def test_learning_curve_command_writes_one_table_row_per_size(tmp_path, capsys):
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(TINY))
    output = tmp_path / "curve"
    code = main(["learning-curve", "--phantoms", "4", "--test-phantoms", "1", "--sizes", "1", "2",
                 "--validation-count", "1", "--config", str(config), "--output", str(output)])
    assert code == 0
    rows = list(csv.DictReader((output / "learning_curve.csv").open()))
    assert [(row["training_cases"], row["table"]) for row in rows] == [
        ("1", "all"), ("1", "within_10mm"), ("2", "all"), ("2", "within_10mm")]
    for row in rows:
        # An untrained model places nothing: every point is then missing, and the statistics are empty.
        assert int(row["points"]) + int(row["missing"]) + int(row.get("excluded") or 0) == 34
        if int(row["points"]):
            assert float(row["O_2"]) >= float(row["O_10"])
    small = json.loads((output / "cases_001" / "config.json").read_text())["record"]["training_cases"]
    large = json.loads((output / "cases_002" / "config.json").read_text())["record"]["training_cases"]
    assert len(small) == 1 and len(large) == 2 and small[0] in large
    text = capsys.readouterr().out
    assert "| Training cases | Points | Median (mm) | Mean ± SD (mm) | O_2 | O_4 | O_10 |" in text
    assert (output / "learning_curve.md").read_text().count("\n| 2 |") == 2
