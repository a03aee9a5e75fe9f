"""Command line: ``sternum-ssm <command>``. Each command is a thin wrapper over library calls."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from .case_files import IMAGE_FORMATS, LABEL_FORMATS, write_case
from .geometry import orientation_direction, rotation_matrix
from .phantom import PhantomParameters, generate_phantom, random_parameters, with_orientation
from .predict_command import add_predict_parser


def _direction(orientation: str, seed: int) -> np.ndarray:
    if orientation == "oblique":
        rng = np.random.default_rng([seed, 31])
        return rotation_matrix(rng.normal(size=3), float(rng.uniform(10.0, 30.0)))
    return orientation_direction(orientation)


def _phantom_parameters(args: argparse.Namespace, seed: int) -> PhantomParameters:
    plain = PhantomParameters(seed=seed)
    params = plain if args.plain else random_parameters(seed, hard_cases=not args.no_hard_cases)
    return with_orientation(params, _direction(args.orientation, seed), spacing=args.spacing)


def command_phantom(args: argparse.Namespace) -> int:
    output = Path(args.output)
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
    from SternumLandmarksLib.landmark_prediction import LandmarkModel
    from SternumLandmarksLib.markups import write_landmarks_markups

    from .landmark_files import write_landmarks_csv
    from .metrics import dice_per_class, landmark_error_table, landmark_errors
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

    landmarks = LandmarkModel().predict(outcome.labels, phantom.image)
    write_landmarks_markups(landmarks.points("LPS"), markups_path)
    write_landmarks_csv(csv_path, landmarks.points("LPS"), "LPS")
    table = landmark_error_table(landmark_errors(landmarks.points("LPS"), phantom.landmarks))
    print(f"Placed {int(landmarks.placed.sum())} of {len(landmarks.placed)} landmarks in "
          f"{landmarks.record['seconds']:.1f} s; against the phantom's truth: median {table['median_mm']:.2f} mm, "
          f"mean {table['mean_mm']:.2f} mm, beyond 10 mm {table['O_10']:.1f}%")
    print("Landmark flags: " + ("; ".join(landmarks.flags()) or "none"))
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


def command_export(args: argparse.Namespace) -> int:
    from . import export

    prediction = {
        export.PREDICTION_FILE: args.prediction,
        export.MODEL_FOLDER: args.model_folder,
        export.PRESET: args.preset,
        export.PREDICTED_AT: args.predicted_at,
    }
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
    from .dataset import dataset_problems, recover_dataset
    from .dataset_summary import dataset_summary, plot_summary, summary_text

    if args.recover:
        for line in recover_dataset(args.dataset):
            print(line)
    summary = dataset_summary(args.dataset)
    print(summary_text(summary))
    if args.plot:
        print(f"Plot: {plot_summary(summary, args.plot)}")
    problems = dataset_problems(args.dataset) if args.check else []
    for problem in problems:
        print(f"problem: {problem}")
    return 1 if problems else 0


def _add_dataset_commands(commands) -> None:
    export = commands.add_parser(
        "export", help="add a corrected case (CT, segmentation, landmarks) to a training dataset"
    )
    export.add_argument("--image", required=True, help="CT file (NRRD, NIfTI, ...)")
    export.add_argument("--segmentation", required=True, help="corrected segmentation (.seg.nrrd or label map)")
    export.add_argument("--landmarks", help="landmarks (.mrk.json, or .csv)")
    export.add_argument(
        "--landmarks-coordinate-system", choices=("LPS", "RAS"), help="of a CSV that does not declare it"
    )
    export.add_argument("--dataset", required=True, help="dataset folder (created when missing or empty)")
    export.add_argument("--case-id", required=True, help="letters, digits, '-' and '_'; never a patient identifier")
    export.add_argument("--annotator", default="")
    export.add_argument("--split", choices=("train", "test"), default="train")
    export.add_argument("--replace", action="store_true", help="a different CT under an existing id: archive the old")
    export.add_argument("--alias", action="append", metavar="NAME=STANDARD", help="segment name map, repeatable")
    export.add_argument("--csv-coordinate-system", choices=("LPS", "RAS"), default="LPS")
    export.add_argument("--file-ending", choices=(".nrrd", ".nii.gz"), help="for a new dataset (default .nrrd)")
    export.add_argument("--prediction", help="the model's unedited segmentation, for correction effort")
    export.add_argument("--model-folder", help="model that made the prediction (recorded by hash)")
    export.add_argument("--preset", help="inference preset of the prediction")
    export.add_argument("--predicted-at", help="ISO time of the prediction")
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
    phantom.add_argument("--image-format", choices=IMAGE_FORMATS, default="nrrd")
    phantom.add_argument("--label-format", choices=LABEL_FORMATS, default="seg.nrrd")
    phantom.add_argument("--no-hard-cases", action="store_true", help="natural variation only")
    phantom.add_argument("--plain", action="store_true", help="default anatomy, no variation knobs")
    phantom.set_defaults(run=command_phantom)

    demo = commands.add_parser("demo", help="generate a phantom case and render its QA picture")
    demo.add_argument("--output", default="demo-output")
    demo.set_defaults(run=command_demo)

    _add_dataset_commands(commands)
    add_predict_parser(commands)
    _add_evaluate_command(commands)
    from SternumLandmarksLib.landmark_commands import add_landmark_parsers

    add_landmark_parsers(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, FileExistsError, FileNotFoundError, PermissionError, TimeoutError) as error:
        print(f"sternum-ssm {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
