"""``sternum-ssm train-landmarks`` and ``sternum-ssm place-landmarks``: thin wrappers over the library."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from SternumSSMLib.devices import DEVICES

if TYPE_CHECKING:
    from .landmark_prediction import LandmarkModel, LandmarkPrediction

# What each preset costs, measured on 2 CPU cores (the study's: one iteration of 1.6 s per training case
# and epoch; the cpu preset: the bundled demo model's training time).
PRESET_HELP = (
    "named configuration; --config keys change it. study (default): the study's SCN, 64 channels on a 3 mm "
    "80x56x32 grid, 5000 epochs of one pass over the training cases: a GPU job (on 2 CPU cores about 1.6 s per "
    "training case and epoch, so 10 cases take about 22 h and 20 cases 2 days). cpu: the bundled demo model's "
    "recipe (SternumLandmarksLib/data/scn_cpu_demo.json: 16 channels, 2 mm grid in the sternum's frame, 60 epochs "
    "of 50 iterations), about 1 h on 2 CPU cores. The expected time per epoch is measured and printed before training"
)


def add_landmark_parsers(commands) -> None:
    train = commands.add_parser("train-landmarks", help="train the landmark SpatialConfiguration-Net")
    source = train.add_mutually_exclusive_group(required=True)
    source.add_argument("--dataset", help="dataset folder with labelsTr/ and landmarks/ (written by export)")
    source.add_argument("--phantoms", type=int, help="train on this many generated phantoms instead")
    train.add_argument("--validation-phantoms", type=int, default=8, help="with --phantoms")
    train.add_argument("--validation-fraction", type=float, default=0.2, help="with --dataset")
    train.add_argument("--output", required=True, help="model folder; an interrupted run resumes from it")
    train.add_argument("--preset", choices=("study", "cpu"), default="study", help=PRESET_HELP)
    train.add_argument("--config", help="JSON config of the keys to change in the preset")
    train.add_argument("--threads", type=int, help="CPU threads for torch")
    train.add_argument("--device", choices=DEVICES, default="auto")
    train.set_defaults(run=command_train_landmarks)

    place = commands.add_parser(
        "place-landmarks", help="place the landmarks on segmentations (.seg.nrrd or label maps): .mrk.json + CSV"
    )
    place.add_argument("segmentations", nargs="+", help="segmentation files (.seg.nrrd by segment name or label maps)")
    place.add_argument("--ct", nargs="+", help="the CT of each segmentation, same order (for models that read the CT)")
    place.add_argument(
        "--model",
        help="landmark model folder (default: the bundled demo model); confidence thresholds come from its "
        "calibration.json (written by train-landmarks), else from its config.json",
    )
    place.add_argument("--output", required=True, help="folder for <case>.mrk.json, <case>.csv (LPS), <case>.json")
    place.add_argument("--device", choices=DEVICES, default="auto")
    place.set_defaults(run=command_place_landmarks)

    curve = commands.add_parser(
        "learning-curve", help="train the landmark model on nested subsets and tabulate the test errors per size"
    )
    pool = curve.add_mutually_exclusive_group(required=True)
    pool.add_argument("--dataset", help="dataset folder with labelsTr/ and landmarks/: the training pool")
    pool.add_argument("--phantoms", type=int, help="a pool of this many generated phantoms instead")
    tests = curve.add_mutually_exclusive_group(required=True)
    tests.add_argument("--test-dataset", help="dataset folder of the test cases (never trained on)")
    tests.add_argument("--test-phantoms", type=int, help="this many held-out phantoms as test cases")
    curve.add_argument("--sizes", type=int, nargs="+", default=[5, 10, 15, 20])
    curve.add_argument("--validation-count", type=int, default=2, help="pool cases kept for choosing the epoch")
    curve.add_argument("--preset", choices=("study", "cpu"), default="study", help="as for train-landmarks")
    curve.add_argument("--config", help="JSON config of the keys to change in the preset")
    curve.add_argument("--output", required=True, help="folder for one model per size and the tables")
    curve.set_defaults(run=command_learning_curve)


def command_train_landmarks(args: argparse.Namespace) -> int:
    from .landmark_training import train_from_command_line

    print(json.dumps(train_from_command_line(args), indent=1))
    return 0


def landmark_output_paths(output: Path, case_id: str) -> dict[str, Path]:
    return {suffix: output / f"{case_id}{suffix}" for suffix in (".mrk.json", ".csv", ".json")}


def command_place_landmarks(args: argparse.Namespace) -> int:
    """Every input is checked and no output file may exist before the first landmark is written."""
    from SternumSSMLib.atomic import write_text_atomic
    from SternumSSMLib.image_files import case_id_of, check_segmentation_file, read_ct, read_labels
    from SternumSSMLib.landmark_files import write_landmarks_csv
    from SternumSSMLib.markups import write_landmarks_markups

    from .landmark_prediction import BUNDLED_LANDMARK_MODEL, LandmarkModel

    segmentations = [Path(name) for name in args.segmentations]
    cts = [Path(name) for name in args.ct] if args.ct else [None] * len(segmentations)
    if len(cts) != len(segmentations):
        raise ValueError(f"{len(segmentations)} segmentations but {len(cts)} CTs; give one --ct per segmentation.")
    missing = [str(path) for path in [*segmentations, *cts] if path is not None and not path.exists()]
    if missing:
        raise FileNotFoundError(f"Input files not found: {', '.join(missing)}.")
    for path in segmentations:
        check_segmentation_file(path)
    output = Path(args.output)
    targets = {path: landmark_output_paths(output, case_id_of(path)) for path in segmentations}
    existing = [str(target) for paths in targets.values() for target in paths.values() if target.exists()]
    if existing:
        raise FileExistsError(f"Output files exist ({', '.join(existing[:4])}); choose another --output folder.")
    folder = Path(args.model) if args.model else BUNDLED_LANDMARK_MODEL
    print(f"Loading landmark model {folder} (weights only)", file=sys.stderr)
    model = LandmarkModel(folder, device=args.device)
    if model.reads_ct and args.ct is None:
        raise ValueError(f"Landmark model {folder.name} reads the CT next to the mask; give --ct per segmentation.")
    output.mkdir(parents=True, exist_ok=True)
    for (path, paths), ct_path in zip(targets.items(), cts, strict=True):
        labels = read_labels(path)
        ct = read_ct(ct_path) if ct_path is not None else None
        prediction = model.predict(labels, ct)
        points = prediction.points("LPS")
        write_landmarks_markups(points, paths[".mrk.json"])
        write_landmarks_csv(paths[".csv"], points, "LPS")
        record = prediction.record | {
            "segmentation": str(path),
            "ct": str(ct_path) if ct_path else None,
            "coordinate_system": "LPS",
            "confidence": dict(zip(points.names, prediction.confidence.round(3).tolist(), strict=True)),
            "flags": prediction.flags(),
            "thresholds": threshold_source(model),
            "unplaced_reason": explain_unplaced(prediction, model),
        }
        write_text_atomic(paths[".json"], json.dumps(record, indent=1) + "\n")
        print("\n".join(placement_report(path.name, prediction, model)))
    return 0


def placement_report(name: str, prediction: LandmarkPrediction, model: LandmarkModel) -> list[str]:
    """A headline, then the problem points grouped (not placed, low confidence, duplicates), one line each."""
    import numpy as np  # imported on use: this module's parsers are built for every sternum-ssm command

    names, confidence = prediction.landmarks_lps.names, prediction.confidence
    unplaced = np.flatnonzero(~prediction.placed)
    low = np.flatnonzero(prediction.placed & ~prediction.confident)
    lines = [f"{name}: {int(prediction.placed.sum())} of {len(names)} landmarks placed; {threshold_source(model)}"]
    if len(unplaced):
        lines.append(f"  not placed ({len(unplaced)}): {explain_unplaced(prediction, model)}")
        lines += [f"    {names[i]}  confidence {confidence[i]:.3f}" for i in unplaced]
    if len(low):
        lines.append(f"  low confidence ({len(low)}): placed, check their positions")
        lines += [f"    {names[i]}  confidence {confidence[i]:.3f}" for i in low]
    pairs = prediction.duplicates
    if pairs:
        lines.append(f"  duplicates ({len(pairs)}): probably one point predicted twice; move the wrong one")
        lines += [f"    {first} and {second}  {distance:.1f} mm apart" for first, second, distance in pairs]
    if len(lines) == 1:
        lines[0] += "; no flags"
    return lines


def command_learning_curve(args: argparse.Namespace) -> int:
    from .landmark_training import DEMO_TRAINING_SEEDS, HELD_OUT_SEEDS, phantom_cases, read_dataset_cases
    from .learning_curve import learning_curve_markdown, run_learning_curve
    from .scn_config import load_config

    config = load_config(args.config, args.preset)
    with_ct = config.input_channels == 2
    if args.dataset:
        pool = read_dataset_cases(args.dataset, with_ct=with_ct)
    else:
        pool = phantom_cases(DEMO_TRAINING_SEEDS[: args.phantoms])
    if args.test_dataset:
        test = read_dataset_cases(args.test_dataset, with_ct=with_ct)
    else:
        test = phantom_cases(HELD_OUT_SEEDS[: args.test_phantoms])
    results = run_learning_curve(pool, test, args.sizes, config, args.output, args.validation_count)
    print(learning_curve_markdown(results))
    return 0


def threshold_source(model: LandmarkModel) -> str:
    """Where the model's thresholds come from, in a few words."""
    config = model.config
    thresholds = f"placed above {config.placed_above:.3g}, confident above {config.confident_above:.3g}"
    if model.calibration is None:
        return f"thresholds from the model's config ({thresholds}; not calibrated after training)"
    cases = len(model.calibration.get("validation_cases", []))
    return f"thresholds calibrated on {cases} validation case(s) ({thresholds})"


def _validation_ipe(model: LandmarkModel) -> float | None:
    source = model.calibration or model.record
    value = source.get("validation_mean_ipe_mm")
    return None if value is None else float(value)


def explain_unplaced(prediction: LandmarkPrediction, model: LandmarkModel) -> str | None:
    """Why points were left unplaced, in one sentence (None when every point was placed)."""
    import numpy as np  # imported on use, as in placement_report

    unplaced = ~prediction.placed
    if not np.any(unplaced):
        return None
    threshold = model.config.placed_above
    kind = "calibrated" if model.calibration is not None else "configured"
    highest = float(np.max(prediction.confidence[unplaced]))
    if np.all(unplaced):
        ipe = _validation_ipe(model)
        trained = f" (validation mean IPE {ipe:.0f} mm)" if ipe is not None else ""
        return (
            f"No landmark placed: all {len(unplaced)} of the model's peaks (highest confidence {highest:.3f}) are "
            f"below its {kind} placement threshold {threshold:.3g}. The model may be under-trained{trained}, or "
            "the segmentation may not look like its training cases; train longer or with more cases, or place the "
            "landmarks by hand."
        )
    return (
        f"{int(np.sum(unplaced))} landmark(s) not placed: their peaks (confidence up to {highest:.3f}) are below the "
        f"model's {kind} placement threshold {threshold:.3g}; place them by hand."
    )
