"""Generalised Procrustes analysis, PCA and the SSM quality measures (Davies 2002, Styner 2003).

Shapes are (n, V, 3) arrays of corresponding LPS points. The model frame is the LPS frame of
the reference shape (the template case), centred on its centroid: GPA rotates every shape
into it, so "anterior" in a model still means -y.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# GPA stops when the mean moves less than this (mm, RMS over points) between iterations.
GPA_TOLERANCE_MM = 1e-6
GPA_MAX_ITERATIONS = 200


@dataclass(frozen=True, eq=False)
class Alignment:
    """GPA result: ``aligned`` (n, V, 3) in the model frame, ``transforms`` (n, 4, 4) case LPS -> model frame."""

    aligned: np.ndarray
    transforms: np.ndarray
    mean: np.ndarray
    iterations: int
    scaling: bool


def _fit(shape: np.ndarray, target: np.ndarray, scaling: bool) -> np.ndarray:
    """4x4 similarity (or rigid) taking ``shape`` onto ``target``; reflections are refused (det > 0)."""
    from trimesh.registration import procrustes  # on use: Slicer installs trimesh on first use

    matrix, _, _ = procrustes(shape, target, reflection=False, translation=True, scale=scaling, return_cost=True)
    return matrix


def _apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ matrix[:3, :3].T + matrix[:3, 3]


def _centroid_size(points: np.ndarray) -> float:
    return float(np.sqrt(((points - points.mean(axis=0)) ** 2).sum()))


def generalised_procrustes(shapes: np.ndarray, reference: int = 0, scaling: bool = False) -> Alignment:
    """GPA iterated to convergence; ``scaling=False`` keeps size ("size and shape", the HBM default).

    With ``scaling`` every shape is scaled to the mean's centroid size (that of the reference
    shape), so the model stays in millimetres.
    """
    shapes = np.asarray(shapes, dtype=float)
    if shapes.ndim != 3 or shapes.shape[0] < 3:
        raise ValueError(f"GPA needs at least 3 shapes of (V, 3) points; got {shapes.shape}.")
    mean = shapes[reference] - shapes[reference].mean(axis=0)
    size = _centroid_size(mean)
    iterations, change = 0, np.inf
    while change >= GPA_TOLERANCE_MM:
        if iterations == GPA_MAX_ITERATIONS:
            raise RuntimeError(
                f"GPA did not converge in {GPA_MAX_ITERATIONS} iterations (last change {change:.2g} mm)."
            )
        iterations += 1
        transforms = np.array([_fit(shape, mean, scaling) for shape in shapes])
        aligned = np.array([_apply(m, s) for m, s in zip(transforms, shapes, strict=True)])
        new_mean = aligned.mean(axis=0)
        # Keep the frame and size of the reference: re-fit the new mean onto the old one.
        new_mean = _apply(_fit(new_mean, mean, False), new_mean)
        if scaling:
            new_mean = (new_mean - new_mean.mean(axis=0)) * (size / _centroid_size(new_mean))
        change = float(np.sqrt(((new_mean - mean) ** 2).sum(axis=1).mean()))
        mean = new_mean
    transforms = np.array([_fit(shape, mean, scaling) for shape in shapes])
    aligned = np.array([_apply(m, s) for m, s in zip(transforms, shapes, strict=True)])
    if np.any(np.linalg.det(transforms[:, :3, :3]) <= 0):
        raise RuntimeError("GPA produced a reflection; this is a bug (procrustes was asked to refuse them).")
    return Alignment(aligned, transforms, mean, iterations, scaling)


def align_to(mean: np.ndarray, shape: np.ndarray, scaling: bool) -> np.ndarray:
    """4x4 transform taking one more ``shape`` into a model's frame, as GPA did for the training shapes."""
    return _fit(shape, mean, scaling)


@dataclass(frozen=True, eq=False)
class PCA:
    """``mean`` (3V,), ``modes`` (k, 3V) orthonormal rows, ``variances`` (k,) in mm², all of them kept."""

    mean: np.ndarray
    modes: np.ndarray
    variances: np.ndarray

    @property
    def compactness(self) -> np.ndarray:
        """Cumulative fraction of the variance in the first 1, 2, ... modes."""
        return np.cumsum(self.variances) / self.variances.sum()

    def modes_for(self, fraction: float) -> int:
        """The fewest modes that explain ``fraction`` of the variance."""
        # A small tolerance, so a fraction reached exactly does not hinge on rounding.
        return int(np.searchsorted(self.compactness, fraction - 1e-9) + 1)

    def scores(self, flat: np.ndarray, count: int) -> np.ndarray:
        return (np.atleast_2d(flat) - self.mean) @ self.modes[:count].T

    def reconstruct(self, scores: np.ndarray) -> np.ndarray:
        scores = np.atleast_2d(scores)
        return self.mean + scores @ self.modes[: scores.shape[1]]


def principal_components(flat: np.ndarray) -> PCA:
    """PCA of (n, 3V) shapes; each mode's sign makes its largest component positive (reproducible).

    Through the n x n Gram matrix, as there are far fewer shapes than coordinates.
    """
    mean = flat.mean(axis=0)
    centred = flat - mean
    eigenvalues, vectors = np.linalg.eigh(centred @ centred.T)
    order = np.argsort(eigenvalues)[::-1]
    eigenvalues, vectors = eigenvalues[order], vectors[:, order]
    keep = eigenvalues > eigenvalues[0] * 1e-12
    modes = (centred.T @ vectors[:, keep] / np.sqrt(eigenvalues[keep])).T
    signs = np.sign(modes[np.arange(len(modes)), np.argmax(np.abs(modes), axis=1)])
    return PCA(mean, modes * signs[:, None], eigenvalues[keep] / (len(flat) - 1))


def mean_point_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Mean distance (mm) between corresponding points of flat (…, 3V) shapes."""
    a, b = np.atleast_2d(a), np.atleast_2d(b)
    return np.linalg.norm((a - b).reshape(len(a), -1, 3), axis=2).mean(axis=1)


def generalisation(flat: np.ndarray, max_modes: int) -> np.ndarray:
    """G(M) in mm for M = 1..max_modes: the mean over cases of :func:`leave_one_out_errors`."""
    return leave_one_out_errors(flat, max_modes).mean(axis=0)


def leave_one_out_errors(flat: np.ndarray, max_modes: int) -> np.ndarray:
    """(n, max_modes) mean point error (mm) of each case reconstructed by a PCA of the others."""
    n = len(flat)
    errors = np.full((n, max_modes), np.nan)
    for left_out in range(n):
        rest = principal_components(np.delete(flat, left_out, axis=0))
        for m in range(1, min(max_modes, len(rest.variances)) + 1):
            errors[left_out, m - 1] = mean_point_distance(
                rest.reconstruct(rest.scores(flat[left_out], m)), flat[left_out]
            )[0]
    return errors


def specificity(pca: PCA, flat: np.ndarray, max_modes: int, samples: int = 200, seed: int = 0) -> np.ndarray:
    """S(M): mean distance (mm) of random model shapes (scores ~ N(0, λ)) to the nearest training shape."""
    rng = np.random.default_rng(seed)
    draws = rng.standard_normal((samples, max_modes))
    result = np.empty(max_modes)
    for m in range(1, max_modes + 1):
        shapes = pca.reconstruct(draws[:, :m] * np.sqrt(pca.variances[:m]))
        nearest = [mean_point_distance(flat, shape).min() for shape in shapes]
        result[m - 1] = float(np.mean(nearest))
    return result


def robust_z(values: np.ndarray, min_spread: float) -> np.ndarray:
    """(x - median) / max(1.4826 MAD, ``min_spread``).

    The floor keeps cases that are all alike (spread near zero) from flagging a case that
    differs by a hundredth of a millimetre.
    """
    values = np.asarray(values, dtype=float)
    median = np.median(values)
    spread = 1.4826 * np.median(np.abs(values - median))
    return (values - median) / max(spread, min_spread)


@dataclass(frozen=True, eq=False)
class Regression:
    """Linear regression of mode scores on covariates: scores ≈ [1, x] @ coefficients."""

    covariates: tuple[str, ...]
    coefficients: np.ndarray  # (1 + p, k)
    r_squared: np.ndarray  # (k,)

    def predict(self, values: dict[str, float]) -> np.ndarray:
        missing = [name for name in self.covariates if name not in values]
        if missing:
            raise ValueError(f"Give values for {missing} (the model's covariates are {list(self.covariates)}).")
        x = np.array([1.0] + [float(values[name]) for name in self.covariates])
        return x @ self.coefficients


def regress(scores: np.ndarray, covariates: np.ndarray, names: tuple[str, ...]) -> Regression:
    """Ordinary least squares of each mode's scores on the covariates (with an intercept)."""
    if len(scores) < covariates.shape[1] + 2:
        raise ValueError(
            f"Regression on {covariates.shape[1]} covariates needs at least {covariates.shape[1] + 2} cases "
            f"with covariates; {len(scores)} have them."
        )
    design = np.column_stack([np.ones(len(scores)), covariates])
    coefficients, *_ = np.linalg.lstsq(design, scores, rcond=None)
    residual = scores - design @ coefficients
    total = ((scores - scores.mean(axis=0)) ** 2).sum(axis=0)
    return Regression(tuple(names), coefficients, 1.0 - (residual**2).sum(axis=0) / np.maximum(total, 1e-12))
