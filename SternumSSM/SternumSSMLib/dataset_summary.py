"""Round-by-round summary of a dataset: how many cases, and how much correcting each model's output took.

A *round* is the set of cases whose prediction came from one model (identified by its folder
hash), numbered in the order the models were first used; cases segmented without a recorded
prediction are round 0 ("manual"). Each case counts once, with its current version. As the
models improve, Dice between prediction and correction rises and the changed voxels, landmark
displacement and minutes spent fall. Each figure says how many cases it covers (``*_cases``): only
cases exported with their prediction have a correction effort.
"""

from __future__ import annotations

from pathlib import Path
from statistics import mean, median

from .atomic import atomic_output_path
from .dataset import current_records, open_dataset, read_manifest


def round_of_records(records: list[dict]) -> dict[str, int]:
    """Model hash -> round number (1, 2, ...) in order of first export."""
    rounds: dict[str, int] = {}
    for record in sorted(records, key=lambda r: r["exported_at"]):
        model = (record.get("prediction") or {}).get("model_sha256")
        if model and model not in rounds:
            rounds[model] = len(rounds) + 1
    return rounds


def dataset_summary(root: Path | str) -> dict:
    """Counts and per-round correction effort, as plain data (for the CLI, the module and plots)."""
    dataset = open_dataset(root)
    records = read_manifest(dataset.root)
    current = current_records(records)
    rounds = round_of_records(records)
    rows: dict[int, list[dict]] = {}
    for record in current:
        model = (record.get("prediction") or {}).get("model_sha256")
        rows.setdefault(rounds.get(model, 0), []).append(record)
    return {
        "dataset": str(dataset.root),
        "training_cases": len(current_records(records, "train")),
        "test_cases": len(current_records(records, "test")),
        "versions": len(records),
        "cases_with_correction": sum(1 for record in current if record.get("correction")),
        "last_round": max(rows, default=0),
        "rounds": [_round_row(number, rows[number]) for number in sorted(rows)],
    }


def _round_row(number: int, records: list[dict]) -> dict:
    dice, changed, displacement, minutes = [], [], [], []
    for record in records:
        correction = record.get("correction") or {}
        segmentation = correction.get("segmentation")
        if segmentation:
            values = [v for v in segmentation["dice"].values() if v is not None]
            if values:
                dice.append(mean(values))
            changed.append(segmentation["changed_voxels_total"])
        landmarks = correction.get("landmarks")
        if landmarks and landmarks.get("mean_mm") is not None:
            displacement.append(landmarks["mean_mm"])
        if correction.get("seconds_from_prediction") is not None:
            minutes.append(correction["seconds_from_prediction"] / 60.0)
    model = (records[0].get("prediction") or {}).get("model_sha256")
    return {
        "round": number,
        "model": model[:12] if model else "manual",
        "cases": len(records),
        "mean_dice": _rounded(mean(dice)) if dice else None,
        "mean_changed_voxels": _rounded(mean(changed), 1) if changed else None,
        "mean_landmark_displacement_mm": _rounded(mean(displacement)) if displacement else None,
        "median_minutes": _rounded(median(minutes), 1) if minutes else None,
        "dice_cases": len(dice),
        "changed_voxels_cases": len(changed),
        "landmark_displacement_cases": len(displacement),
        "minutes_cases": len(minutes),
    }


def _rounded(value: float, digits: int = 4) -> float:
    return round(float(value), digits)


# (key, number-of-cases key, column title, width) of each correction-effort column.
_COLUMNS = (
    ("mean_dice", "dice_cases", "Dice", 6),
    ("mean_changed_voxels", "changed_voxels_cases", "changed vox", 11),
    ("mean_landmark_displacement_mm", "landmark_displacement_cases", "landmarks mm", 12),
    ("median_minutes", "minutes_cases", "minutes", 7),
)


def summary_text(summary: dict) -> str:
    """The counts, then one row per round; each figure is followed by the number of cases it covers."""
    current = summary["training_cases"] + summary["test_cases"]
    lines = [
        f"{summary['dataset']}: {summary['training_cases']} training and {summary['test_cases']} test cases "
        f"({summary['versions']} versions in the manifest); last round {summary['last_round']}.",
        f"Correction effort is recorded for {summary['cases_with_correction']} of the {current} current cases (those "
        "exported with the prediction they started from); (n) after a figure is the number of cases it covers.",
        f"{'round':>5}  {'model':<12}  {'cases':>5}  "
        + "  ".join(f"{title:>{width + 7}}" for _, _, title, width in _COLUMNS),
    ]
    for row in summary["rounds"]:
        cells = "  ".join(_cell(row[key], row[count], width) for key, count, _, width in _COLUMNS)
        lines.append(f"{row['round']:>5}  {row['model']:<12}  {row['cases']:>5}  {cells}")
    return "\n".join(lines)


def _cell(value: float | None, cases: int, width: int) -> str:
    figure = f"{'-':>{width}}" if value is None else f"{value:>{width}.3f}"
    return f"{figure} {f'({cases})':>6}"


def plot_summary(summary: dict, path: Path | str, overwrite: bool = True) -> Path:
    """A PNG with correction effort per round: Dice, landmark displacement and minutes."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    rounds = [row["round"] for row in summary["rounds"]]
    panels = (
        ("mean_dice", "Dice prediction vs correction"),
        ("mean_landmark_displacement_mm", "Landmark displacement (mm)"),
        ("median_minutes", "Minutes to correct"),
    )
    figure, axes = pyplot.subplots(1, len(panels), figsize=(10, 3), constrained_layout=True)
    for axis, (key, title) in zip(axes, panels, strict=True):
        points = [(r, row[key]) for r, row in zip(rounds, summary["rounds"], strict=True) if row[key] is not None]
        if points:
            axis.plot(*zip(*points, strict=True), marker="o")
        axis.set_title(title, fontsize=9)
        axis.set_xlabel("round")
        axis.set_xticks(rounds)
    figure.suptitle(f"{summary['training_cases']} training cases, last round {summary['last_round']}", fontsize=10)
    path = Path(path)
    with atomic_output_path(path, overwrite=overwrite) as temporary:
        figure.savefig(temporary, format="png", dpi=100)
    pyplot.close(figure)
    return path
