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
    from .render import render_case

    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    case_id = "phantom000"
    started = time.perf_counter()
    phantom = generate_phantom(PhantomParameters(seed=0))
    generated = time.perf_counter() - started
    if not (output / "images" / f"{case_id}.nrrd").exists():
        write_case(phantom, output, case_id)
    picture = render_case(
        phantom.image,
        phantom.labels,
        phantom.landmarks,
        output / "phantom_qa.png",
        title="SternumSSM synthetic thorax phantom: segments and the 34 sternum landmarks",
    )
    print(f"Generated phantom {phantom.image.geometry.size} in {generated:.1f} s; case files in {output}")
    print(f"QA picture: {picture}")
    return 0


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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, FileExistsError, FileNotFoundError, PermissionError) as error:
        print(f"sternum-ssm {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
