"""The segmentation options that ``predict`` and ``batch`` share: their arguments and what they become.

Building a parser must stay light (every ``sternum-ssm`` command builds all of them, see cli.py), so
the converters import the libraries they need when they run.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from .devices import DEVICES

if TYPE_CHECKING:
    from .roi import Box
    from .segmentation_inference import PredictionSettings


def add_segmentation_options(parser: argparse.ArgumentParser) -> None:
    """Model, preset, device, folds, ROI (given or automatic), DICOM series and checkpoint trust."""
    parser.add_argument("--model", help="nnU-Net v2 model folder (default: the bundled demo model)")
    parser.add_argument("--preset", choices=("fast", "accurate"), default="fast")
    parser.add_argument("--device", choices=DEVICES, default="auto")
    parser.add_argument("--folds", nargs="+", help="override the preset's folds, e.g. 0 1 or all")
    parser.add_argument(
        "--roi", type=float, nargs=6, metavar=("L0", "P0", "S0", "L1", "P1", "S1"), help="LPS box (mm) to segment"
    )
    parser.add_argument(
        "--no-auto-roi",
        dest="auto_roi",
        action="store_false",
        help="without --roi, segment the whole volume instead of finding the sternum first with the model's "
        "localiser (when its folder has one)",
    )
    parser.add_argument(
        "--series-uid", metavar="UID", help="Series Instance UID to read from a DICOM folder that holds several series"
    )
    parser.add_argument(
        "--trust-model",
        action="store_true",
        help="allow checkpoints that need full unpickling (runs code from the file)",
    )


def prediction_settings(args: argparse.Namespace) -> PredictionSettings:
    from .segmentation_inference import PredictionSettings

    return PredictionSettings(
        preset=args.preset,
        device=args.device,
        trust_pickled_checkpoint=args.trust_model,
        folds=tuple(args.folds) if args.folds else None,
        auto_roi=args.auto_roi,
    )


def roi_box(args: argparse.Namespace) -> Box | None:
    """The ``--roi`` box (LPS, mm), or None for the whole volume."""
    import numpy as np

    from .roi import Box

    return Box(np.array(args.roi[:3]), np.array(args.roi[3:])) if args.roi else None
