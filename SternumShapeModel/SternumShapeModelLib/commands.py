"""``sternum-ssm shape-model build | fit | sample | export``: thin wrappers over the library, with progress bars."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_shape_model_parser(commands) -> None:
    parser = commands.add_parser("shape-model", help="statistical shape model: build, fit, sample, export")
    actions = parser.add_subparsers(dest="action", required=True)

    build = actions.add_parser("build", help="build a model folder from a dataset's corrected cases")
    build.add_argument("dataset", help="dataset folder (nnU-Net raw layout with manifest)")
    build.add_argument("output", help="new model folder (never overwritten)")
    build.add_argument("--split", default="train", choices=("train", "test"))
    build.add_argument("--template", help="template mesh (.k/.key LS-DYNA, .vtk, .stl, ...); its topology is kept")
    build.add_argument("--template-landmarks", help="CSV of the template's 34 landmarks (declares LPS or RAS)")
    build.add_argument("--points", type=int, default=3000, help="template points when the template is a case")
    build.add_argument("--scaling", action="store_true", help="remove size (shape only); default keeps size")
    build.add_argument("--variance", type=float, default=0.95, help="fraction of variance the modes explain")
    build.add_argument("--xiphoid", action="store_true", help="include the xiphoid in the surface")
    build.add_argument("--pseudo", type=int, default=2, help="rim pseudo-landmarks per landmark segment")
    build.add_argument("--nricp", action="store_true", help="refine each warp with non-rigid ICP (slower)")
    build.add_argument("--strict", action="store_true", help="refuse cases without landmarks instead of skipping")
    build.add_argument("--covariates", help="CSV: case_id, age, sex, height, weight/bmi ... (never stored)")
    build.add_argument("--no-report", action="store_true", help="skip report.md and its pictures")
    build.set_defaults(run=command_build)

    fit = actions.add_parser("fit", help="closest model shape to a new segmentation and/or its 34 landmarks")
    fit.add_argument("model", help="model folder")
    fit.add_argument("--labels", help="label map (.nrrd, .seg.nrrd, .nii.gz); needs --landmarks too")
    fit.add_argument("--landmarks", required=True, help="landmark CSV (34 protocol landmarks)")
    fit.add_argument("--coordinate-system", choices=("LPS", "RAS"), help="of a landmark CSV that declares none")
    fit.add_argument("--output", help="write the closest shape here (.vtk, .stl, .k, ...)")
    fit.set_defaults(run=command_fit)

    sample = actions.add_parser("sample", help="write random shapes drawn from the model")
    sample.add_argument("model", help="model folder")
    sample.add_argument("output", help="new folder for the shapes")
    sample.add_argument("--count", type=int, default=10)
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--format", default="vtk", help="file extension: vtk, stl, k, inp, ...")
    sample.set_defaults(run=command_sample)

    export = actions.add_parser("export", help="write one model shape: mean, modes at k SD, or covariate prediction")
    export.add_argument("model", help="model folder")
    export.add_argument("output", help="mesh file (.k/.key for LS-DYNA with template ids, or any meshio format)")
    export.add_argument("--mode", action="append", default=[], metavar="K=SD", help="mode K at SD deviations")
    export.add_argument("--covariates", metavar="NAME=VALUE,...", help="e.g. age=45,sex=M,height=175,bmi=25")
    export.add_argument("--overwrite", action="store_true")
    export.set_defaults(run=command_export)


class _Bars:
    """One tqdm bar per stage of a build."""

    def __init__(self) -> None:
        self.bars: dict = {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        from tqdm import tqdm

        if stage not in self.bars:
            for bar in self.bars.values():
                bar.close()
            self.bars[stage] = tqdm(total=total or None, desc=stage, unit="case" if stage != "statistics" else "step")
        bar = self.bars[stage]
        bar.update(done - bar.n)

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()


def command_build(args: argparse.Namespace) -> int:
    from .correspondence import SurfaceSettings
    from .model import BuildSettings
    from .pipeline import build_from_dataset

    settings = BuildSettings(
        surface=SurfaceSettings(include_xiphoid=args.xiphoid, pseudo_per_segment=args.pseudo),
        template_points=args.points,
        scaling=args.scaling,
        variance=args.variance,
        nricp=args.nricp,
        strict=args.strict,
    )
    if args.template and not args.template_landmarks:
        raise SystemExit("--template needs --template-landmarks: the template's own 34 landmarks.")
    bars = _Bars()
    try:
        model, output = build_from_dataset(
            args.dataset,
            args.output,
            settings,
            split=args.split,
            template=args.template,
            template_landmarks=args.template_landmarks,
            covariates=args.covariates,
            progress=bars,
            with_report=not args.no_report,
        )
    finally:
        bars.close()
    k = model.mode_count
    print(
        f"Model with {len(model.cases)} cases, {k} modes ({100 * model.compactness[k - 1]:.1f} % variance), "
        f"generalisation {model.generalisation_mm[min(k, len(model.generalisation_mm)) - 1]:.2f} mm -> {output}"
    )
    for case_id, reason in model.skipped.items():
        print(f"skipped {case_id}: {reason}")
    for case_id, flag in model.flagged:
        print(f"flagged {case_id}: {flag}")
    return 0


def command_fit(args: argparse.Namespace) -> int:
    from SternumSSMLib.landmark_files import read_landmarks_csv

    from .correspondence import ShapeCase, protocol_landmarks
    from .mesh_io import write_mesh
    from .model import fit_case, fit_landmarks
    from .storage import load_model

    model = load_model(args.model)
    landmarks = read_landmarks_csv(args.landmarks, args.coordinate_system)
    if args.labels:
        from SternumSSMLib.image_files import read_labels

        labels = read_labels(Path(args.labels))  # a .seg.nrrd is matched by segment name, not by its values
        result = fit_case(model, ShapeCase(Path(args.labels).name, labels, landmarks))
        kind = "segmentation"
    else:
        result = fit_landmarks(model, protocol_landmarks(landmarks, Path(args.landmarks).name))
        kind = "34 landmarks"
    summary = {
        "fitted_to": kind,
        "scores": [round(float(s), 4) for s in result.scores],
        "residual_mm": round(result.residual_mm, 3),
        "mahalanobis": round(result.mahalanobis, 3),
    }
    print(json.dumps(summary))
    if args.output:
        write_mesh(result.shape, args.output)
        print(f"Closest shape (LPS, the input's frame) -> {args.output}")
    return 0


def command_sample(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .mesh_io import write_mesh
    from .storage import load_model

    model = load_model(args.model)
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=False)
    for number, scores in enumerate(tqdm(model.sample_scores(args.count, args.seed), desc="samples"), start=1):
        write_mesh(model.shape(scores), output / f"sample_{number:03d}.{args.format.lstrip('.')}")
    print(f"{args.count} shapes (seed {args.seed}, model frame LPS) -> {output}")
    return 0


def parse_pairs(text: str) -> dict[str, str]:
    pairs = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, separator, value = item.partition("=")
        if not separator:
            raise SystemExit(f"{item!r} is not NAME=VALUE.")
        pairs[name.strip()] = value.strip()
    return pairs


def command_export(args: argparse.Namespace) -> int:
    import numpy as np

    from .dataset_cases import covariate_value
    from .mesh_io import write_mesh
    from .storage import load_model

    model = load_model(args.model)
    scores = np.zeros(model.mode_count)
    if args.covariates:
        values = {name: covariate_value(name, value) for name, value in parse_pairs(args.covariates).items()}
        scores = model.covariate_scores(values)
    for item in args.mode:
        mode, _, sd = item.partition("=")
        scores = scores + model.mode_scores(int(mode), float(sd or 0))
    write_mesh(model.shape(scores), args.output, overwrite=args.overwrite)
    print(f"Shape (model frame, LPS mm; node and element ids of the template) -> {args.output}")
    return 0
