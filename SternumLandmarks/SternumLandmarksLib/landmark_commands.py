"""``sternum-ssm train-landmarks`` and ``sternum-ssm place-landmarks``: thin wrappers over the library."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_landmark_parsers(commands) -> None:
    train = commands.add_parser("train-landmarks", help="train the landmark SpatialConfiguration-Net")
    source = train.add_mutually_exclusive_group(required=True)
    source.add_argument("--dataset", help="dataset folder with labelsTr/ and landmarks/ (written by export)")
    source.add_argument("--phantoms", type=int, help="train on this many generated phantoms instead")
    train.add_argument("--validation-phantoms", type=int, default=8, help="with --phantoms")
    train.add_argument("--validation-fraction", type=float, default=0.2, help="with --dataset")
    train.add_argument("--output", required=True, help="model folder; an interrupted run resumes from it")
    train.add_argument("--config", help="JSON config (only the changed keys); default: the study's values")
    train.add_argument("--threads", type=int, help="CPU threads for torch")
    train.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), default="auto")
    train.set_defaults(run=command_train_landmarks)

    place = commands.add_parser(
        "place-landmarks", help="place the landmarks on segmentations (.seg.nrrd or label maps): .mrk.json + CSV"
    )
    place.add_argument("segmentations", nargs="+", help="segmentation files (.seg.nrrd by segment name or label maps)")
    place.add_argument("--ct", nargs="+", help="the CT of each segmentation, same order (for models that read the CT)")
    place.add_argument("--model", help="landmark model folder (default: the bundled demo model)")
    place.add_argument("--output", required=True, help="folder for <case>.mrk.json, <case>.csv (LPS), <case>.json")
    place.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), default="auto")
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
    curve.add_argument("--config", help="JSON config (only the changed keys); default: the study's values")
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
    from SternumSSMLib.evaluation import read_labels
    from SternumSSMLib.landmark_files import write_landmarks_csv
    from SternumSSMLib.predict_command import case_id_of, read_ct

    from .landmark_prediction import BUNDLED_LANDMARK_MODEL, LandmarkModel
    from .markups import write_landmarks_markups

    segmentations = [Path(name) for name in args.segmentations]
    cts = [Path(name) for name in args.ct] if args.ct else [None] * len(segmentations)
    if len(cts) != len(segmentations):
        raise ValueError(f"{len(segmentations)} segmentations but {len(cts)} CTs; give one --ct per segmentation.")
    missing = [str(path) for path in [*segmentations, *cts] if path is not None and not path.exists()]
    if missing:
        raise FileNotFoundError(f"Input files not found: {', '.join(missing)}.")
    output = Path(args.output)
    targets = {path: landmark_output_paths(output, case_id_of(path).removesuffix(".seg")) for path in segmentations}
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
        }
        write_text_atomic(paths[".json"], json.dumps(record, indent=1) + "\n")
        placed = int(prediction.placed.sum())
        print(f"{path.name}: {placed}/{len(points.names)} landmarks placed; "
              f"{'; '.join(prediction.flags()) or 'no flags'}")
    return 0


def command_learning_curve(args: argparse.Namespace) -> int:
    from .landmark_training import DEMO_TRAINING_SEEDS, HELD_OUT_SEEDS, phantom_cases, read_dataset_cases
    from .learning_curve import learning_curve_markdown, run_learning_curve
    from .scn_config import load_config

    config = load_config(args.config)
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
