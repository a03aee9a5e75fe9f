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
    train.set_defaults(run=command_train_landmarks)


def command_train_landmarks(args: argparse.Namespace) -> int:
    from .landmark_training import train_from_command_line

    print(json.dumps(train_from_command_line(args), indent=1))
    return 0
