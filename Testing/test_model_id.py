"""One model, one id: the SternumSSM module and ``sternum-ssm export`` record the same model id for a
model, so ``dataset_summary`` counts one model as one round."""

from __future__ import annotations

import shutil

import pytest
from SternumSSMLib.case_files import write_case
from SternumSSMLib.cli import main
from SternumSSMLib.dataset import read_manifest
from SternumSSMLib.export_nodes import export_from_scene
from SternumSSMLib.phantom import PhantomParameters, generate_phantom
from SternumSSMLib.prediction_nodes import show_prediction
from SternumSSMLib.provenance import model_id
from SternumSSMLib.segmentation_inference import BUNDLED_MODEL, PredictionSettings, SegmentationModel
from SternumSSMLib.volume_nodes import volume_node_from_volume


@pytest.fixture(scope="module")
def phantom():
    return generate_phantom(PhantomParameters(spacing=(3.0, 3.0, 3.0)))


def id_in_run_record(monkeypatch, settings: PredictionSettings) -> str:
    """The ``model_sha256`` a segmentation run writes into its record (the module, ``predict`` and the batch)."""
    monkeypatch.setattr(SegmentationModel, "_load", lambda self: None)  # the id is taken before the weights load
    return SegmentationModel(BUNDLED_MODEL, settings).model_hash


def test_the_module_and_the_export_command_record_one_id_for_the_bundled_model(
    mrml_scene, phantom, monkeypatch, tmp_path
):
    run_id = id_in_run_record(monkeypatch, PredictionSettings(preset="fast"))
    assert run_id == id_in_run_record(monkeypatch, PredictionSettings(preset="accurate"))

    # The module: the run record on the predicted segmentation, read back by the export from the scene.
    ct = volume_node_from_volume(mrml_scene, phantom.image, "CT")
    record = {"model_folder": str(BUNDLED_MODEL), "model_sha256": run_id, "preset": "fast"}
    segmentation = show_prediction(mrml_scene, phantom.labels, ct, record=record)
    from_scene = export_from_scene(ct, segmentation, tmp_path / "scene", "case_0001").record["prediction"]

    # The command line: files on disk and the model folder named by path.
    write_case(phantom, tmp_path / "cases", "phantom000")
    arguments = [
        "export",
        "--image", str(tmp_path / "cases/images/phantom000.nrrd"),
        "--segmentation", str(tmp_path / "cases/labels/phantom000.seg.nrrd"),
        "--dataset", str(tmp_path / "files"),
        "--case-id", "case_0001",
        "--model-folder", str(BUNDLED_MODEL),
        "--preset", "fast",
    ]  # fmt: skip
    assert main(arguments) == 0
    from_files = read_manifest(tmp_path / "files")[-1]["prediction"]

    assert from_scene["model_sha256"] == from_files["model_sha256"] == run_id == model_id(BUNDLED_MODEL)


def test_the_id_follows_the_weights_and_plans_not_the_notes_beside_them(tmp_path):
    model = shutil.copytree(BUNDLED_MODEL, tmp_path / "model")
    original = model_id(model)
    (model / "README.md").write_text("retold\n")
    (model / "fold_all" / "validation").mkdir()
    (model / "fold_all" / "validation" / "summary.json").write_text("{}")
    assert model_id(model) == original
    (model / "plans.json").write_text((model / "plans.json").read_text() + " ")
    assert model_id(model) != original
    with pytest.raises(FileNotFoundError, match=r"no dataset\.json, plans\.json or fold_"):
        model_id(tmp_path / "not_a_model")


def test_the_localiser_is_part_of_the_model(tmp_path):
    """The automatic ROI's localiser decides where the model runs: other localiser weights, another model."""
    model = shutil.copytree(BUNDLED_MODEL, tmp_path / "model")
    localiser = model / "localiser"
    if not localiser.is_dir():  # any nnU-Net model folder can serve as one
        shutil.copytree(BUNDLED_MODEL, localiser)
    alone = model_id(shutil.copytree(model, tmp_path / "alone", ignore=shutil.ignore_patterns("localiser")))
    with_localiser = model_id(model)
    assert with_localiser != alone
    checkpoint = next(localiser.glob("fold_*/checkpoint_final.pth"))
    checkpoint.write_bytes(checkpoint.read_bytes() + b"\0")
    assert model_id(model) not in (with_localiser, alone)
    shutil.rmtree(localiser)
    localiser.mkdir()
    (localiser / "README.md").write_text("no weights here\n")
    assert model_id(model) == alone
