"""``sternum-ssm batch`` and ``sternum-ssm worklist``: thin wrappers over :mod:`batch` and :mod:`worklist`.

The landmark step is handed in by ``cli.py`` (a factory ``(model_folder, device) -> LandmarkStep``),
so this core module never imports the landmark package.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING

from .segmentation_options import add_segmentation_options, prediction_settings, roi_box

if TYPE_CHECKING:  # the parsers here are built for every command: they import nothing heavy (see cli.py)
    from .batch_case import LandmarkStep

LandmarkStepFactory = Callable[[str | None, str], "LandmarkStep"]


def command_batch(args: argparse.Namespace, landmark_step: LandmarkStepFactory) -> int:
    from .batch import available_cores, plan_jobs, run_batch
    from .batch_case import CaseSteps, SegmentationStep
    from .segmentation_inference import BUNDLED_MODEL

    jobs = plan_jobs(args.inputs, args.output, args.list, args.case_prefix, args.series_uid)
    settings = prediction_settings(args)
    workers = None if args.address else args.workers or available_cores()
    threads = args.torch_threads or (None if args.address else max(1, available_cores() // workers))
    steps = CaseSteps(
        segmentation=SegmentationStep.create(args.model or BUNDLED_MODEL, settings),
        landmarks=landmark_step(args.landmark_model, args.device),
        roi=roi_box(args),
        torch_threads=threads,
    )
    where = f"the cluster at {args.address}" if args.address else f"a local cluster of {workers} worker(s)"
    print(f"{len(jobs)} case(s) into {args.output} on {where}")
    report = run_batch(jobs, steps, args.output, args.address, workers, args.retry_failed, not args.quiet)
    print(report.table())
    return 1 if report.count("failed") else 0


def command_worklist(args: argparse.Namespace) -> int:
    from .worklist import case_files, claim_case, claim_next, live_claims, release, worklist_text, write_worklist

    if args.claim or args.next:
        claim = claim_case(args.batch, args.claim, args.annotator) if args.claim else None
        claim = claim or claim_next(args.batch, args.dataset, args.annotator)
        if claim is None:
            print("No case left.")
            return 0
        files = case_files(args.batch, claim.case_id)
        print(
            f"{claim.case_id} claimed by {claim.annotator} at {claim.claimed_at}; open the CT {files['ct']} with "
            f"{files['segmentation']} and {files['markups']}"
        )
        return 0
    if args.release:
        held = live_claims(args.batch).get(args.release)
        if held is None or held.annotator != args.annotator:
            raise ValueError(f"{args.annotator or 'Nobody'} holds no live claim on {args.release}.")
        release(args.batch, held)
        print(f"{args.release} released.")
        return 0
    path, entries = write_worklist(args.batch, args.dataset)
    print(worklist_text(entries))
    print(f"Wrote {path}")
    return 0


def add_batch_parsers(commands, landmark_step: LandmarkStepFactory) -> None:
    batch = commands.add_parser(
        "batch", help="predict segmentation, QA, landmarks and uncertainty for many CTs on a Dask cluster"
    )
    batch.add_argument("inputs", nargs="*", help="CT files, folders of CT files and/or DICOM series folders")
    batch.add_argument("--list", action="append", metavar="FILE", help="text file with one CT path per line")
    batch.add_argument("--output", required=True, help="folder for the per-case files and manifest.jsonl")
    batch.add_argument("--address", help="join this Dask scheduler (tcp://host:8786) instead of a local cluster")
    batch.add_argument("--workers", type=int, help="local cluster size (default: one per core)")
    batch.add_argument("--torch-threads", type=int, help="torch threads per worker (default: cores / workers)")
    batch.add_argument("--retry-failed", action="store_true", help="run cases that failed in earlier runs again")
    batch.add_argument("--case-prefix", help="number the cases <prefix>_0001... instead of using the input names")
    add_segmentation_options(batch)
    batch.add_argument("--landmark-model", help="landmark model folder (default: the bundled demo model)")
    batch.add_argument("--quiet", action="store_true", help="no progress bar")
    batch.set_defaults(run=lambda args: command_batch(args, landmark_step))

    worklist = commands.add_parser(
        "worklist", help="rank a batch's predicted cases for annotators; claim or release a case"
    )
    worklist.add_argument("--batch", required=True, help="output folder of sternum-ssm batch")
    worklist.add_argument("--dataset", help="dataset folder: cases already in it leave the worklist")
    worklist.add_argument("--annotator", default="", help="your name, for --next, --claim and --release")
    action = worklist.add_mutually_exclusive_group()
    action.add_argument("--next", action="store_true", help="claim the highest-ranked unclaimed case")
    action.add_argument("--claim", metavar="CASE", help="claim this case")
    action.add_argument("--release", metavar="CASE", help="give back your claim on this case")
    worklist.set_defaults(run=command_worklist)
