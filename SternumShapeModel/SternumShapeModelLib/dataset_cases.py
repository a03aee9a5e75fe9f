"""Cases for a shape model from a dataset folder (SternumSSMLib.dataset layout), read one at a time."""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from SternumSSMLib.dataset import current_records, open_dataset, read_manifest, sha256_file
from SternumSSMLib.geometry import PointSet
from SternumSSMLib.image_files import read_labels
from SternumSSMLib.landmark_files import read_landmarks_csv
from SternumSSMLib.provenance import tool_version

from .correspondence import ShapeCase

# Values of a "sex" column that count as 1 (male); every other non-empty value counts as 0 (female).
_MALE = {"m", "male", "1"}


def dataset_records(root: Path | str, split: str = "train") -> list[dict]:
    """The current case records of a dataset split, in case-id order."""
    dataset = open_dataset(root)
    records = sorted(current_records(read_manifest(dataset.root), split), key=lambda r: r["case_id"])
    if not records:
        raise ValueError(f"Dataset {dataset.root} has no current cases in the {split} split.")
    return records


def read_cases(root: Path | str, records: list[dict]) -> Iterator[ShapeCase]:
    """Each record's label map and LPS landmarks; a case without a landmark file gets no landmarks."""
    root = Path(root)
    for record in records:
        labels = read_labels(root / record["files"]["labels"]["path"])
        entry = record["files"].get("landmarks_csv")
        if entry is None:
            landmarks = PointSet(names=(), positions=np.empty((0, 3)), coordinate_system="LPS")
        else:
            landmarks = read_landmarks_csv(root / entry["path"])
        yield ShapeCase(record["case_id"], labels, landmarks)


def dataset_provenance(root: Path | str, records: list[dict], split: str) -> dict:
    """Which dataset version and which case versions a model was built from (hashes, no personal data)."""
    root = Path(root).absolute()
    return {
        "tool": tool_version(),
        "dataset": str(root),
        "dataset_manifest_sha256": sha256_file(root / "manifest.jsonl"),
        "split": split,
        "cases": {
            r["case_id"]: {"version": r["version"], "labels_sha256": r["files"]["labels"]["sha256"]} for r in records
        },
    }


def covariate_value(name: str, text: str) -> float:
    """A covariate as a number: empty is NaN, ``sex`` is 1 for M/male/1 and 0 otherwise, the rest are numbers."""
    text = text.strip()
    if not text:
        return math.nan
    if name.lower() == "sex":
        return 1.0 if text.lower() in _MALE else 0.0
    try:
        return float(text)
    except ValueError as error:
        raise ValueError(f"{name} = {text!r} is not a number.") from error


def read_covariates(path: Path | str) -> dict[str, dict[str, float]]:
    """Covariates per case id from a CSV: a ``case_id`` column, then numeric columns (``sex``: M/F).

    Empty cells become NaN (that case is left out of the regression). These are personal data:
    they are read for the regression only and never written into a model or dataset.
    """
    path = Path(path)
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(line for line in handle if not line.startswith("#")))
    if not rows or "case_id" not in rows[0]:
        raise ValueError(f"{path} needs a header row with a case_id column and one row per case.")
    result = {}
    for number, row in enumerate(rows, start=2):
        values = {}
        for name, text in row.items():
            if name == "case_id" or name is None:
                continue
            try:
                values[name] = covariate_value(name, text or "")
            except ValueError as error:
                raise ValueError(f"{path}, line {number}: {error}") from error
        result[row["case_id"]] = values
    return result
