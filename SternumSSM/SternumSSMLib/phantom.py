"""Procedural thorax CT phantom with sternum, costal cartilage labels and the 34 sternum landmarks.

All anatomy is built analytically in patient LPS millimetres (x to the patient's left,
y posterior, z superior; z = 0 at the jugular notch) and then evaluated at the physical
centre of every voxel of the requested grid. Any voxel spacing, any of the 48 axis
orientations and any oblique direction therefore give the same anatomy, and landmarks
are exact physical points on the outline of the manubrium/sternal-body mask.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
from scipy import ndimage
from scipy.interpolate import PchipInterpolator

from .anatomy import LandmarkProtocol, default_protocol, label_scheme
from .geometry import ImageGeometry, PointSet, Volume

SIDES = {"right": -1.0, "left": 1.0}
CARTILAGE_COUNT = 10
STERNAL_CARTILAGES = 7
# Cartilages 8-10 join the one above, so 7 + 8 + 9 + 10 form one piece on each side.
CARTILAGE_PIECES_PER_SIDE = STERNAL_CARTILAGES

HU = {
    "air": -1000.0,
    "lung": -850.0,
    "fat": -100.0,
    "muscle": 45.0,
    "blood": 50.0,
    "liver": 60.0,
    "disc": 90.0,
    "joint": 100.0,
    "cancellous": 280.0,
    "cortical": 950.0,
}


@dataclass(frozen=True)
class PhantomParameters:
    """Knobs of the phantom. Lengths in mm, angles in degrees; spacing in (i, j, k) order.

    ``direction_lps`` gives the LPS direction of the i, j, k axes as columns: any signed
    permutation (the 48 axis orientations) or rotation (oblique).
    """

    seed: int = 0
    spacing: tuple[float, float, float] = (1.5, 1.5, 1.5)
    direction_lps: tuple[tuple[float, float, float], ...] = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))
    body_size: float = 1.0
    ribcage_width: float = 1.0
    manubrium_body_ratio: float = 0.5
    sternal_tilt_deg: float = 22.0
    sternal_angle_deg: float = 163.0
    calcification: float = 0.0
    fused_manubriosternal: bool = False
    fused_xiphisternal: bool = False
    split_cartilage: tuple[str, int] | None = None
    truncate_superior_mm: float = 0.0
    truncate_inferior_mm: float = 0.0
    noise_hu: float = 20.0
    blur_mm: float = 0.6
    variation: float = 1.0

    def validate(self) -> None:
        problems = []
        if len(self.spacing) != 3 or min(self.spacing) <= 0.2 or max(self.spacing) > 6:
            problems.append(f"spacing {self.spacing} must be three values between 0.2 and 6 mm")
        direction = np.asarray(self.direction_lps, dtype=float)
        if direction.shape != (3, 3) or not np.allclose(direction.T @ direction, np.eye(3), atol=1e-6):
            problems.append("direction_lps must be an orthonormal 3x3 matrix")
        if not 0.7 <= self.body_size <= 1.4:
            problems.append(f"body_size {self.body_size} must lie in 0.7..1.4")
        if not 0.8 <= self.ribcage_width <= 1.4:
            problems.append(f"ribcage_width {self.ribcage_width} must lie in 0.8..1.4")
        if not 0.3 <= self.manubrium_body_ratio <= 1.0:
            problems.append(f"manubrium_body_ratio {self.manubrium_body_ratio} must lie in 0.3..1.0")
        if not 0.0 <= self.sternal_tilt_deg <= 40.0:
            problems.append(f"sternal_tilt_deg {self.sternal_tilt_deg} must lie in 0..40")
        if not 150.0 <= self.sternal_angle_deg <= 180.0:
            problems.append(f"sternal_angle_deg {self.sternal_angle_deg} must lie in 150..180")
        if not 0.0 <= self.calcification <= 1.0:
            problems.append(f"calcification {self.calcification} must lie in 0..1")
        if self.split_cartilage is not None:
            side, number = self.split_cartilage
            if side not in SIDES or not 1 <= int(number) <= CARTILAGE_COUNT:
                problems.append(f"split_cartilage {self.split_cartilage} must be ('left'|'right', 1..10)")
        if self.truncate_superior_mm < 0 or self.truncate_inferior_mm < 0:
            problems.append("truncation distances must be >= 0")
        if problems:
            raise ValueError("Invalid phantom parameters: " + "; ".join(problems) + ".")


@dataclass(frozen=True)
class Phantom:
    """A generated case. ``cartilage_midpoints`` (LPS) are the arc-length middles of the 20
    cartilages, named ``cartilage_<side>_<number>``: ground truth for presence checks."""

    image: Volume
    labels: Volume
    landmarks: PointSet
    parameters: PhantomParameters
    cartilage_pieces_per_side: dict[str, int] = field(default_factory=dict)
    cartilage_midpoints: PointSet | None = None


def random_parameters(seed: int, hard_cases: bool = True, **overrides) -> PhantomParameters:
    """Parameters for case ``seed`` of a dataset: natural variation plus, optionally, hard-case knobs."""
    rng = np.random.default_rng([seed, 7919])
    values: dict = {
        "seed": seed,
        "body_size": float(rng.uniform(0.85, 1.2)),
        "ribcage_width": float(rng.uniform(0.9, 1.15)),
        "manubrium_body_ratio": float(rng.uniform(0.42, 0.6)),
        "sternal_tilt_deg": float(rng.uniform(14, 30)),
        "sternal_angle_deg": float(rng.uniform(158, 170)),
        "calcification": float(rng.uniform(0.0, 0.25)),
        "fused_manubriosternal": bool(rng.random() < 0.3),
        "fused_xiphisternal": bool(rng.random() < 0.5),
        "noise_hu": float(rng.uniform(12, 35)),
    }
    if hard_cases:
        hard = int(rng.integers(0, 6))
        if hard == 0:
            values["calcification"] = float(rng.uniform(0.6, 1.0))
        elif hard == 1:
            values["manubrium_body_ratio"] = float(rng.uniform(0.8, 0.95))
        elif hard == 2:
            values["split_cartilage"] = (str(rng.choice(list(SIDES))), int(rng.integers(3, 7)))
        elif hard == 3:
            values["ribcage_width"] = float(rng.uniform(1.25, 1.35))
        elif hard == 4:
            values["truncate_superior_mm"] = float(rng.uniform(40, 60))
        # hard == 5: an ordinary case
    values.update(overrides)
    return PhantomParameters(**values)


# --------------------------------------------------------------------------- sternum


@dataclass
class _Frame:
    """A sternal part's frame: u down the part's axis, v to the patient's left, w anterior (all LPS)."""

    origin: np.ndarray
    axis_u: np.ndarray
    axis_v: np.ndarray
    axis_w: np.ndarray

    def point(self, u: float, v: float, w: float = 0.0) -> np.ndarray:
        return self.origin + u * self.axis_u + v * self.axis_v + w * self.axis_w


def _sagittal_frame(origin: np.ndarray, tilt_deg: float) -> _Frame:
    """Axis tilted ``tilt_deg`` from straight down towards anterior (-y in LPS)."""
    tilt = np.radians(tilt_deg)
    axis_u = np.array([0.0, -np.sin(tilt), -np.cos(tilt)])
    axis_w = np.array([0.0, -np.cos(tilt), np.sin(tilt)])
    return _Frame(np.asarray(origin, float), axis_u, np.array([1.0, 0.0, 0.0]), axis_w)


@dataclass
class _Joint:
    """Plane between an upper and a lower part, through ``point`` with unit ``normal`` pointing down."""

    point: np.ndarray
    normal: np.ndarray
    gap: float

    def signed_distance(self, x, y, z):
        return (
            (x - self.point[0]) * self.normal[0]
            + (y - self.point[1]) * self.normal[1]
            + (z - self.point[2]) * self.normal[2]
        )


def _dip(u: np.ndarray, centre: float, half_width: float, depth: float) -> np.ndarray:
    """Smooth concave notch profile (cos^2), zero outside |u - centre| < half_width."""
    t = np.clip((u - centre) / half_width, -1.0, 1.0)
    return depth * np.cos(0.5 * np.pi * t) ** 2


@dataclass
class _SternalPart:
    label: int
    frame: _Frame
    u_range: tuple[float, float]
    half_width: dict[str, object]
    thickness: object
    top_edge: object | None = None
    upper_joint: _Joint | None = None
    lower_joint: _Joint | None = None
    hu_cancellous: float = HU["cancellous"]
    hu_cortical: float = HU["cortical"]
    shell_mm: float = 1.3
    _raster: tuple | None = None

    def outline_raster(self, step: float = 0.25):
        """2D distance (mm) inside the part's outline in the (u, v) plane, 0 outside."""
        if self._raster is None:
            u = np.arange(self.u_range[0] - 2.0, self.u_range[1] + 2.0, step)
            width = max(float(np.max(self.half_width["left"](u))), float(np.max(self.half_width["right"](u))))
            v = np.arange(-width - 2.0, width + 2.0, step)
            uu, vv = np.meshgrid(u, v, indexing="ij")
            inside = (uu >= self.u_range[0]) & (uu <= self.u_range[1])
            inside &= (vv <= self.half_width["left"](uu)) & (vv >= -self.half_width["right"](uu))
            if self.top_edge is not None:
                inside &= uu >= self.top_edge(vv)
            distance = ndimage.distance_transform_edt(inside) * step
            self._raster = (distance.astype(np.float32), u[0], v[0], step)
        return self._raster

    def corners(self) -> np.ndarray:
        width = 45.0
        half_thickness = 12.0
        return np.array(
            [
                self.frame.point(u, v, w)
                for u in (self.u_range[0] - 3, self.u_range[1] + 3)
                for v in (-width, width)
                for w in (-half_thickness, half_thickness)
            ]
        )


def _profile(points: list[tuple[float, float]]):
    u, h = zip(*points, strict=True)
    return PchipInterpolator(np.array(u), np.array(h), extrapolate=True)


class _Sternum:
    """Manubrium, body and xiphoid, their joints, and the landmark positions on their outline."""

    def __init__(self, params: PhantomParameters, rng: np.random.Generator, jugular_notch_lps: np.ndarray):
        s = params.body_size
        jitter = params.variation

        def vary(value: float, relative: float) -> float:
            return value * (1.0 + relative * jitter * float(rng.standard_normal()))

        self.body_length = vary(100.0 * s, 0.06)
        self.manubrium_length = params.manubrium_body_ratio * self.body_length
        self.xiphoid_length = vary(32.0 * s, 0.2)
        body_tilt = params.sternal_tilt_deg
        manubrium_tilt = body_tilt + (180.0 - params.sternal_angle_deg)
        xiphoid_tilt = body_tilt + vary(8.0, 1.0)
        gap_ms = 0.0 if params.fused_manubriosternal else 2.0
        gap_xs = 0.0 if params.fused_xiphisternal else 2.0

        jugular_depth = vary(7.0, 0.15)
        manubrium_frame = _sagittal_frame(jugular_notch_lps - np.array([0, 0, 0]), manubrium_tilt)
        # The reference line u = 0 sits above the notch by its depth so that the notch lies at u = depth.
        manubrium_frame.origin = jugular_notch_lps - jugular_depth * manubrium_frame.axis_u
        joint_ms = manubrium_frame.point(self.manubrium_length, 0.0)
        body_frame = _sagittal_frame(joint_ms, body_tilt)
        joint_xs = body_frame.point(self.body_length, 0.0)
        xiphoid_frame = _sagittal_frame(joint_xs, xiphoid_tilt)

        def bisector(upper: _Frame, lower: _Frame) -> np.ndarray:
            normal = upper.axis_u + lower.axis_u
            return normal / np.linalg.norm(normal)

        self.joint_ms = _Joint(joint_ms, bisector(manubrium_frame, body_frame), gap_ms)
        self.joint_xs = _Joint(joint_xs, bisector(body_frame, xiphoid_frame), gap_xs)

        side_scale = {side: 1.0 + 0.03 * jitter * float(rng.standard_normal()) for side in SIDES}
        lm, lb, lx = self.manubrium_length, self.body_length, self.xiphoid_length
        top_half_width = vary(27.0 * s, 0.06)
        clavicular_end = 0.24 * lm
        self.costal_notch_u = {1: 0.40 * lm}
        body_notch_fractions = [0.035, 0.21, 0.39, 0.56, 0.72, 0.93]
        for number, fraction in zip(range(2, 8), body_notch_fractions, strict=True):
            self.costal_notch_u[number] = fraction * lb

        manubrium_base = _profile(
            [
                (clavicular_end, top_half_width - 1.0),
                (0.45 * lm, top_half_width - 4.0),
                (0.8 * lm, 14.5 * s),
                (lm, 15.5 * s),
                (lm + 8.0, 15.5 * s),
            ]
        )

        def manubrium_half_width(u, scale):
            u = np.asarray(u, float)
            upper = top_half_width - 3.0 * np.sin(np.pi * np.clip(u, 0, clavicular_end) / clavicular_end)
            width = np.where(u < clavicular_end, upper, manubrium_base(np.maximum(u, clavicular_end)))
            return scale * (width - _dip(u, self.costal_notch_u[1], 5.0, 2.0))

        body_base = _profile(
            [
                (-8.0, 13.0 * s),
                (0.0, 13.0 * s),
                (0.3 * lb, 15.0 * s),
                (0.7 * lb, 18.0 * s),
                (0.93 * lb, 14.0 * s),
                (lb, 12.5 * s),
                (lb + 8.0, 12.5 * s),
            ]
        )

        def body_half_width(u, scale):
            u = np.asarray(u, float)
            width = body_base(u)
            for number in range(2, 8):
                width = width - _dip(u, self.costal_notch_u[number], 4.5 if number > 2 else 4.0, 2.0)
            return scale * width

        xiphoid_base = _profile([(-8.0, 9.0 * s), (0.0, 8.5 * s), (0.6 * lx, 5.5 * s), (lx, 2.5 * s)])

        def xiphoid_half_width(u, scale):
            return scale * xiphoid_base(np.asarray(u, float))

        def widths(function):
            return {side: (lambda u, f=function, k=side_scale[side]: f(u, k)) for side in SIDES}

        def top_edge(v):
            return jugular_depth * np.clip(1.0 - (np.asarray(v) / (13.0 * s)) ** 2, 0.0, None)

        scheme = label_scheme()
        xiphoid_hu = float(rng.uniform(150.0, 350.0))
        self.parts = [
            _SternalPart(
                label=scheme.by_name("Manubrium").value,
                frame=manubrium_frame,
                u_range=(0.0, lm + 6.0),
                half_width=widths(manubrium_half_width),
                thickness=_profile([(0.0, 14.0 * s), (lm, 11.0 * s), (lm + 8, 11.0 * s)]),
                top_edge=top_edge,
                lower_joint=self.joint_ms,
            ),
            _SternalPart(
                label=scheme.by_name("Sternal_body").value,
                frame=body_frame,
                u_range=(-6.0, lb + 6.0),
                half_width=widths(body_half_width),
                thickness=_profile([(-8.0, 11.0 * s), (0.5 * lb, 10.0 * s), (lb + 8, 8.5 * s)]),
                upper_joint=self.joint_ms,
                lower_joint=self.joint_xs,
            ),
            _SternalPart(
                label=scheme.by_name("Xiphoid").value,
                frame=xiphoid_frame,
                u_range=(-6.0, lx),
                half_width=widths(xiphoid_half_width),
                thickness=_profile([(-8.0, 7.0 * s), (lx, 3.0 * s)]),
                upper_joint=self.joint_xs,
                hu_cancellous=xiphoid_hu,
                hu_cortical=xiphoid_hu + 150.0,
                shell_mm=0.8,
            ),
        ]
        self.manubrium, self.body, self.xiphoid = self.parts
        self.jugular_depth = jugular_depth
        self.clavicular_end = clavicular_end

    def _edge_u(self, part: _SternalPart, joint: _Joint, upper: bool) -> float:
        """u at which the part's mid-plane (w = 0) meets its joint plane, on the part's own side."""
        cosine = float(part.frame.axis_u @ joint.normal)
        offset = float((part.frame.origin - joint.point) @ joint.normal)
        target = -joint.gap / 2.0 if upper else joint.gap / 2.0
        return (target - offset) / cosine

    def outline_point(self, part: _SternalPart, u: float, side: str) -> np.ndarray:
        return part.frame.point(u, SIDES[side] * float(part.half_width[side](u)))

    def feature_position(self, feature: str, side: str) -> np.ndarray:
        """LPS position of a named outline feature (the protocol's ``feature`` field)."""
        manubrium, body = self.manubrium, self.body
        manubrium_end = self._edge_u(manubrium, self.joint_ms, upper=True)
        body_start = self._edge_u(body, self.joint_ms, upper=False)
        body_end = self._edge_u(body, self.joint_xs, upper=True)
        if feature == "jugular_notch":
            return manubrium.frame.point(self.jugular_depth, 0.0)
        if feature == "xiphisternal_midpoint":
            return body.frame.point(body_end, 0.0)
        if feature == "clavicular_notch_superior":
            return self.outline_point(manubrium, 0.0, side)
        if feature == "clavicular_notch_inferior":
            return self.outline_point(manubrium, self.clavicular_end, side)
        if feature == "costal_notch_1":
            return self.outline_point(manubrium, self.costal_notch_u[1], side)
        if feature == "manubrium_waist":
            u = np.linspace(self.costal_notch_u[1] + 5.0, manubrium_end, 400)
            return self.outline_point(manubrium, float(u[np.argmin(manubrium.half_width[side](u))]), side)
        if feature.startswith("costal_notch_"):
            number = int(feature.rsplit("_", 1)[1])
            return self.outline_point(body, max(self.costal_notch_u[number], body_start), side)
        if feature.startswith("intercostal_margin_"):
            upper, lower = (int(n) for n in feature.split("_")[-2:])
            u = 0.5 * (self.costal_notch_u[upper] + self.costal_notch_u[lower])
            return self.outline_point(body, u, side)
        if feature == "inferolateral_angle":
            return self.outline_point(body, body_end, side)
        raise KeyError(f"The phantom has no sternal feature {feature!r}.")

    def cartilage_attachment(self, number: int, side: str) -> np.ndarray:
        """LPS point just inside the costal notch where cartilage ``number`` (1..7) meets the sternum."""
        part = self.manubrium if number == 1 else self.body
        u = self.costal_notch_u[number]
        width = float(part.half_width[side](u))
        return part.frame.point(u, SIDES[side] * (width - 1.5))

    def clavicular_attachment(self, side: str) -> np.ndarray:
        u = 0.5 * self.clavicular_end
        return self.manubrium.frame.point(u, SIDES[side] * (float(self.manubrium.half_width[side](u)) - 2.0))


# --------------------------------------------------------------------------- grid evaluation


class _Grid:
    """Physical coordinates of voxel centres, evaluated lazily per sub-box with broadcasting."""

    def __init__(self, geometry: ImageGeometry):
        self.geometry = geometry
        self.matrix = geometry.direction_lps * geometry.spacing

    def box(self, lo_lps: np.ndarray, hi_lps: np.ndarray, margin_mm: float = 2.0):
        """Index slices covering an LPS box, and the LPS x, y, z of those voxels (broadcastable)."""
        lo = np.asarray(lo_lps, float) - margin_mm
        hi = np.asarray(hi_lps, float) + margin_mm
        corners = np.array([[a, b, c] for a in (lo[0], hi[0]) for b in (lo[1], hi[1]) for c in (lo[2], hi[2])])
        index = self.geometry.lps_to_index(corners)
        start = np.clip(np.floor(index.min(axis=0)).astype(int), 0, np.array(self.geometry.size))
        stop = np.clip(np.ceil(index.max(axis=0)).astype(int) + 1, 0, np.array(self.geometry.size))
        if np.any(stop <= start):
            return None
        slices = tuple(slice(start[axis], stop[axis]) for axis in (2, 1, 0))
        return slices, self.coordinates(start, stop)

    def coordinates(self, start: np.ndarray, stop: np.ndarray):
        ranges = [np.arange(start[axis], stop[axis], dtype=np.float32) for axis in range(3)]
        shapes = {0: (1, 1, -1), 1: (1, -1, 1), 2: (-1, 1, 1)}
        coordinates = []
        for row in range(3):
            value = np.float32(self.geometry.origin_lps[row])
            for axis in range(3):
                coefficient = self.matrix[row, axis]
                if abs(coefficient) > 1e-9:
                    value = value + np.float32(coefficient) * ranges[axis].reshape(shapes[axis])
            coordinates.append(np.asarray(value, dtype=np.float32))
        return coordinates

    def full(self):
        return (slice(None),) * 3, self.coordinates(np.zeros(3, int), np.array(self.geometry.size))


def _paint(target: np.ndarray, slices, mask: np.ndarray, value) -> None:
    region = target[slices]
    mask = np.broadcast_to(mask, region.shape)
    if np.ndim(value) == 0:
        region[mask] = value
    else:
        region[mask] = np.broadcast_to(value, region.shape)[mask]


# --------------------------------------------------------------------------- tubes (ribs, cartilage, clavicles)


@dataclass
class _Tube:
    """A curved tube of elliptical cross-section sampled along its centreline (LPS)."""

    points: np.ndarray
    semi_normal: float
    semi_binormal: float
    centre_xy: np.ndarray = field(default_factory=lambda: np.zeros(2))

    def frames(self):
        tangent = np.gradient(self.points, axis=0)
        tangent /= np.linalg.norm(tangent, axis=1, keepdims=True)
        radial = np.column_stack(
            [self.points[:, 0] - self.centre_xy[0], self.points[:, 1] - self.centre_xy[1], np.zeros(len(self.points))]
        )
        radial -= np.sum(radial * tangent, axis=1, keepdims=True) * tangent
        norms = np.linalg.norm(radial, axis=1, keepdims=True)
        fallback = np.cross(tangent, [0.0, 0.0, 1.0])
        radial = np.where(norms > 1e-6, radial / np.maximum(norms, 1e-9), fallback)
        radial /= np.linalg.norm(radial, axis=1, keepdims=True)
        binormal = np.cross(tangent, radial)
        return tangent, radial, binormal


def _resample_curve(points: np.ndarray, step: float = 1.0) -> np.ndarray:
    lengths = np.r_[0.0, np.cumsum(np.linalg.norm(np.diff(points, axis=0), axis=1))]
    samples = np.arange(0.0, lengths[-1] + 1e-9, step)
    return np.column_stack([np.interp(samples, lengths, points[:, axis]) for axis in range(3)])


def _hermite(p0, t0, p1, t1, n: int = 200) -> np.ndarray:
    s = np.linspace(0.0, 1.0, n)[:, None]
    h00, h10 = 2 * s**3 - 3 * s**2 + 1, s**3 - 2 * s**2 + s
    h01, h11 = -2 * s**3 + 3 * s**2, s**3 - s**2
    return h00 * p0 + h10 * t0 + h01 * p1 + h11 * t1


def _rasterize_tubes(geometry: ImageGeometry, tubes: list[_Tube], chunk: int = 256) -> np.ndarray:
    """Smallest normalised elliptical radius (<= 1 inside) over all tube samples, per voxel."""
    rho = np.full(geometry.shape_kji, np.inf, dtype=np.float32)
    if not tubes:
        return rho
    points = np.concatenate([t.points for t in tubes])
    frames = [t.frames() for t in tubes]
    tangent = np.concatenate([f[0] for f in frames])
    normal = np.concatenate([f[1] for f in frames])
    binormal = np.concatenate([f[2] for f in frames])
    semi_n = np.concatenate([np.full(len(t.points), t.semi_normal) for t in tubes])
    semi_b = np.concatenate([np.full(len(t.points), t.semi_binormal) for t in tubes])
    semi_t = np.minimum(semi_n, semi_b)

    radius = max(max(t.semi_normal, t.semi_binormal) for t in tubes)
    reach = np.ceil(radius / geometry.spacing).astype(int) + 1
    grid = np.mgrid[-reach[0] : reach[0] + 1, -reach[1] : reach[1] + 1, -reach[2] : reach[2] + 1].reshape(3, -1).T
    grid = grid[np.sum((grid * geometry.spacing / (radius + 1.5 * geometry.spacing.max())) ** 2, axis=1) <= 1.0]
    matrix = (geometry.direction_lps * geometry.spacing).astype(np.float32)
    size = np.array(geometry.size)
    flat_rho = rho.reshape(-1)
    index = geometry.lps_to_index(points)
    for start in range(0, len(points), chunk):
        stop = min(start + chunk, len(points))
        base = np.rint(index[start:stop]).astype(np.int64)
        candidates = base[:, None, :] + grid[None, :, :]
        offset_index = (candidates - index[start:stop, None, :]).astype(np.float32)
        delta = offset_index @ matrix.T
        value = (
            (np.einsum("nmc,nc->nm", delta, normal[start:stop].astype(np.float32)) / semi_n[start:stop, None]) ** 2
            + (np.einsum("nmc,nc->nm", delta, binormal[start:stop].astype(np.float32)) / semi_b[start:stop, None]) ** 2
            + (np.einsum("nmc,nc->nm", delta, tangent[start:stop].astype(np.float32)) / semi_t[start:stop, None]) ** 2
        )
        valid = np.all((candidates >= 0) & (candidates < size), axis=2) & (value <= 1.44)
        if not np.any(valid):
            continue
        cand = candidates[valid]
        flat = (cand[:, 2] * size[1] + cand[:, 1]) * size[0] + cand[:, 0]
        np.minimum.at(flat_rho, flat, np.sqrt(value[valid]).astype(np.float32))
    return rho


# --------------------------------------------------------------------------- thorax


class _Thorax:
    """Body outline, rib cage, cartilages and sternum placement for one set of parameters."""

    def __init__(self, params: PhantomParameters, rng: np.random.Generator):
        self.params = params
        s = params.body_size
        w = params.ribcage_width
        self.s, self.w = s, w
        self.rib_half_width = np.array([62, 88, 106, 118, 126, 131, 134, 135, 134, 131], float) * s * w
        self.rib_half_width *= 1.0 + 0.03 * params.variation * rng.standard_normal(CARTILAGE_COUNT)
        self.posterior_y = 80.0 * s  # inner posterior wall of the rib cage
        self.spine_y = 55.0 * s
        self.fat = 10.0 + 30.0 * max(s - 0.85, 0.0)
        jugular_y = -70.0 * s
        self.sternum = _Sternum(params, rng, np.array([0.0, jugular_y, 0.0]))
        self.rib_posterior_z = 25.0 * s - 24.0 * s * np.arange(CARTILAGE_COUNT + 2)
        self.tubes_cartilage: list[_Tube] = []
        self.tubes_bone: list[_Tube] = []
        self.cartilage_midpoints: dict[str, np.ndarray] = {}
        self._build_ribs(rng)
        self._build_clavicles()

    def sternum_anterior_y(self, z):
        """Anterior y (LPS) of the sternum's outer surface at height z, extended beyond its ends."""
        st = self.sternum
        top = st.manubrium.frame.point(0.0, 0.0, 7.0 * self.s)
        joint = st.joint_ms.point + 6.0 * self.s * st.body.frame.axis_w
        bottom = st.xiphoid.frame.point(st.xiphoid_length, 0.0, 2.0)
        zs = np.array([bottom[2] - 200, bottom[2], joint[2], top[2], top[2] + 200])
        ys = np.array([bottom[1], bottom[1], joint[1], top[1], top[1]])
        return np.interp(z, zs, ys)

    def _build_ribs(self, rng: np.random.Generator) -> None:
        st = self.sternum
        lateral = np.array([22, 28, 36, 46, 58, 70, 82, 100, 112, 120], float) * self.s * self.w
        drop = np.array([4, 6, 12, 22, 34, 48, 58, 26, 24, 22], float) * self.s * self.w
        split = self.params.split_cartilage
        for side, sign in SIDES.items():
            cartilage_curves: dict[int, np.ndarray] = {}
            for number in range(1, CARTILAGE_COUNT + 1):
                n = number - 1
                if number <= STERNAL_CARTILAGES:
                    end = st.cartilage_attachment(number, side)
                    end_tangent = np.array([-sign, 0.0, 0.1 + 0.05 * n])
                else:
                    above = cartilage_curves[number - 1]
                    end = above[int(0.45 * len(above))]
                    end_tangent = np.array([-0.6 * sign, 0.0, 0.8])
                junction_x = sign * (abs(st.cartilage_attachment(min(number, 7), side)[0]) + lateral[n])
                junction_z = end[2] - drop[n]
                rib = self._rib_arc(number, sign, junction_x, junction_z, end)
                tangent = rib[-1] - rib[-2]
                tangent /= np.linalg.norm(tangent)
                length = np.linalg.norm(end - rib[-1])
                cartilage = _hermite(rib[-1], tangent * length, end, end_tangent / np.linalg.norm(end_tangent) * length)
                cartilage_curves[number] = cartilage
                samples = _resample_curve(cartilage)
                self.cartilage_midpoints[f"cartilage_{side}_{number}"] = samples[len(samples) // 2]
                if split is not None and split[0] == side and int(split[1]) == number:
                    # Samples are 1 mm apart; the gap must exceed both tube ends' reach (2 x 3.6 mm).
                    centre = len(samples) // 2
                    samples = np.delete(samples, np.arange(centre - 7, centre + 8), axis=0)
                semi_b = (7.0 if number == 1 else 5.5 if number < 4 else 4.3) * self.s
                self.tubes_cartilage.append(
                    _Tube(samples, 3.6 * self.s, semi_b, np.array([0.0, self._centre_y(number)]))
                )
                self.tubes_bone.append(
                    _Tube(_resample_curve(rib), 3.6 * self.s, 6.5 * self.s, np.array([0.0, self._centre_y(number)]))
                )
            for number in (11, 12):
                self.tubes_bone.append(self._floating_rib(number, sign))

    def _centre_y(self, number: int) -> float:
        return 0.5 * (self.posterior_y + self.sternum_anterior_y(self.rib_posterior_z[number - 1] - 40.0))

    def _rib_arc(self, number: int, sign: float, junction_x: float, junction_z: float, anterior_end) -> np.ndarray:
        """Rib from beside the spine around the side of the chest to the costochondral junction (LPS)."""
        half_width = self.rib_half_width[number - 1]
        junction_x = sign * min(abs(junction_x), 0.97 * half_width)
        anterior_y = anterior_end[1] + 8.0 * self.s
        centre_y = 0.5 * (self.posterior_y + anterior_y)
        semi_ap = 0.5 * (self.posterior_y - anterior_y)
        end_angle = np.pi - np.arcsin(abs(junction_x) / half_width)
        angle = np.linspace(0.22, end_angle, 240)
        z_post = self.rib_posterior_z[number - 1]
        fraction = (angle - angle[0]) / (angle[-1] - angle[0])
        z = z_post + (junction_z - z_post) * fraction**1.6
        return np.column_stack([sign * half_width * np.sin(angle), centre_y + semi_ap * np.cos(angle), z])

    def _floating_rib(self, number: int, sign: float) -> _Tube:
        half_width = self.rib_half_width[-1] * (0.95 if number == 11 else 0.85)
        angle = np.linspace(0.22, 1.5 if number == 11 else 1.2, 120)
        centre_y = 0.5 * (self.posterior_y - 60.0 * self.s)
        semi_ap = self.posterior_y - centre_y
        z = self.rib_posterior_z[number - 1] - 30.0 * self.s * angle
        points = np.column_stack([sign * half_width * np.sin(angle), centre_y + semi_ap * np.cos(angle), z])
        return _Tube(_resample_curve(points), 3.4 * self.s, 6.0 * self.s, np.array([0.0, centre_y]))

    def _build_clavicles(self) -> None:
        for side, sign in SIDES.items():
            start = self.sternum.clavicular_attachment(side)
            points = np.array(
                [
                    start,
                    start + np.array([sign * 40.0, -8.0, 12.0]) * self.s,
                    start + np.array([sign * 95.0, 0.0, 22.0]) * self.s,
                    start + np.array([sign * 145.0, 35.0, 26.0]) * self.s,
                ]
            )
            dense = np.column_stack(
                [np.interp(np.linspace(0, 3, 120), np.arange(4), points[:, axis]) for axis in range(3)]
            )
            self.tubes_bone.append(_Tube(_resample_curve(dense), 6.0 * self.s, 6.0 * self.s, np.zeros(2)))

    def field_of_view(self) -> tuple[np.ndarray, np.ndarray]:
        """LPS box of the scan: whole body width and depth, jugular notch region to below cartilage 10."""
        body_half_width = self.rib_half_width.max() + 25.0 + self.fat
        lowest = min(float(t.points[:, 2].min()) for t in self.tubes_cartilage)
        anterior = float(self.sternum_anterior_y(lowest)) - 18.0 - self.fat
        top = 45.0 * self.s - self.params.truncate_superior_mm
        bottom = lowest - 20.0 + self.params.truncate_inferior_mm
        if top - bottom < 30.0:
            raise ValueError("The truncation leaves less than 30 mm of scan; reduce truncate_*_mm.")
        lo = np.array([-body_half_width, anterior - 5.0, bottom])
        hi = np.array([body_half_width, self.posterior_y + 70.0 * self.s, top])
        return lo, hi


def grid_for_box(lo_lps: np.ndarray, hi_lps: np.ndarray, spacing, direction_lps) -> ImageGeometry:
    """The smallest grid with the given spacing and axes (LPS columns) covering an LPS box."""
    direction = np.asarray(direction_lps, float)
    spacing = np.asarray(spacing, float)
    corners = np.array(
        [[a, b, c] for a in (lo_lps[0], hi_lps[0]) for b in (lo_lps[1], hi_lps[1]) for c in (lo_lps[2], hi_lps[2])]
    )
    projected = corners @ direction
    lo = projected.min(axis=0)
    size = np.ceil((projected.max(axis=0) - lo) / spacing).astype(int) + 1
    return ImageGeometry(origin_lps=direction @ lo, spacing=spacing, direction_lps=direction, size=tuple(size))


def _render_soft_tissue(thorax: _Thorax, grid: _Grid, rng: np.random.Generator) -> np.ndarray:
    """HU of air, fat, muscle, lungs, mediastinum, heart, vessels and upper abdomen."""
    s = thorax.s
    slices, (x, y, z) = grid.full()
    hu = np.full(grid.geometry.shape_kji, HU["air"], dtype=np.float32)
    half_width = np.float32(thorax.rib_half_width.max() + 22.0)
    anterior = thorax.sternum_anterior_y(z).astype(np.float32) - np.float32(14.0)
    posterior = np.float32(thorax.posterior_y + 55.0 * s)
    centre = 0.5 * (anterior + posterior)
    semi_ap = 0.5 * (posterior - anterior)

    def ellipse(inset: float):
        # Superellipse (exponent 2.4) gives the flattened back and sides of a supine torso.
        return (np.abs(x) / (half_width - inset)) ** 2.4 + (np.abs(y - centre) / (semi_ap - inset)) ** 2.4 <= 1.0

    _paint(hu, slices, ellipse(-thorax.fat), HU["fat"])
    _paint(hu, slices, ellipse(0.0), HU["muscle"])

    inner_half_width = np.float32(thorax.rib_half_width.max() - 6.0)
    inner_anterior = anterior + np.float32(22.0)
    inner_posterior = np.float32(thorax.posterior_y - 4.0)
    inner_centre = 0.5 * (inner_anterior + inner_posterior)
    inner_semi = 0.5 * (inner_posterior - inner_anterior)
    apex_taper = np.clip((np.float32(40.0 * s) - z) / np.float32(60.0 * s), 0.35, 1.0)
    cavity = (x / (inner_half_width * apex_taper)) ** 2 + ((y - inner_centre) / inner_semi) ** 2 <= 1.0
    diaphragm_z = np.float32(thorax.rib_posterior_z[8]) + np.float32(30.0 * s) * (
        1.0
        - ((np.abs(x) - np.float32(60 * s)) / np.float32(90 * s)) ** 2
        - ((y - inner_centre) / np.float32(110 * s)) ** 2
    )
    above = z > diaphragm_z
    # Mediastinum: widest at the heart, narrowing towards the thoracic inlet and the spine.
    heart_level = np.exp(-(((z + np.float32(95.0 * s)) / np.float32(70.0 * s)) ** 2))
    depth = np.clip((y - inner_anterior) / (np.float32(thorax.spine_y) - inner_anterior), 0.0, 1.0)
    mediastinum_half_width = (np.float32(22.0 * s) + np.float32(45.0 * s) * heart_level * (1.0 - depth)) * (
        1.0 + np.float32(0.35) * (x > 0)
    )
    mediastinum = (np.abs(x) < mediastinum_half_width) & (y < np.float32(thorax.spine_y + 20.0 * s))
    _paint(hu, slices, cavity & above & ~mediastinum, HU["lung"])
    _paint(hu, slices, cavity & above & mediastinum, 30.0)
    _paint(hu, slices, cavity & ~above & (x < 0), HU["liver"])
    _paint(hu, slices, cavity & ~above & (x >= 0), 35.0)

    heart_centre = np.array([25.0, -20.0, -100.0]) * s
    heart = ((x - heart_centre[0]) / (62 * s)) ** 2 + ((y - heart_centre[1]) / (50 * s)) ** 2 + (
        (z - heart_centre[2]) / (55 * s)
    ) ** 2 <= 1.0
    _paint(hu, slices, heart & cavity, HU["blood"])
    aorta = ((x - 22.0 * s) ** 2 + (y - (thorax.spine_y - 25.0 * s)) ** 2 <= (12.0 * s) ** 2) & above
    _paint(hu, slices, aorta, HU["blood"] - 5.0)
    trachea = (x**2 + (y - (thorax.spine_y - 38.0 * s)) ** 2 <= (9.0 * s) ** 2) & (z > -55.0 * s)
    _paint(hu, slices, trachea & cavity, HU["air"])
    _render_spine(thorax, grid, hu)
    return hu


def _render_spine(thorax: _Thorax, grid: _Grid, hu: np.ndarray) -> None:
    s = thorax.s
    lo = np.array([-40.0 * s, thorax.spine_y - 25.0 * s, -1000.0])
    hi = np.array([40.0 * s, thorax.spine_y + 65.0 * s, 1000.0])
    box = grid.box(lo, hi)
    if box is None:
        return
    slices, (x, y, z) = box
    radial = np.sqrt(x**2 + (y - thorax.spine_y) ** 2)
    level = np.mod(z, 26.0 * s)
    body = radial <= 19.0 * s
    disc = body & (level < 5.0 * s)
    _paint(hu, slices, body & (radial > 17.5 * s), HU["cortical"])
    _paint(hu, slices, body & (radial <= 17.5 * s), HU["cancellous"])
    _paint(hu, slices, disc, HU["disc"])
    canal = x**2 + (y - (thorax.spine_y + 28.0 * s)) ** 2 <= (8.0 * s) ** 2
    arch = (np.abs(x) < 16.0 * s) & (y > thorax.spine_y + 18.0 * s) & (y < thorax.spine_y + 40.0 * s) & ~canal
    spinous = (
        (np.abs(x) < 4.0 * s) & (y >= thorax.spine_y + 36.0 * s) & (y < thorax.spine_y + 60.0 * s) & (level > 8.0 * s)
    )
    _paint(hu, slices, arch | spinous, 600.0)
    _paint(hu, slices, canal, 15.0)


def _rounded_plate(distance: np.ndarray, half_thickness: np.ndarray, w: np.ndarray, inset: float) -> np.ndarray:
    """Inside a plate whose edges are rounded: ``distance`` to the outline in-plane, ``w`` across it."""
    d = distance - inset
    h = np.maximum(half_thickness - inset, 0.1)
    rounded = np.sqrt(np.clip(1.0 - (1.0 - np.minimum(d / h, 1.0)) ** 2, 0.0, None))
    return (d > 0) & (np.abs(w) <= h * rounded)


def _render_sternal_part(part: _SternalPart, grid: _Grid, hu: np.ndarray, labels: np.ndarray) -> None:
    corners = part.corners()
    box = grid.box(corners.min(axis=0), corners.max(axis=0))
    if box is None:
        return
    slices, (x, y, z) = box
    frame = part.frame
    dx, dy, dz = x - frame.origin[0], y - frame.origin[1], z - frame.origin[2]
    u = dx * frame.axis_u[0] + dy * frame.axis_u[1] + dz * frame.axis_u[2]
    v = dx * frame.axis_v[0] + dy * frame.axis_v[1] + dz * frame.axis_v[2]
    w = dx * frame.axis_w[0] + dy * frame.axis_w[1] + dz * frame.axis_w[2]
    u, v, w = np.broadcast_arrays(u, v, w)
    raster, u0, v0, step = part.outline_raster()
    distance = ndimage.map_coordinates(raster, [(u - u0) / step, (v - v0) / step], order=1, cval=0.0)
    half = 0.5 * part.thickness(u).astype(np.float32)
    inside = _rounded_plate(distance, half, w, 0.0)
    core = _rounded_plate(distance, half, w, part.shell_mm)
    joint_space = np.zeros_like(inside)
    for joint, part_is_below in ((part.upper_joint, True), (part.lower_joint, False)):
        if joint is None:
            continue
        beyond = joint.signed_distance(x, y, z) * (1.0 if part_is_below else -1.0)
        joint_space |= inside & (np.abs(beyond) <= joint.gap / 2.0)
        inside &= beyond > joint.gap / 2.0
        core &= beyond > joint.gap / 2.0 + part.shell_mm
    _paint(hu, slices, joint_space, HU["joint"])
    _paint(hu, slices, inside, part.hu_cortical)
    _paint(hu, slices, core, part.hu_cancellous)
    _paint(labels, slices, inside, part.label)


def _calcification(rho: np.ndarray, level: float, geometry: ImageGeometry, rng: np.random.Generator) -> np.ndarray:
    """Boolean mask of calcified cartilage voxels: smooth random blobs covering ~level of the cartilage."""
    cartilage = rho <= 1.0
    if level <= 0 or not np.any(cartilage):
        return np.zeros_like(cartilage)
    box = ndimage.find_objects(cartilage.astype(np.uint8))[0]
    noise = rng.standard_normal(cartilage[box].shape).astype(np.float32)
    sigma = 2.5 / geometry.spacing[::-1]
    smooth = ndimage.gaussian_filter(noise, sigma)
    inside = cartilage[box]
    threshold = np.quantile(smooth[inside], 1.0 - 0.6 * level)
    calcified = np.zeros_like(cartilage)
    calcified[box] = inside & (smooth >= threshold)
    return calcified


def generate_phantom(params: PhantomParameters | None = None, protocol: LandmarkProtocol | None = None) -> Phantom:
    """Generate a CT (int16 HU), its label map (uint8, values from the anatomy) and LPS landmarks."""
    params = params or PhantomParameters()
    params.validate()
    protocol = protocol or default_protocol()
    rng = np.random.default_rng(params.seed)
    thorax = _Thorax(params, rng)
    geometry = grid_for_box(*thorax.field_of_view(), params.spacing, params.direction_lps)
    grid = _Grid(geometry)

    hu = _render_soft_tissue(thorax, grid, rng)
    labels = np.zeros(geometry.shape_kji, dtype=np.uint8)

    bone_rho = _rasterize_tubes(geometry, thorax.tubes_bone)
    hu[bone_rho <= 1.0] = HU["cancellous"]
    hu[(bone_rho <= 1.0) & (bone_rho > 0.72)] = HU["cortical"]

    cartilage_rho = _rasterize_tubes(geometry, thorax.tubes_cartilage)
    cartilage = cartilage_rho <= 1.0
    hu[cartilage] = float(rng.uniform(100.0, 160.0))
    calcified = _calcification(cartilage_rho, params.calcification, geometry, rng)
    hu[calcified] = rng.uniform(300.0, 800.0, size=int(calcified.sum())).astype(np.float32)
    labels[cartilage] = label_scheme().by_name("Cartilage").value

    for part in thorax.sternum.parts:
        _render_sternal_part(part, grid, hu, labels)

    if params.blur_mm > 0:
        hu = ndimage.gaussian_filter(hu, params.blur_mm / geometry.spacing[::-1], mode="nearest")
    if params.noise_hu > 0:
        hu += rng.normal(0.0, params.noise_hu, size=hu.shape).astype(np.float32)
    image = np.clip(np.rint(hu), -1024, 3071).astype(np.int16)

    return Phantom(
        image=Volume(image, geometry),
        labels=Volume(labels, geometry),
        landmarks=_landmarks(thorax.sternum, protocol, geometry),
        parameters=params,
        cartilage_pieces_per_side=_expected_pieces(params),
        cartilage_midpoints=PointSet(
            names=tuple(thorax.cartilage_midpoints),
            positions=np.array(list(thorax.cartilage_midpoints.values())),
            coordinate_system="LPS",
        ),
    )


def _landmarks(sternum: _Sternum, protocol: LandmarkProtocol, geometry: ImageGeometry) -> PointSet:
    positions = np.array([sternum.feature_position(lm.feature, lm.side) for lm in protocol.landmarks])
    outside = ~geometry.contains_index(geometry.lps_to_index(positions))
    positions[outside] = np.nan
    return PointSet(
        names=protocol.ids,
        positions=positions,
        coordinate_system="LPS",
        descriptions=tuple(f"{lm.name}: {lm.description}" for lm in protocol.landmarks),
    )


def _expected_pieces(params: PhantomParameters) -> dict[str, int]:
    pieces = dict.fromkeys(SIDES, CARTILAGE_PIECES_PER_SIDE)
    if params.split_cartilage is not None:
        pieces[params.split_cartilage[0]] += 1
    return pieces


def with_orientation(params: PhantomParameters, direction_lps: np.ndarray, spacing=None) -> PhantomParameters:
    """The same anatomy on another grid: new axis directions (LPS columns) and optionally spacing."""
    direction = tuple(tuple(float(v) for v in row) for row in np.asarray(direction_lps, float))
    return replace(params, direction_lps=direction, spacing=tuple(spacing) if spacing is not None else params.spacing)


# --------------------------------------------------------------------------- shape-model ground truth

# Knobs that change the sternum's geometry (tilt changes only its pose: the whole sternum rotates).
SHAPE_KNOBS = ("manubrium_body_ratio", "sternal_tilt_deg", "sternal_angle_deg", "body_size")
# Truth points stay this far from the joint planes: those cut the faces obliquely and a closed
# surface bridges the joint space, so near them "the surface" differs between fused and separate joints.
_JOINT_MARGIN_MM = 3.0


def sternum_surface_coordinates(along: int = 24, across: int = 9) -> np.ndarray:
    """Parametric coordinates of true surface points on manubrium plus sternal body, one row each.

    Columns: part (0 manubrium, 1 body), s in [0, 1] down the part (top edge or joint margin to
    joint margin), t in [-1, 1] across it (-1 the right rim, +1 the left rim, as fractions of the
    local half-width) and face (+1 anterior, -1 posterior). The same rows mean the same
    anatomical places on every phantom: :func:`sternum_surface_truth` maps them to LPS points.
    """
    s, t = np.linspace(0.0, 1.0, along), np.linspace(-1.0, 1.0, across)
    rows = [(part, a, b, face) for part in (0, 1) for face in (1.0, -1.0) for a in s for b in t]
    return np.array(rows, dtype=float)


def sternum_surface_truth(params: PhantomParameters, coordinates: np.ndarray) -> np.ndarray:
    """LPS points (N, 3) of the phantom's manubrium/body surface at parametric ``coordinates``.

    The points lie on the rendered anatomy (the rounded plate that :func:`generate_phantom`
    rasterises), so the same coordinates give corresponding points on every phantom.
    """
    params.validate()
    sternum = _Thorax(params, np.random.default_rng(params.seed)).sternum
    coordinates = np.asarray(coordinates, dtype=float)
    points = np.empty((len(coordinates), 3))
    for part_index, part in enumerate((sternum.manubrium, sternum.body)):
        rows = coordinates[:, 0] == part_index
        if rows.any():
            points[rows] = _part_surface_points(sternum, part, *coordinates[rows, 1:].T)
    return points


def _part_surface_points(sternum: _Sternum, part: _SternalPart, s, t, face) -> np.ndarray:
    if part is sternum.manubrium:
        end = sternum._edge_u(part, sternum.joint_ms, upper=True) - _JOINT_MARGIN_MM
        start_at = part.top_edge  # the top edge dips at the jugular notch: where u starts depends on v
    else:
        start = sternum._edge_u(part, sternum.joint_ms, upper=False) + _JOINT_MARGIN_MM
        end = sternum._edge_u(part, sternum.joint_xs, upper=True) - _JOINT_MARGIN_MM

        def start_at(v):
            return np.full_like(v, start)

    u = np.full_like(s, 0.5 * end)
    for _ in range(8):  # fixed point of u = start(v(u)) + s (end - start(v(u))); the top edge is flat enough
        half_width = np.where(t < 0, part.half_width["right"](u), part.half_width["left"](u))
        v = t * half_width
        u_start = start_at(v)
        u = u_start + s * (end - u_start)
    raster, u0, v0, step = part.outline_raster()
    distance = ndimage.map_coordinates(raster, [(u - u0) / step, (v - v0) / step], order=1, cval=0.0)
    half = 0.5 * part.thickness(u)
    # The rounded plate of _rounded_plate, on its boundary: |w| = h * sqrt(1 - (1 - min(d/h, 1))^2).
    w = face * half * np.sqrt(np.clip(1.0 - (1.0 - np.minimum(distance / half, 1.0)) ** 2, 0.0, None))
    frame = part.frame
    return frame.origin + u[:, None] * frame.axis_u + v[:, None] * frame.axis_v + w[:, None] * frame.axis_w


def shape_knobs(params: PhantomParameters) -> dict[str, float]:
    """The values of the sternum's shape knobs (:data:`SHAPE_KNOBS`) for a phantom's parameters."""
    return {name: float(getattr(params, name)) for name in SHAPE_KNOBS}


def sternum_label_map(params: PhantomParameters, margin_mm: float = 8.0) -> Phantom:
    """Only manubrium, body and xiphoid labels and the landmarks, on a grid around the sternum.

    The same sternum (and scan truncation) as :func:`generate_phantom`, without the CT, ribs and
    cartilage: fast enough to build shape models from many phantoms at fine spacing. ``image``
    is the label map too, as there is no CT.
    """
    params.validate()
    thorax = _Thorax(params, np.random.default_rng(params.seed))
    corners = np.concatenate([part.corners() for part in thorax.sternum.parts])
    scan_lo, scan_hi = thorax.field_of_view()
    lo = np.maximum(corners.min(axis=0) - margin_mm, scan_lo)
    hi = np.minimum(corners.max(axis=0) + margin_mm, scan_hi)
    geometry = grid_for_box(lo, hi, params.spacing, params.direction_lps)
    grid = _Grid(geometry)
    labels = np.zeros(geometry.shape_kji, dtype=np.uint8)
    scratch_hu = np.zeros(geometry.shape_kji, dtype=np.float32)
    for part in thorax.sternum.parts:
        _render_sternal_part(part, grid, scratch_hu, labels)
    volume = Volume(labels, geometry)
    return Phantom(
        image=volume,
        labels=volume,
        landmarks=_landmarks(thorax.sternum, default_protocol(), geometry),
        parameters=params,
    )
