"""``sternum-ssm train-landmarks`` and ``sternum-ssm place-landmarks``: thin wrappers over the library."""

from __future__ import annotations

import argparse
import json


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


def command_learning_curve(args: argparse.Namespace) -> int:
    from .landmark_training import DEMO_TRAINING_SEEDS, HELD_OUT_SEEDS, phantom_cases, read_dataset_cases
    from .learning_curve import learning_curve_markdown, run_learning_curve
    from .scn_config import load_config

    pool = read_dataset_cases(args.dataset) if args.dataset else phantom_cases(DEMO_TRAINING_SEEDS[: args.phantoms])
    if args.test_dataset:
        test = read_dataset_cases(args.test_dataset)
    else:
        test = phantom_cases(HELD_OUT_SEEDS[: args.test_phantoms])
    results = run_learning_curve(pool, test, args.sizes, load_config(args.config), args.output, args.validation_count)
    print(learning_curve_markdown(results))
    return 0
