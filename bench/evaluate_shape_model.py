"""The shape model's numbers on phantoms (issue 15): correspondence error against the phantom's
true corresponding points, knob recovery (held-out R²), generalisation, compactness,
specificity, and time per stage. Builds in memory from sternum-only phantoms (with the
hard-case knobs; truncated scans are skipped by name, as in a real build).

    .venv/bin/python bench/evaluate_shape_model.py [--cases 40] [--spacing 1.0] [--model-folder DIR]

``--model-folder`` also writes the model folder (report.md, renders of the modes) there.
"""

from __future__ import annotations

import argparse
import json

from SternumShapeModelLib.evaluation import evaluate
from SternumShapeModelLib.storage import write_model_folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=40)
    parser.add_argument("--spacing", type=float, default=1.0, help="isotropic voxel size of the phantoms (mm)")
    parser.add_argument("--model-folder", help="also write the model folder here (must not exist)")
    args = parser.parse_args()
    result = evaluate(args.cases, args.spacing)
    model = result.pop("model")
    print(json.dumps(result, indent=1, default=str))
    if args.model_folder:
        print(f"model folder: {write_model_folder(model, args.model_folder)}")


if __name__ == "__main__":
    main()
