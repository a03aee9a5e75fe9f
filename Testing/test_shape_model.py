"""Shape model: phantom ground truth, surfaces, mesh files, correspondence, GPA/PCA, model folder and CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from SternumLandmarksLib.surface import SurfaceIndex
from SternumShapeModelLib.correspondence import (
    MissingLandmarksError,
    ShapeCase,
    SurfaceSettings,
    Template,
    correspond,
    prepare_case,
    thin_plate_spline,
    user_template,
    warp,
)
from SternumShapeModelLib.evaluation import correspondence_errors, phantom_case, write_phantom_dataset
from SternumShapeModelLib.mesh_io import read_mesh, write_mesh
from SternumShapeModelLib.meshes import (
    SurfaceLocator,
    SurfaceMesh,
    decimate,
    manifold_problems,
    points_at,
    surface_from_labels,
)
from SternumShapeModelLib.model import BuildSettings, build_model, fit_landmarks
from SternumShapeModelLib.statistics import generalised_procrustes, principal_components, robust_z
from SternumShapeModelLib.storage import load_model, write_model_folder
from SternumSSMLib.anatomy import default_protocol
from SternumSSMLib.cli import main
from SternumSSMLib.geometry import PointSet, Volume, rotation_matrix
from SternumSSMLib.landmark_files import write_landmarks_csv
from SternumSSMLib.phantom import (
    random_parameters,
    shape_knobs,
    sternum_label_map,
    sternum_surface_coordinates,
    sternum_surface_truth,
    with_orientation,
)

SPACING = (1.5, 1.5, 1.5)
FAST = BuildSettings(template_points=800, quality_modes=3, specificity_samples=20)


def _params(seed: int, **overrides):
    return random_parameters(seed, hard_cases=False, spacing=SPACING, **overrides)


@pytest.fixture(scope="module")
def prepared():
    """Three small phantoms, prepared (surfaces, landmarks) once for the module."""
    return {seed: prepare_case(phantom_case(_params(seed))[0], SurfaceSettings()) for seed in (1, 2, 3)}


# --------------------------------------------------------------------------- phantom ground truth


def test_truth_points_lie_on_the_rendered_sternum_and_move_with_the_knobs():
    coordinates = sternum_surface_coordinates(along=12, across=5)
    oblique = with_orientation(_params(4), rotation_matrix(np.array([1.0, 2.0, 3.0]), 25.0) @ np.diag([1, -1, 1]))
    phantom = sternum_label_map(oblique)
    surface = SurfaceIndex.from_mask(np.isin(phantom.labels.array, (1, 2)), phantom.labels.geometry)
    truth = sternum_surface_truth(oblique, coordinates)
    assert np.percentile(np.abs(surface.signed_distance(truth)), 95) < 0.75 * max(SPACING)
    longer = sternum_surface_truth(_params(4, manubrium_body_ratio=0.9), coordinates)
    manubrium = coordinates[:, 0] == 0
    assert np.median(np.linalg.norm(longer[manubrium] - truth[manubrium], axis=1)) > 5.0
    assert shape_knobs(_params(4, manubrium_body_ratio=0.9))["manubrium_body_ratio"] == 0.9


# --------------------------------------------------------------------------- surfaces and mesh files


def test_surface_is_closed_manifold_on_a_mirrored_oblique_grid_and_islands_are_recorded():
    params = with_orientation(_params(5), rotation_matrix(np.array([0.3, 1.0, 0.2]), 30.0) @ np.diag([-1, 1, 1]))
    phantom = sternum_label_map(params)
    array = phantom.labels.array.copy()
    array[2:5, 2:5, 2:5] = 2  # a stray island, far from the sternum
    result = surface_from_labels(Volume(array, phantom.labels.geometry), (1, 2), target_points=1500)
    assert manifold_problems(result.mesh) == []
    assert result.mesh.signed_volume_mm3 > 0  # outward normals despite the mirrored grid
    assert len(result.dropped_volumes_mm3) == 1 and result.dropped_volumes_mm3[0] == pytest.approx(27 * 1.5**3)
    surface = SurfaceIndex.from_mask(np.isin(phantom.labels.array, (1, 2)), phantom.labels.geometry)
    assert np.percentile(np.abs(surface.signed_distance(result.mesh.points_lps)), 95) < 1.0
    with pytest.raises(ValueError, match="no voxels with labels"):
        surface_from_labels(Volume(np.zeros_like(array), phantom.labels.geometry), (1, 2))


@pytest.mark.parametrize("suffix", [".k", ".vtk", ".stl", ".inp"])
def test_mesh_files_round_trip_with_template_ids(tmp_path, prepared, suffix):
    mesh = decimate(prepared[1].surface.mesh, 500)
    mesh = SurfaceMesh(mesh.points_lps, mesh.triangles, node_ids=1000 + 3 * np.arange(len(mesh.points_lps)))
    path = write_mesh(mesh, tmp_path / f"shape{suffix}")
    back = read_mesh(path)
    assert back.points_lps.shape == mesh.points_lps.shape
    np.testing.assert_allclose(back.points_lps, mesh.points_lps, atol=1e-5)
    np.testing.assert_array_equal(back.triangles, mesh.triangles)
    if suffix in (".k", ".vtk"):
        np.testing.assert_array_equal(back.node_ids, mesh.node_ids)
    if suffix == ".stl":  # binary: 80-byte header, count, 50 bytes per triangle
        assert path.stat().st_size == 84 + 50 * len(mesh.triangles)
    with pytest.raises(FileExistsError):
        write_mesh(mesh, path)


def test_keyword_reader_refuses_quads_and_unknown_nodes(tmp_path):
    path = tmp_path / "quad.k"
    path.write_text("*NODE\n" + "".join(f"{n:8d}{0.0:16.1f}{n:16.1f}{0.0:16.1f}\n" for n in (1, 2, 3, 4)))
    path.write_text(path.read_text() + "*ELEMENT_SHELL\n" + f"{1:8d}{1:8d}{1:8d}{2:8d}{3:8d}{4:8d}\n*END\n")
    with pytest.raises(ValueError, match="quad"):
        read_mesh(path)


# --------------------------------------------------------------------------- correspondence


def test_correspondence_follows_the_true_anatomy(prepared):
    template_case, case = prepared[1], prepared[2]
    mesh = decimate(template_case.surface.mesh, 1500)
    template = Template.from_landmarks(mesh, template_case.landmarks_lps, template_case.landmark_names, "case 1")
    result = correspond(template, mesh.points_lps, case)
    # Exact projection: every vertex on the case surface; the fit error is small.
    assert result.fit_error.assd_mm < 0.5 and result.fit_error.hd95_mm < 1.5
    coordinates = sternum_surface_coordinates(along=12, across=5)
    triangles, weights = SurfaceLocator(mesh).barycentric(sternum_surface_truth(_params(1), coordinates))
    predicted = points_at(mesh.with_points(result.points_lps), triangles, weights)
    errors = np.linalg.norm(predicted - sternum_surface_truth(_params(2), coordinates), axis=1)
    assert np.median(errors) < 1.5
    # The landmarks land on the case's landmarks.
    assert np.median(np.linalg.norm(template.landmarks_on(result.points_lps)[:34] - case.anatomical_lps, axis=1)) < 1.5


def test_case_without_landmarks_is_named():
    case, _ = phantom_case(_params(1))
    bare = ShapeCase("case_x", case.labels, PointSet(names=(), positions=np.empty((0, 3)), coordinate_system="LPS"))
    with pytest.raises(MissingLandmarksError, match="case_x lacks landmarks L01"):
        prepare_case(bare, SurfaceSettings())


def test_user_template_keeps_its_topology_and_refuses_holes_and_other_protocols(prepared):
    case = prepared[3]
    mesh = decimate(case.surface.mesh, 900)
    anatomical = PointSet(names=case.landmark_names[:34], positions=case.anatomical_lps, coordinate_system="LPS")
    template = user_template(mesh, anatomical, 2, "fe.k")
    assert template.mesh is mesh and template.landmark_names == case.landmark_names
    with pytest.raises(ValueError, match="boundary edges"):
        user_template(SurfaceMesh(mesh.points_lps, mesh.triangles[1:]), anatomical, 2, "holed.k")
    renamed = PointSet(names=tuple(f"X{n}" for n in range(34)), positions=case.anatomical_lps, coordinate_system="LPS")
    with pytest.raises(ValueError, match="do not follow the protocol"):
        user_template(mesh, renamed, 2, "other.k")


# --------------------------------------------------------------------------- statistics


def test_gpa_undoes_rotations_without_reflections_and_keeps_size_unless_asked():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(50, 3)) * [30.0, 10.0, 5.0]
    shapes = [base, base @ rotation_matrix(np.array([1.0, 0.0, 1.0]), 40.0).T + 7.0, 1.2 * base, base * [-1, 1, 1]]
    alignment = generalised_procrustes(np.array(shapes))
    assert np.all(np.linalg.det(alignment.transforms[:, :3, :3]) > 0)
    np.testing.assert_allclose(alignment.aligned[0], alignment.aligned[1], atol=1e-6)
    size = np.linalg.norm(alignment.aligned[2] - alignment.aligned[2].mean(0)) / np.linalg.norm(
        alignment.aligned[0] - alignment.aligned[0].mean(0)
    )
    assert size == pytest.approx(1.2)
    # A mirror image cannot be rotated onto the original: it stays apart.
    assert np.abs(alignment.aligned[3] - alignment.aligned[0]).max() > 1.0
    scaled = generalised_procrustes(np.array(shapes), scaling=True)
    np.testing.assert_allclose(scaled.aligned[2], scaled.aligned[0], atol=1e-6)


def test_pca_finds_known_modes_and_robust_z_floors_the_spread():
    rng = np.random.default_rng(1)
    directions = np.linalg.qr(rng.normal(size=(30, 2)))[0].T
    flat = 5.0 + rng.normal(size=(200, 1)) * 4.0 * directions[0] + rng.normal(size=(200, 1)) * 1.0 * directions[1]
    pca = principal_components(flat)
    assert pca.variances[0] == pytest.approx(16.0, rel=0.2) and pca.variances[1] == pytest.approx(1.0, rel=0.2)
    assert abs(pca.modes[0] @ directions[0]) > 0.99
    assert pca.modes_for(0.9) == 1 and pca.modes_for(0.999) == 2
    assert robust_z(np.array([0.10, 0.10, 0.10, 0.11]), 0.25)[-1] < 1.0


# --------------------------------------------------------------------------- model, folder and CLI


@pytest.fixture(scope="module")
def phantom_dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("shape") / "dataset"
    write_phantom_dataset(root, [_params(seed) for seed in range(6)])
    return root


@pytest.fixture(scope="module")
def built_model(phantom_dataset, tmp_path_factory):
    """A model folder built through the CLI, with covariates (age follows body size) from a CSV."""
    folder = tmp_path_factory.mktemp("built")
    covariates = folder / "covariates.csv"
    rows = [
        f"phantom{seed:03d},{20 + 100 * (_params(seed).body_size - 0.85):.3f},{'MF'[seed % 2]}" for seed in range(6)
    ]
    covariates.write_text("case_id,age,sex\n" + "\n".join(rows) + "\n")
    model_folder = folder / "model"
    arguments = ["shape-model", "build", str(phantom_dataset), str(model_folder), "--points", "800"]
    assert main([*arguments, "--covariates", str(covariates)]) == 0
    return model_folder, rows


@pytest.mark.slow
def test_cli_build_fit_sample_export(phantom_dataset, built_model, tmp_path, capsys):
    model_folder, _ = built_model
    names = {p.name for p in model_folder.iterdir()}
    assert {"model.npz", "mean.vtk", "mean.stl", "scores.csv", "quality.csv", "model.json", "report.md"} <= names
    assert {"modes.png", "quality.png"} <= names
    description = json.loads((model_folder / "model.json").read_text())
    assert len(description["provenance"]["cases"]) == 6 and description["template"].startswith("case phantom")
    model = load_model(model_folder)
    assert len(model.cases) == 6 and model.mode_count >= 1
    before = sorted(p.name for p in model_folder.iterdir())
    assert main(["shape-model", "build", str(phantom_dataset), str(model_folder)]) != 0
    assert "never overwritten" in capsys.readouterr().err
    assert sorted(p.name for p in model_folder.iterdir()) == before

    landmarks = phantom_dataset / "landmarks" / "phantom002.csv"
    labels = phantom_dataset / "labelsTr" / "phantom002.nrrd"
    fitted = tmp_path / "fit.vtk"
    assert main(["shape-model", "fit", str(model_folder), "--labels", str(labels), "--landmarks", str(landmarks),
                 "--output", str(fitted)]) == 0  # fmt: skip
    assert len(read_mesh(fitted).points_lps) == len(model.mean_points)

    assert main(["shape-model", "sample", str(model_folder), str(tmp_path / "samples"), "--count", "2"]) == 0
    assert len(list((tmp_path / "samples").glob("*.vtk"))) == 2

    keyword = tmp_path / "mode1.k"
    assert main(["shape-model", "export", str(model_folder), str(keyword), "--mode", "1=2"]) == 0
    exported = read_mesh(keyword)
    expected = model.shape(model.mode_scores(1, 2.0))
    np.testing.assert_allclose(exported.points_lps, expected.points_lps, atol=1e-5)
    np.testing.assert_array_equal(exported.node_ids, model.template.mesh.node_ids)


@pytest.mark.slow
def test_covariates_predict_shapes_and_are_never_stored(built_model, tmp_path):
    model_folder, rows = built_model
    model = load_model(model_folder)
    assert model.regression is not None and model.regression.covariates == ("age", "sex")
    # Age follows body size, which the first mode carries: the regression explains most of it.
    assert model.regression.r_squared[0] > 0.8
    stored = (model_folder / "model.json").read_text() + (model_folder / "scores.csv").read_text()
    with np.load(model_folder / "model.npz") as data:
        numbers = np.concatenate([np.ravel(data[key]).astype(str) for key in data.files])
    for row in rows:
        age = row.split(",")[1]
        assert age not in stored and age not in numbers
    older, younger = tmp_path / "older.vtk", tmp_path / "younger.vtk"
    assert main(["shape-model", "export", str(model_folder), str(older), "--covariates", "age=50,sex=M"]) == 0
    assert main(["shape-model", "export", str(model_folder), str(younger), "--covariates", "age=25,sex=M"]) == 0
    # Older means larger here (age was made from body size): the older shape has the larger surface.
    assert read_mesh(older).area_mm2 > read_mesh(younger).area_mm2
    with pytest.raises(ValueError, match="sex"):
        model.covariate_scores({"age": 40.0})


@pytest.mark.slow
def test_user_template_keeps_its_node_and_element_ids(phantom_dataset, built_model, tmp_path):
    model_folder, _ = built_model
    model = load_model(model_folder)
    triangles = model.template.mesh.triangles
    node_ids, element_ids = 5000 + np.arange(len(model.mean_points)), 9000 + np.arange(len(triangles))
    fe_mesh = SurfaceMesh(model.mean_points, triangles, node_ids=node_ids, element_ids=element_ids)
    template_file = write_mesh(fe_mesh, tmp_path / "fe_sternum.k")
    landmarks = PointSet(default_protocol().ids, model.template.landmarks_on(model.mean_points)[:34], "LPS")
    landmark_file = write_landmarks_csv(tmp_path / "fe_landmarks.csv", landmarks)
    folder = tmp_path / "fe_model"
    arguments = ["shape-model", "build", str(phantom_dataset), str(folder), "--template", str(template_file)]
    assert main([*arguments, "--template-landmarks", str(landmark_file), "--no-report"]) == 0
    fe_model = load_model(folder)
    np.testing.assert_array_equal(fe_model.template.mesh.node_ids, fe_mesh.node_ids)
    np.testing.assert_array_equal(fe_model.template.mesh.triangles, fe_mesh.triangles)
    exported = read_mesh(write_mesh(fe_model.shape(), tmp_path / "fe_mean.k"))
    np.testing.assert_array_equal(exported.element_ids, fe_mesh.element_ids)
    assert np.median([c.assd_mm for c in fe_model.cases]) < 0.5


@pytest.mark.slow
def test_model_in_memory_fits_landmarks_skips_and_refuses(tmp_path):
    cases = [phantom_case(_params(seed))[0] for seed in range(5)]
    bare = ShapeCase("no_landmarks", cases[0].labels, PointSet((), np.empty((0, 3)), "LPS"))
    island = cases[4].labels.array.copy()
    island[1:4, 1:4, 1:4] = 1
    with_island = ShapeCase(cases[4].case_id, Volume(island, cases[4].labels.geometry), cases[4].landmarks)
    model = build_model([*cases[:4], with_island, bare], FAST)
    assert list(model.skipped) == ["no_landmarks"]
    assert [case_id for case_id, flag in model.flagged if "pieces" in flag] == [cases[4].case_id]
    assert model.gpa_iterations >= 2 and np.all(np.linalg.det([c.transform[:3, :3] for c in model.cases]) > 0)

    # Landmarks alone give back nearly the case's own shape (it is in the model).
    own = model.cases[1]
    fit = fit_landmarks(model, prepare_case(cases[1], SurfaceSettings()).anatomical_lps)
    assert fit.residual_mm < 2.0
    distance = np.linalg.norm(fit.shape.points_lps - own.points_lps, axis=1)
    assert np.median(distance) < 2.0
    # The residual is a plausibility score: two landmarks swapped make an implausible sternum.
    swapped = prepare_case(cases[1], SurfaceSettings()).anatomical_lps[[0, 1, 2, 3, 9, 5, 6, 7, 8, 4, *range(10, 34)]]
    assert fit_landmarks(model, swapped).residual_mm > 2 * fit.residual_mm

    with pytest.raises(MissingLandmarksError, match="strict"):
        build_model([*cases, bare], BuildSettings(template_points=800, strict=True))
    target = tmp_path / "few"
    with pytest.raises(ValueError, match="at least 3 usable cases"):
        build_model([*cases[:2], bare], FAST)
    assert not target.exists()

    folder = write_model_folder(model, tmp_path / "m", with_report=False)
    back = load_model(folder)
    np.testing.assert_allclose(back.mean_points, model.mean_points)
    np.testing.assert_allclose(back.cases[2].scores, model.cases[2].scores)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging left


def test_phantom_truth_scores_the_template_case_as_exact(prepared):
    """The evaluation's correspondence error is zero for a case corresponded to itself."""
    case = prepared[1]
    mesh = decimate(case.surface.mesh, 1000)
    template = Template.from_landmarks(mesh, case.landmarks_lps, case.landmark_names, "case phantom001")
    result = correspond(template, mesh.points_lps, case)
    fake_case = type("C", (), {"case_id": "phantom001b", "points_lps": result.points_lps})
    fake_model = type("M", (), {"template": template, "cases": [fake_case]})
    errors = correspondence_errors(fake_model, {"phantom001": _params(1), "phantom001b": _params(1)})
    assert np.median(errors) < 0.3


def test_spline_and_template_leave_out_undefined_and_duplicate_landmarks(prepared):
    rng = np.random.default_rng(0)
    source = rng.normal(size=(20, 3)) * 30.0
    source[5] = source[3]  # two landmarks on one spot
    target = source + rng.normal(size=source.shape)
    target[7] = np.nan  # a ray that missed
    spline = thin_plate_spline(source, target)
    kept = [0, 1, 2, 3, 4, 6, 8]
    np.testing.assert_allclose(warp(spline, source[kept]), target[kept], atol=1e-6)
    case = prepared[1]
    landmarks = case.landmarks_lps.copy()
    landmarks[40] = np.nan
    template = Template.from_landmarks(case.surface.mesh, landmarks, case.landmark_names, "case 1")
    on_mesh = template.landmarks_on(case.surface.mesh.points_lps)
    assert np.isnan(on_mesh[40]).all() and np.isfinite(on_mesh[:40]).all()


def test_model_nodes_show_shapes_in_ras_and_colour_by_fit_error(mrml_scene, prepared):
    from SternumShapeModelLib.shape_nodes import ERROR_ARRAY, colour_by, model_node, points_lps, set_shape

    mesh = decimate(prepared[1].surface.mesh, 600)
    node = model_node(mrml_scene, mesh, "mean shape")
    ras = np.array(node.GetPolyData().GetPoints().GetData())
    np.testing.assert_allclose(ras, mesh.points_lps * [-1, -1, 1])
    moved = mesh.points_lps + np.array([1.0, 2.0, 3.0])
    set_shape(node, moved)
    np.testing.assert_allclose(points_lps(node), moved)
    with pytest.raises(ValueError, match="points"):
        set_shape(node, moved[:-1])
    colour_by(node, np.linspace(0.0, 2.0, len(moved)))
    display = node.GetDisplayNode()
    assert display.GetActiveScalarName() == ERROR_ARRAY and display.GetScalarRange() == (0.0, 2.0)


def test_each_cartilage_piece_gets_its_own_closed_surface():
    from SternumShapeModelLib.meshes import piece_surfaces
    from SternumSSMLib.phantom import generate_phantom

    phantom = generate_phantom(random_parameters(2, spacing=(2.0, 2.0, 2.0)))  # a split cartilage on the left
    surfaces = piece_surfaces(phantom.labels, 4)
    assert len(surfaces) == sum(phantom.cartilage_pieces_per_side.values()) == 15
    assert all(manifold_problems(mesh) == [] and mesh.signed_volume_mm3 > 0 for mesh in surfaces)


@pytest.mark.slow
def test_build_worker_reports_progress_and_cancel_leaves_no_model(phantom_dataset, tmp_path):
    import time

    from SternumShapeModelLib.model import BuildSettings
    from SternumSSMLib.background_run import BackgroundRun

    worker_parents = [
        Path(__file__).parents[1] / folder for folder in ("SternumSSM", "SternumLandmarks", "SternumShapeModel")
    ]
    settings = BuildSettings(template_points=800, quality_modes=3, specificity_samples=20).to_dict()
    run = BackgroundRun("SternumShapeModelLib.build_worker", package_parents=worker_parents)
    try:
        run.send({"dataset": str(phantom_dataset), "output": str(tmp_path / "cancelled"), "settings": settings})
        deadline = time.monotonic() + 120
        while not any(m["event"] == "progress" for m in run.poll()):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        run.cancel()
        assert not (tmp_path / "cancelled").exists()

        run.send({"dataset": str(phantom_dataset), "output": str(tmp_path / "model"), "settings": settings})
        messages = []
        while not any(m["event"] in ("done", "error") for m in messages):
            assert time.monotonic() < deadline + 240
            messages += run.poll()
            time.sleep(0.2)
        done = messages[-1]
        assert done["event"] == "done", done
        fractions = [m["fraction"] for m in messages if m["event"] == "progress"]
        assert fractions == sorted(fractions) and fractions[-1] == 1.0
        assert load_model(done["model_folder"]).mode_count == done["modes"]
    finally:
        run.close()
