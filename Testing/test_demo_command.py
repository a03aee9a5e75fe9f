"""`sternum-ssm demo` (what `make demo` runs): every file it promises, and numbers that mean the models worked."""

from __future__ import annotations

import re

import pytest
from SternumSSMLib.cli import main
from SternumSSMLib.image_files import read_labels
from SternumSSMLib.landmark_files import read_landmarks_csv


@pytest.mark.slow
def test_demo_writes_segmentation_landmarks_and_picture_and_reports_the_models_accuracy(tmp_path, capsys):
    assert main(["demo", "--output", str(tmp_path)]) == 0
    printed = capsys.readouterr().out

    predictions = tmp_path / "predictions"
    labels = read_labels(predictions / "phantom000.seg.nrrd")
    assert set(labels.array.ravel().tolist()) == {0, 1, 2, 3, 4}
    landmarks = read_landmarks_csv(predictions / "phantom000.csv", "LPS")
    assert len(landmarks.names) == 34
    assert (predictions / "phantom000.mrk.json").is_file() and (tmp_path / "phantom_qa.png").stat().st_size > 50_000

    total_dice = float(re.search(r"Total (\d\.\d+)", printed).group(1))
    median_mm = float(re.search(r"median (\d+\.\d+) mm", printed).group(1))
    assert total_dice > 0.9 and median_mm < 2.0, printed  # measured: 0.924 and 1.41 mm
    # One line per flagged point, under a headline, never every flag on one line.
    report = printed.split("beyond 10 mm")[1].split("\nLandmarks: ")[0].splitlines()[1:]
    assert report[0].startswith("phantom000: 34 of 34 landmarks placed")
    assert all(len(line) < 200 for line in report), report
