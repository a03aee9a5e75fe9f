"""The study's central experiment, repeatable: train the landmark model on nested subsets of
one case pool (e.g. 5, 10, 15, 20 cases) and report the landmark tables on fixed test cases.

The pool is shuffled once (seeded); its last ``validation_count`` cases choose each model's
best epoch and never train; subset n is the first n of the rest, so every larger subset
contains every smaller one. Each size trains into ``<output>/cases_<n>/`` and resumes there
after an interruption. Results go to ``learning_curve.md`` and ``learning_curve.csv``.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
from SternumSSMLib.atomic import write_text_atomic
from SternumSSMLib.metrics import landmark_error_table, landmark_errors

from .landmark_prediction import LandmarkModel
from .landmark_training import LandmarkCase, train_landmark_model
from .scn_config import SCNConfig

TABLE_KEYS = ("points", "missing", "excluded", "median_mm", "mean_mm", "sd_mm", "O_2", "O_4", "O_10")


def nested_subsets(
    pool: list[LandmarkCase], sizes: list[int], validation_count: int, seed: int = 0
) -> tuple[dict[int, list[LandmarkCase]], list[LandmarkCase]]:
    """Training subsets by size (each contains the smaller ones) and the validation cases."""
    order = np.random.default_rng(seed).permutation(len(pool))
    shuffled = [pool[i] for i in order]
    validation, trainable = shuffled[len(shuffled) - validation_count :], shuffled[: len(shuffled) - validation_count]
    too_large = [size for size in sizes if size > len(trainable)]
    if too_large:
        raise ValueError(
            f"Sizes {too_large} exceed the {len(trainable)} cases left after {validation_count} validation cases; "
            "add cases or choose smaller sizes."
        )
    return {size: trainable[:size] for size in sorted(sizes)}, validation


def run_learning_curve(
    pool: list[LandmarkCase],
    test: list[LandmarkCase],
    sizes: list[int],
    config: SCNConfig,
    output: Path | str,
    validation_count: int = 2,
    show_progress: bool = True,
) -> dict[int, dict]:
    """Train per size, predict the test cases, and return the tables (all points / within 10 mm) per size."""
    if not test:
        raise ValueError("A learning curve needs test cases; pass a test dataset or test phantoms.")
    output = Path(output)
    subsets, validation = nested_subsets(pool, sizes, validation_count, config.seed)
    results = {}
    for size, training in subsets.items():
        folder = output / f"cases_{size:03d}"
        train_landmark_model(training, validation, folder, config, show_progress=show_progress)
        model = LandmarkModel(folder)
        errors = np.concatenate(
            [landmark_errors(model.predict(case.labels, case.ct).points("LPS"), case.landmarks) for case in test]
        )
        results[size] = {
            "training_cases": [case.case_id for case in training],
            "all": landmark_error_table(errors),
            "within_10mm": landmark_error_table(errors, exclude_beyond_mm=10.0),
        }
    write_text_atomic(output / "learning_curve.md", learning_curve_markdown(results), overwrite=True)
    write_text_atomic(output / "learning_curve.csv", learning_curve_csv(results), overwrite=True)
    return results


def learning_curve_markdown(results: dict[int, dict]) -> str:
    lines = []
    for part, title in (("all", "All points"), ("within_10mm", "Without points beyond 10 mm")):
        lines += [
            f"### Landmarks, {title.lower()}",
            "",
            "| Training cases | Points | Median (mm) | Mean ± SD (mm) | O_2 | O_4 | O_10 |",
            "|---|---|---|---|---|---|---|",
        ]
        for size, result in results.items():
            table = result[part]
            lines.append(
                f"| {size} | {table['points']} | {table['median_mm']:.2f} | {table['mean_mm']:.2f} ± "
                f"{table['sd_mm']:.2f} | {table['O_2']:.1f}% | {table['O_4']:.1f}% | {table['O_10']:.1f}% |"
            )
        lines.append("")
    return "\n".join(lines)


def learning_curve_csv(results: dict[int, dict]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["training_cases", "table", *TABLE_KEYS])
    for size, result in results.items():
        for part in ("all", "within_10mm"):
            writer.writerow([size, part, *(result[part][key] for key in TABLE_KEYS)])
    return buffer.getvalue()
