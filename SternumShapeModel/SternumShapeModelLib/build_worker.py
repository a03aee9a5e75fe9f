"""Background worker that builds a model folder (``python -m SternumShapeModelLib.build_worker``).

Speaks SternumSSMLib.background_run's protocol: one request per build, with the fields
``dataset``, ``output`` and optionally ``split``, ``template``, ``template_landmarks``,
``covariates`` and ``settings`` (BuildSettings as a dict); ``done`` carries ``model_folder``.
Cancel kills the process; the model folder is renamed into place only at the very end, so a
cancelled build leaves no model folder (at most a hidden ``.<name>.*.partial`` staging folder).
"""

from __future__ import annotations

import sys

from SternumSSMLib.background_run import serve

from .model import BuildSettings
from .pipeline import build_from_dataset, overall_fraction


def handle(request: dict, progress) -> dict:
    settings = BuildSettings.from_dict(request["settings"]) if "settings" in request else BuildSettings()
    model, folder = build_from_dataset(
        request["dataset"],
        request["output"],
        settings,
        split=request.get("split", "train"),
        template=request.get("template"),
        template_landmarks=request.get("template_landmarks"),
        covariates=request.get("covariates"),
        progress=lambda stage, done, total: progress(overall_fraction(stage, done, total), f"{stage} {done}/{total}"),
    )
    return {
        "model_folder": str(folder),
        "cases": len(model.cases),
        "modes": model.mode_count,
        "skipped": model.skipped,
        "flagged": [f"{case_id}: {flag}" for case_id, flag in model.flagged],
    }


def main() -> int:
    return serve(lambda: (handle, {}))


if __name__ == "__main__":
    sys.exit(main())
