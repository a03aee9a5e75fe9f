"""Command line: ``sternum-ssm <command>``. Each command is a thin wrapper over library calls.

Start-up: building the parser imports the standard library and light modules only (the parser modules
of the other packages keep to that too: Testing/test_cli_startup.py); each command imports its libraries
when it runs, so ``sternum-ssm --help`` loads none and ``export`` neither torch nor the phantom's scipy.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from .batch_command import add_batch_parsers
from .segmentation_options import add_segmentation_options

if TYPE_CHECKING:
    import numpy as np

    from .phantom import PhantomParameters


def _direction(orientation: str, seed: int) -> np.ndarray:
    import numpy as np

    from .geometry import orientation_direction, rotation_matrix

    if orientation == "oblique":
        rng = np.random.default_rng([seed, 31])
        return rotation_matrix(rng.normal(size=3), float(rng.uniform(10.0, 30.0)))
    return orientation_direction(orientation)


def _phantom_parameters(args: argparse.Namespace, seed: int) -> PhantomParameters:
    from .phantom import PhantomParameters, random_parameters, with_orientation

    plain = PhantomParameters(seed=seed)
    params = plain if args.plain else random_parameters(seed, hard_cases=not args.no_hard_cases)
    return with_orientation(params, _direction(args.orientation, seed), spacing=args.spacing)


def command_phantom(args: argparse.Namespace) -> int:
    from .case_files import case_paths, write_case
    from .phantom import generate_phantom

    output = Path(args.output)
    # formats and case ids are checked before the first phantom takes its seconds to generate
    case_paths(output, f"{args.prefix}{args.seed:03d}", args.image_format, args.label_format)
    output.mkdir(parents=True, exist_ok=True)
    for number in range(args.cases):
        seed = args.seed + number
        case_id = f"{args.prefix}{seed:03d}"
        started = time.perf_counter()
        phantom = generate_phantom(_phantom_parameters(args, seed))
        write_case(phantom, output, case_id, image_format=args.image_format, label_format=args.label_format)
        print(f"{case_id}: {phantom.image.geometry.size} voxels, {time.perf_counter() - started:.1f} s")
    print(f"Wrote {args.cases} phantom case(s) under {output}")
    return 0


def command_demo(args: argparse.Namespace) -> int:
    """Phantom -> bundled nnU-Net -> .seg.nrrd -> bundled SCN landmarks -> .mrk.json + CSV -> QA picture."""
    from SternumLandmarksLib.landmark_commands import placement_report
    from SternumLandmarksLib.landmark_prediction import LandmarkModel

    from .case_files import write_case
    from .landmark_files import write_landmarks_csv
    from .markups import write_landmarks_markups
    from .metrics import dice_per_class, landmark_error_table, landmark_errors
    from .phantom import PhantomParameters, generate_phantom
    from .predict_command import write_prediction
    from .render import render_case
    from .segment import segment_ct
    from .segmentation_inference import SegmentationModel

    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    case_id = "phantom000"
    started = time.perf_counter()
    phantom = generate_phantom(PhantomParameters(seed=0))
    print(f"Generated phantom {phantom.image.geometry.size} in {time.perf_counter() - started:.1f} s")
    if not (output / "images" / f"{case_id}.nrrd").exists():
        write_case(phantom, output, case_id)
    outcome = segment_ct(SegmentationModel(), phantom.image)
    predictions = output / "predictions"
    predictions.mkdir(exist_ok=True)
    segmentation_path, record_path = predictions / f"{case_id}.seg.nrrd", predictions / f"{case_id}.json"
    markups_path, csv_path = predictions / f"{case_id}.mrk.json", predictions / f"{case_id}.csv"
    for stale in (segmentation_path, record_path, markups_path, csv_path):
        stale.unlink(missing_ok=True)  # the demo's own output from an earlier run, never user data
    write_prediction(outcome.labels, outcome.record, segmentation_path, record_path)
    dice = dice_per_class(outcome.labels.array, phantom.labels.array)
    seconds, tiles = outcome.record["total_seconds"], outcome.record["tiles"]
    print(f"Segmented with the bundled model in {seconds:.1f} s ({tiles} tiles)")
    print("Dice against the phantom's truth: " + ", ".join(f"{name} {value:.3f}" for name, value in dice.items()))
    print("QA flags: " + ("; ".join(flag.message for flag in outcome.flags) or "none"))

    landmark_model = LandmarkModel()
    landmarks = landmark_model.predict(outcome.labels, phantom.image)
    write_landmarks_markups(landmarks.points("LPS"), markups_path)
    write_landmarks_csv(csv_path, landmarks.points("LPS"), "LPS")
    table = landmark_error_table(landmark_errors(landmarks.points("LPS"), phantom.landmarks))
    print(f"Placed {int(landmarks.placed.sum())} of {len(landmarks.placed)} landmarks in "
          f"{landmarks.record['seconds']:.1f} s; against the phantom's truth: median {table['median_mm']:.2f} mm, "
          f"mean {table['mean_mm']:.2f} mm, beyond 10 mm {table['O_10']:.1f}%")
    print("\n".join(placement_report(case_id, landmarks, landmark_model)))
    print(f"Landmarks: {markups_path} and {csv_path} (LPS)")
    picture = render_case(
        phantom.image,
        outcome.labels,
        landmarks.points("LPS"),
        output / "phantom_qa.png",
        title="Bundled demo models on a synthetic thorax: nnU-Net segments and SCN landmarks (numbered)",
        low_confidence=landmarks.placed & ~landmarks.confident,
    )
    print(f"QA picture: {picture}")
    return 0


def _pairs(items: list[str], convert_key=str) -> dict:
    """'A=B' items to a dict (for --alias Sternum_body=Sternal_body and --label-value 5=Cartilage)."""
    pairs = {}
    for item in items or []:
        key, separator, value = item.partition("=")
        if not separator or not key or not value:
            raise ValueError(f"{item!r} must have the form NAME=STANDARD_NAME.")
        pairs[convert_key(key.strip())] = value.strip()
    return pairs


def _prediction_attributes(args: argparse.Namespace) -> dict:
    """What is known of the prediction: the run record beside ``--prediction`` (``X.json`` for ``X.seg.nrrd``,
    as ``predict`` and ``batch`` write it), with ``--model-folder``, ``--preset`` and ``--predicted-at`` winning."""
    from . import export

    options = {
        export.MODEL_FOLDER: ("--model-folder", args.model_folder),
        export.PRESET: ("--preset", args.preset),
        export.PREDICTED_AT: ("--predicted-at", args.predicted_at),
    }
    given = {key: value for key, (_, value) in options.items()}
    record = export.read_prediction_record(Path(args.prediction)) if args.prediction else None
    if args.prediction and record is None:
        missing = [option for option, value in options.values() if value is None]
        if missing:
            print(
                f"sternum-ssm export: note: no run record {export.prediction_record_path(Path(args.prediction))} "
                f"beside the prediction, so the manifest will not know the prediction's model, preset and time "
                f"unless given: {', '.join(missing)}.",
                file=sys.stderr,
            )
    return {export.PREDICTION_FILE: args.prediction} | export.record_attributes(record or {}, given)


def command_export(args: argparse.Namespace) -> int:
    from . import export

    prediction = _prediction_attributes(args)
    result = export.export_from_files(
        args.image,
        args.segmentation,
        args.dataset,
        args.case_id,
        landmarks=args.landmarks,
        landmark_file_coordinate_system=args.landmarks_coordinate_system,
        prediction_attributes=prediction,
        annotator=args.annotator,
        segment_names=_pairs(args.alias),
        label_values=_pairs(args.label_value, convert_key=int),
        allow_empty_segmentation=args.allow_empty_segmentation,
        split=args.split,
        replace=args.replace,
        landmark_coordinate_system=args.csv_coordinate_system,
        file_ending=args.file_ending,
    )
    print(result.summary())
    return 0


def command_import(args: argparse.Namespace) -> int:
    from .study_import import import_study

    report = import_study(
        args.images,
        args.labels,
        args.dataset,
        landmarks=args.landmarks,
        landmark_coordinate_system=args.landmarks_coordinate_system,
        aliases=_pairs(args.alias),
        value_names=_pairs(args.label_value, convert_key=int),
        crop_margin_mm=args.crop_margin_mm,
        annotator=args.annotator,
        split=args.split,
        case_prefix=args.case_prefix,
        file_ending=args.file_ending,
    )
    print(report.text())
    if args.report:
        from .atomic import write_text_atomic

        write_text_atomic(args.report, report.text() + "\n", overwrite=True)
    return 0 if report.accepted or not report.refused else 1


def command_dataset_summary(args: argparse.Namespace) -> int:
    from .dataset import content_problems, dataset_problems, recover_dataset
    from .dataset_summary import dataset_summary, plot_summary, summary_text

    if args.recover:
        for line in recover_dataset(args.dataset):
            print(line)
    summary = dataset_summary(args.dataset)
    print(summary_text(summary))
    if args.batch:
        from .worklist import pipeline_counts, pipeline_text

        print(pipeline_text(pipeline_counts(args.batch, args.dataset)))
    if args.plot:
        print(f"Plot: {plot_summary(summary, args.plot)}")
    if not args.check:
        return 0
    problems = dataset_problems(args.dataset) + content_problems(args.dataset)
    print(
        f"Checked {summary['versions']} case version(s): every file against the manifest and its hash, numTraining "
        f"in dataset.json, and the CT and segmentation of the {summary['training_cases'] + summary['test_cases']} "
        f"current case(s): {f'{len(problems)} problem(s)' if problems else 'no problems'}."
    )
    for problem in problems:
        print(f"problem: {problem}")
    return 1 if problems else 0


def _add_dataset_commands(commands) -> None:
    export = commands.add_parser(
        "export", help="add a corrected case (CT, segmentation, landmarks) to a training dataset"
    )
    export.add_argument("--image", required=True, help="CT file (NRRD, NIfTI, ...)")
    export.add_argument(
        "--segmentation",
        required=True,
        help="corrected segmentation: .seg.nrrd (segments matched by name) or a label map with the standard values "
        "1-4 (Manubrium, Sternal_body, Xiphoid, Cartilage) or values given by --label-value",
    )
    export.add_argument("--landmarks", help="landmarks (.mrk.json, or .csv)")
    export.add_argument(
        "--landmarks-coordinate-system", choices=("LPS", "RAS"), help="of a CSV that does not declare it"
    )
    export.add_argument(
        "--dataset", required=True, help="dataset folder (created, with missing parent folders, when missing or empty)"
    )
    export.add_argument("--case-id", required=True, help="letters, digits, '-' and '_'; never a patient identifier")
    export.add_argument("--annotator", default="")
    export.add_argument("--split", choices=("train", "test"), default="train")
    export.add_argument("--replace", action="store_true", help="a different CT under an existing id: archive the old")
    export.add_argument("--alias", action="append", metavar="NAME=STANDARD", help="segment name map, repeatable")
    export.add_argument("--label-value", action="append", metavar="VALUE=STANDARD", help="plain label maps, repeatable")
    export.add_argument(
        "--allow-empty-segmentation",
        action="store_true",
        help="export a segmentation that is all background (a CT without sternum, on purpose)",
    )
    export.add_argument("--csv-coordinate-system", choices=("LPS", "RAS"), default="LPS")
    export.add_argument("--file-ending", choices=(".nrrd", ".nii.gz"), help="for a new dataset (default .nrrd)")
    export.add_argument(
        "--prediction",
        help="the model's unedited segmentation, for correction effort; its run record X.json beside X.seg.nrrd "
        "(written by predict and batch) gives the model, preset and time of the prediction",
    )
    export.add_argument("--model-folder", help="model that made the prediction (recorded by hash); overrides X.json")
    export.add_argument("--preset", help="inference preset of the prediction; overrides X.json")
    export.add_argument("--predicted-at", help="ISO time of the prediction; overrides X.json")
    export.set_defaults(run=command_export)

    study = commands.add_parser(
        "import", help="turn study-style folders (CT, label maps, landmark CSVs) into a dataset"
    )
    study.add_argument("--images", required=True, help="folder of CTs: DICOM series folders, NRRD or NIfTI files")
    study.add_argument("--labels", required=True, help="folder of .seg.nrrd or label maps named like the CTs")
    study.add_argument("--landmarks", help="folder of landmark CSVs named like the CTs")
    study.add_argument("--landmarks-coordinate-system", choices=("LPS", "RAS"), help="required with --landmarks")
    study.add_argument("--dataset", required=True)
    study.add_argument("--alias", action="append", metavar="NAME=STANDARD", help="segment name map, repeatable")
    study.add_argument("--label-value", action="append", metavar="VALUE=STANDARD", help="plain label maps, repeatable")
    study.add_argument("--crop-margin-mm", type=float, help="crop every case to the union of label extents + margin")
    study.add_argument("--case-prefix", help="number cases <prefix>_0001... instead of using the source names")
    study.add_argument("--annotator", default="")
    study.add_argument("--split", choices=("train", "test"), default="train")
    study.add_argument("--file-ending", choices=(".nrrd", ".nii.gz"))
    study.add_argument("--report", help="also write the accept/refuse report to this file")
    study.set_defaults(run=command_import)

    summary = commands.add_parser("dataset-summary", help="cases, rounds and correction effort of a dataset")
    summary.add_argument("--dataset", required=True)
    summary.add_argument("--batch", help="batch output folder: also count its cases predicted, claimed, exported")
    summary.add_argument("--plot", help="write a PNG of correction effort per round")
    summary.add_argument("--check", action="store_true", help="also check files, dataset.json and manifest agree")
    summary.add_argument("--recover", action="store_true", help="first finish or discard interrupted exports")
    summary.set_defaults(run=command_dataset_summary)


def command_evaluate(args: argparse.Namespace) -> int:
    from .evaluation import evaluate_folders, markdown_tables, write_evaluation

    evaluation = evaluate_folders(
        args.predictions,
        args.reference,
        coordinate_system=args.coordinate_system,
        progress=lambda line: print(line, file=sys.stderr),
    )
    paths = write_evaluation(evaluation, args.output, overwrite=args.overwrite)
    print(markdown_tables(evaluation), end="")
    print("Wrote " + ", ".join(str(path) for path in paths), file=sys.stderr)
    return 0


def _add_evaluate_command(commands) -> None:
    evaluate = commands.add_parser(
        "evaluate", help="compare predicted segmentations and landmarks with the reference (the study's tables)"
    )
    evaluate.add_argument("--predictions", required=True, help="<case>.seg.nrrd / .nrrd / .nii.gz and <case>.csv")
    evaluate.add_argument(
        "--reference", required=True, help="dataset or folder: labelsTr/ (or labels/, or itself), landmarks/"
    )
    evaluate.add_argument("--output", required=True, help="folder for evaluation.md, segmentation.csv, landmarks.csv")
    evaluate.add_argument(
        "--coordinate-system", choices=("LPS", "RAS"), help="of landmark CSVs that do not declare one"
    )
    evaluate.add_argument("--overwrite", action="store_true", help="replace earlier outputs in --output")
    evaluate.set_defaults(run=command_evaluate)


def command_predict(args: argparse.Namespace) -> int:
    from . import predict_command

    return predict_command.command_predict(args)


def _add_predict_command(commands) -> None:
    predict = commands.add_parser("predict", help="segment CT files with an nnU-Net v2 model")
    predict.add_argument("inputs", nargs="+", help="CT files, folders of CT files and/or DICOM series folders")
    predict.add_argument("--output", required=True, help="folder for <case>.seg.nrrd and <case>.json")
    add_segmentation_options(predict)
    predict.set_defaults(run=command_predict)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sternum-ssm", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    phantom = commands.add_parser("phantom", help="write synthetic thorax CT cases with labels and landmarks")
    phantom.add_argument("--output", required=True, help="folder to write images/, labels/, landmarks/ into")
    phantom.add_argument("--cases", type=int, default=1)
    phantom.add_argument("--seed", type=int, default=0, help="seed of the first case; case n uses seed + n")
    phantom.add_argument("--prefix", default="phantom", help="case id prefix")
    phantom.add_argument("--spacing", type=float, nargs=3, default=(1.5, 1.5, 1.5), metavar=("I", "J", "K"))
    phantom.add_argument(
        "--orientation", default="LPS", help="3-letter axis code (LPS, RAS, PIR, ...) or 'oblique' (random per seed)"
    )
    # no argparse choices: the formats are case_files' (checked when the command starts), and importing
    # it here would load SimpleITK and numpy for every command
    phantom.add_argument("--image-format", default="nrrd", help="nrrd (default) or nii.gz")
    phantom.add_argument("--label-format", default="seg.nrrd", help="seg.nrrd (default), nrrd or nii.gz")
    phantom.add_argument("--no-hard-cases", action="store_true", help="natural variation only")
    phantom.add_argument("--plain", action="store_true", help="default anatomy, no variation knobs")
    phantom.set_defaults(run=command_phantom)

    demo = commands.add_parser("demo", help="generate a phantom case and render its QA picture")
    demo.add_argument("--output", default="demo-output")
    demo.set_defaults(run=command_demo)

    _add_dataset_commands(commands)
    _add_predict_command(commands)
    _add_evaluate_command(commands)
    from SternumLandmarksLib.landmark_commands import add_landmark_parsers

    add_landmark_parsers(commands)
    from SternumShapeModelLib.commands import add_shape_model_parser

    add_shape_model_parser(commands)
    add_batch_parsers(commands, landmark_step=_scn_landmark_step)
    return parser


def _scn_landmark_step(model_folder: str | None, device: str):
    """The landmark package's batch step; imported on use, so other commands do not load torch."""
    from SternumLandmarksLib.batch_landmarks import scn_landmark_step

    return scn_landmark_step(model_folder, device)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, FileExistsError, FileNotFoundError, PermissionError, TimeoutError) as error:
        print(f"sternum-ssm {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
