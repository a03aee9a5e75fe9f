"""Build a statistical shape model from cases, keep it in memory, shape it, and fit it to new data.

Coordinates: a model lives in its *model frame*, the LPS frame of the template case centred
on that case's centroid (GPA rotates every case into it). Corresponded cases are also kept
in their own LPS frames. Every length is in millimetres.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy.stats import chi2
from SternumSSMLib.dataset import utc_now
from SternumSSMLib.provenance import tool_version

from .correspondence import (
    MissingLandmarksError,
    PreparedCase,
    ShapeCase,
    SurfaceSettings,
    Template,
    correspond,
    prepare_case,
)
from .meshes import SurfaceLocator, SurfaceMesh, decimate
from .statistics import (
    PCA,
    Regression,
    align_to,
    generalisation,
    generalised_procrustes,
    leave_one_out_errors,
    mean_point_distance,
    principal_components,
    regress,
    robust_z,
    specificity,
)

Progress = Callable[[str, int, int], None]
# Outlier z-scores divide by at least this spread (mm): differences below a voxel's fraction are not outliers.
OUTLIER_MIN_SPREAD_MM = 0.25
# A case's scores are extreme when a Gaussian model puts less than 1 - this probability beyond them.
MAHALANOBIS_P = 0.999


def _no_progress(stage: str, done: int, total: int) -> None:
    """Default progress callback: report nothing."""


@dataclass(frozen=True)
class BuildSettings:
    """Everything that decides a model besides its cases and template."""

    surface: SurfaceSettings = field(default_factory=SurfaceSettings)
    template_points: int = 3000
    scaling: bool = False
    variance: float = 0.95
    nricp: bool = False
    strict: bool = False
    quality_modes: int = 10
    specificity_samples: int = 200
    outlier_z: float = 3.5

    def problems(self) -> list[str]:
        found = []
        if not 0.5 <= self.variance <= 1.0:
            found.append(f"variance {self.variance} must lie in 0.5..1 (a fraction, e.g. 0.95)")
        if not 100 <= self.template_points <= 50000:
            found.append(f"template_points {self.template_points} must lie in 100..50000")
        if self.quality_modes < 1 or self.specificity_samples < 1:
            found.append("quality_modes and specificity_samples must be >= 1")
        if self.surface.pseudo_per_segment < 0:
            found.append("pseudo_per_segment must be >= 0")
        return found

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> BuildSettings:
        return cls(**{**data, "surface": SurfaceSettings(**data["surface"])})


@dataclass(frozen=True, eq=False)
class CaseResult:
    """What the model knows about one training case (fit errors in mm; flags are sentences)."""

    case_id: str
    points_lps: np.ndarray  # (V, 3), template topology, the case's own LPS frame
    transform: np.ndarray  # (4, 4) case LPS -> model frame
    scores: np.ndarray  # (k,)
    assd_mm: float
    hd95_mm: float
    mahalanobis: float
    loo_error_mm: float
    dropped_volumes_mm3: tuple[float, ...]
    flags: tuple[str, ...]
    vertex_error_mm: np.ndarray  # (V,) where the corresponded mesh misses the case's surface


@dataclass(frozen=True, eq=False)
class ShapeModel:
    """A sternum SSM: template topology, mean and modes in the model frame, cases, quality and provenance."""

    template: Template
    pca: PCA
    mode_count: int
    cases: tuple[CaseResult, ...]
    compactness: np.ndarray
    generalisation_mm: np.ndarray
    specificity_mm: np.ndarray
    gpa_iterations: int
    settings: BuildSettings
    skipped: dict[str, str]
    regression: Regression | None = None
    provenance: dict = field(default_factory=dict)

    @property
    def mean_points(self) -> np.ndarray:
        return self.pca.mean.reshape(-1, 3)

    @property
    def standard_deviations(self) -> np.ndarray:
        return np.sqrt(self.pca.variances[: self.mode_count])

    def points(self, scores: np.ndarray) -> np.ndarray:
        """Model-frame points for mode ``scores`` (mm); fewer scores than modes leave the rest at 0."""
        scores = np.asarray(scores, dtype=float).ravel()
        if len(scores) > self.mode_count:
            raise ValueError(f"The model has {self.mode_count} modes; {len(scores)} scores were given.")
        return self.pca.reconstruct(scores).reshape(-1, 3)

    def shape(self, scores: np.ndarray | None = None) -> SurfaceMesh:
        """The shape for ``scores`` (the mean when None) as a mesh with the template's topology and ids."""
        return self.template.mesh.with_points(self.mean_points if scores is None else self.points(scores))

    def mode_scores(self, mode: int, standard_deviations: float) -> np.ndarray:
        """Scores of "mode ``mode`` (1-based) at ``standard_deviations`` SD"."""
        if not 1 <= mode <= self.mode_count:
            raise ValueError(f"Mode {mode} does not exist; this model has modes 1..{self.mode_count}.")
        scores = np.zeros(self.mode_count)
        scores[mode - 1] = standard_deviations * self.standard_deviations[mode - 1]
        return scores

    def covariate_scores(self, values: dict[str, float]) -> np.ndarray:
        if self.regression is None:
            raise ValueError("This model was built without covariates; rebuild it with a covariate CSV to predict.")
        return self.regression.predict(values)

    def sample_scores(self, count: int, seed: int) -> np.ndarray:
        """Random scores ~ N(0, λ) over the model's modes (reproducible for a seed)."""
        return np.random.default_rng(seed).standard_normal((count, self.mode_count)) * self.standard_deviations

    @property
    def flagged(self) -> list[tuple[str, str]]:
        return [(case.case_id, flag) for case in self.cases for flag in case.flags]


# --------------------------------------------------------------------------- building


def prepare_cases(
    cases: Iterable[ShapeCase], settings: BuildSettings, progress: Progress = _no_progress, total: int = 0
) -> tuple[list[PreparedCase], dict[str, str]]:
    """Surfaces and correspondence landmarks of every usable case; the others by name with the reason."""
    prepared, skipped = [], {}
    progress("surfaces", 0, total)
    for number, case in enumerate(cases, start=1):
        try:
            prepared.append(prepare_case(case, settings.surface))
        except MissingLandmarksError as error:
            if settings.strict:
                raise MissingLandmarksError(f"{error} (--strict refuses such cases)") from error
            skipped[case.case_id] = str(error)
        except ValueError as error:  # an empty or unusable label map
            if settings.strict:
                raise
            skipped[case.case_id] = f"Case {case.case_id}: {error}"
        progress("surfaces", number, total)
    return prepared, skipped


def default_template(prepared: list[PreparedCase], template_points: int) -> tuple[Template, int]:
    """The case closest to the Procrustes mean of the 34 landmarks, remeshed to about ``template_points``."""
    landmarks = np.array([case.anatomical_lps for case in prepared])
    alignment = generalised_procrustes(landmarks)
    distances = mean_point_distance(
        alignment.aligned.reshape(len(prepared), -1), alignment.mean.reshape(1, -1).repeat(len(prepared), 0)
    )
    index = int(np.argmin(distances))
    case = prepared[index]
    mesh = decimate(case.surface.mesh, template_points)
    template = Template.from_landmarks(mesh, case.landmarks_lps, case.landmark_names, f"case {case.case_id}")
    return template, index


def build_model(
    cases: Iterable[ShapeCase],
    settings: BuildSettings | None = None,
    template: Template | None = None,
    covariates: dict[str, dict[str, float]] | None = None,
    progress: Progress = _no_progress,
    total: int = 0,
    provenance: dict | None = None,
) -> ShapeModel:
    """Surfaces -> template -> correspondence -> GPA -> PCA -> quality, outliers and optional regression.

    ``covariates`` maps case id to covariate values (from a CSV the caller read; never stored
    per case in the model). Raises ValueError, naming the problem, when fewer than 3 cases are
    usable or the settings are invalid.
    """
    settings = settings or BuildSettings()
    problems = settings.problems()
    if problems:
        raise ValueError("Invalid shape-model settings: " + "; ".join(problems) + ".")
    prepared, skipped = prepare_cases(cases, settings, progress, total)
    if len(prepared) < 3:
        reasons = "".join(f"\n  {reason}" for reason in skipped.values())
        raise ValueError(f"A shape model needs at least 3 usable cases; {len(prepared)} are usable.{reasons}")
    reference = 0
    if template is None:
        template, reference = default_template(prepared, settings.template_points)
    elif template.landmark_names != prepared[0].landmark_names:
        raise ValueError(
            f"Template {template.source} has {len(template.landmark_names)} correspondence landmarks, the cases "
            f"{len(prepared[0].landmark_names)}; use the same pseudo-landmark setting for both."
        )
    corresponded = []
    progress("correspondence", 0, len(prepared))
    for number, case in enumerate(prepared, start=1):
        corresponded.append(correspond(template, template.mesh.points_lps, case, nricp=settings.nricp))
        progress("correspondence", number, len(prepared))
    progress("statistics", 0, 1)
    shapes = np.array([c.points_lps for c in corresponded])
    alignment = generalised_procrustes(shapes, reference=reference, scaling=settings.scaling)
    flat = alignment.aligned.reshape(len(shapes), -1)
    pca = principal_components(flat)
    mode_count = pca.modes_for(settings.variance)
    quality_modes = max(1, min(settings.quality_modes, len(flat) - 2))
    loo = leave_one_out_errors(flat, max(quality_modes, mode_count))
    scores = pca.scores(flat, mode_count)
    mahalanobis = np.sqrt((scores**2 / pca.variances[:mode_count]).sum(axis=1))
    fit = np.array([[c.fit_error.assd_mm, c.fit_error.hd95_mm] for c in corresponded])
    loo_at_k = loo[:, min(mode_count, loo.shape[1]) - 1]
    flags = _flags(prepared, fit, loo_at_k, mahalanobis, mode_count, settings.outlier_z)
    results = tuple(
        CaseResult(
            case_id=case.case_id,
            points_lps=c.points_lps,
            transform=alignment.transforms[n],
            scores=scores[n],
            assd_mm=float(fit[n, 0]),
            hd95_mm=float(fit[n, 1]),
            mahalanobis=float(mahalanobis[n]),
            loo_error_mm=float(loo_at_k[n]),
            dropped_volumes_mm3=case.surface.dropped_volumes_mm3,
            flags=flags[n],
            vertex_error_mm=c.fit_error.vertex_mm,
        )
        for n, (case, c) in enumerate(zip(prepared, corresponded, strict=True))
    )
    progress("statistics", 1, 1)
    return ShapeModel(
        template=template,
        pca=pca,
        mode_count=mode_count,
        cases=results,
        compactness=pca.compactness,
        generalisation_mm=generalisation(flat, quality_modes),
        specificity_mm=specificity(pca, flat, quality_modes, settings.specificity_samples),
        gpa_iterations=alignment.iterations,
        settings=settings,
        skipped=skipped,
        regression=_regression(results, covariates),
        provenance={
            "tool": tool_version(),
            "built_at": utc_now(),
            **(provenance or {"source": "cases passed in memory"}),
        },
    )


def _flags(
    prepared: list[PreparedCase], fit: np.ndarray, loo: np.ndarray, mahalanobis: np.ndarray, modes: int, limit: float
) -> list[tuple[str, ...]]:
    """Sentences per case: dropped surface pieces; fit, leave-one-out or Mahalanobis distance far above the rest."""
    # Under the model's own Gaussian, squared Mahalanobis distances follow chi² with one degree per mode.
    mahalanobis_limit = float(np.sqrt(chi2.ppf(MAHALANOBIS_P, modes)))
    z_assd, z_hd95 = robust_z(fit[:, 0], OUTLIER_MIN_SPREAD_MM), robust_z(fit[:, 1], OUTLIER_MIN_SPREAD_MM)
    z_loo = robust_z(loo, OUTLIER_MIN_SPREAD_MM)
    flags = []
    for n, case in enumerate(prepared):
        found = []
        if case.surface.dropped_volumes_mm3:
            volumes = ", ".join(f"{v:.0f}" for v in case.surface.dropped_volumes_mm3)
            found.append(
                f"surface in {len(case.surface.dropped_volumes_mm3) + 1} pieces; the largest was used, "
                f"pieces of {volumes} mm³ were dropped: check this case's segmentation"
            )
        if z_assd[n] > limit or z_hd95[n] > limit:
            found.append(
                f"fit error extreme (ASSD {fit[n, 0]:.2f} mm, HD95 {fit[n, 1]:.2f} mm; median "
                f"{np.median(fit[:, 0]):.2f}/{np.median(fit[:, 1]):.2f} mm): check this case's segmentation"
            )
        if mahalanobis[n] > mahalanobis_limit:
            found.append(
                f"scores extreme (Mahalanobis distance {mahalanobis[n]:.1f}, above {mahalanobis_limit:.1f}): "
                "check this case's segmentation and landmarks"
            )
        if z_loo[n] > limit:
            found.append(
                f"shape far from the others (leave-one-out error {loo[n]:.2f} mm, median {np.median(loo):.2f} mm): "
                "check this case's segmentation and landmarks"
            )
        flags.append(tuple(found))
    return flags


def _regression(results: tuple[CaseResult, ...], covariates: dict[str, dict[str, float]] | None) -> Regression | None:
    if not covariates:
        return None
    names = tuple(sorted({name for values in covariates.values() for name in values}))
    rows = [case for case in results if case.case_id in covariates]
    incomplete = [
        c.case_id for c in rows if any(not math.isfinite(covariates[c.case_id].get(k, math.nan)) for k in names)
    ]
    rows = [case for case in rows if case.case_id not in incomplete]
    x = np.array([[covariates[case.case_id][name] for name in names] for case in rows]).reshape(len(rows), len(names))
    return regress(np.array([case.scores for case in rows]).reshape(len(rows), -1), x, names)


# --------------------------------------------------------------------------- fitting new data


@dataclass(frozen=True, eq=False)
class FitResult:
    """The closest model shape to new data, in the data's own LPS frame, and how far the data is from it.

    ``residual_mm``: for landmarks, the RMS distance of the 34 landmarks to the model shape's
    landmarks; for a segmentation, the mean distance between its corresponded points and the
    closest shape. ``mahalanobis``: the size of the scores in SDs (a plausibility score).
    """

    scores: np.ndarray
    shape: SurfaceMesh
    residual_mm: float
    mahalanobis: float


def fit_landmarks(
    model: ShapeModel, landmarks_lps: np.ndarray, noise_mm: float = 1.0, iterations: int = 20
) -> FitResult:
    """The model shape best explaining the 34 anatomical landmarks (LPS) alone: what the landmarks determine.

    Alternates a Procrustes alignment of the landmarks onto the model's, and a regularised least
    squares (a Gaussian prior on the scores, landmark noise ``noise_mm``) for the scores.
    """
    landmarks_lps = np.asarray(landmarks_lps, dtype=float)
    count = len(landmarks_lps)
    k = model.mode_count
    weights_rows = _landmark_operator(model, count)
    mean_l = weights_rows @ model.mean_points
    modes_l = np.einsum("lv,kvd->kld", weights_rows, model.pca.modes[:k].reshape(k, -1, 3)).reshape(k, -1)
    scores = np.zeros(k)
    prior = noise_mm**2 / model.pca.variances[:k]
    for _ in range(iterations):
        current = (mean_l.ravel() + scores @ modes_l).reshape(-1, 3)
        transform = align_to(current, landmarks_lps, model.settings.scaling)
        target = (landmarks_lps @ transform[:3, :3].T + transform[:3, 3]).ravel() - mean_l.ravel()
        scores = np.linalg.solve(modes_l @ modes_l.T + np.diag(prior), modes_l @ target)
    fitted = (mean_l.ravel() + scores @ modes_l).reshape(-1, 3)
    aligned = landmarks_lps @ transform[:3, :3].T + transform[:3, 3]
    residual = float(np.sqrt(((aligned - fitted) ** 2).sum(axis=1).mean()))
    return _fit_result(model, scores, transform, residual)


def fit_case(model: ShapeModel, case: ShapeCase) -> FitResult:
    """The model shape closest to a new segmentation with its 34 landmarks (dense correspondence first)."""
    prepared = prepare_case(case, model.settings.surface)
    corresponded = correspond(model.template, model.mean_points, prepared, SurfaceLocator(prepared.surface.mesh))
    transform = align_to(model.mean_points, corresponded.points_lps, model.settings.scaling)
    aligned = corresponded.points_lps @ transform[:3, :3].T + transform[:3, 3]
    scores = model.pca.scores(aligned.ravel(), model.mode_count)[0]
    residual = float(mean_point_distance(aligned.ravel(), model.points(scores).ravel())[0])
    return _fit_result(model, scores, transform, residual)


def _landmark_operator(model: ShapeModel, count: int) -> np.ndarray:
    """(count, V) weights: landmark positions = weights @ points, for any shape of the model."""
    operator = np.zeros((count, len(model.mean_points)))
    corners = model.template.mesh.triangles[model.template.landmark_triangles[:count]]
    for row in range(count):
        np.add.at(operator[row], corners[row], model.template.landmark_weights[row])
    return operator


def _fit_result(model: ShapeModel, scores: np.ndarray, transform: np.ndarray, residual: float) -> FitResult:
    inverse = np.linalg.inv(transform)
    points = model.points(scores) @ inverse[:3, :3].T + inverse[:3, 3]
    mahalanobis = float(np.sqrt((scores**2 / model.pca.variances[: model.mode_count]).sum()))
    return FitResult(scores, model.template.mesh.with_points(points), residual, mahalanobis)
