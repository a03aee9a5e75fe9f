"""Anything that is not a sternum is called that: QA says "no sternum found" and the landmark step refuses.

Each non-thorax case is a CT built from the HU table in phantom.HU with the label map a
confused model would give: real bone labelled as manubrium and sternal body, with volumes
inside the plausible ranges, so the old volume-only QA passed all of them.
"""

from __future__ import annotations

import numpy as np
import pytest
from SternumSSMLib.anatomy import label_scheme
from SternumSSMLib.geometry import ImageGeometry, Volume
from SternumSSMLib.phantom import PhantomParameters, generate_phantom, random_parameters
from SternumSSMLib.qa import class_volumes_ml, qa_flags
from SternumSSMLib.sternum_check import NoSternumError, sternum_problems

SCHEME = label_scheme()
MANUBRIUM, BODY, XIPHOID, CARTILAGE = (SCHEME.by_name(n).value for n in SCHEME.names)
SPACING = 3.0


def grid(half_extent_mm: tuple[float, float, float]) -> tuple[ImageGeometry, tuple[np.ndarray, ...]]:
    """An axial LPS grid centred on the origin, with the x, y, z (LPS mm) of every voxel centre, [k, j, i]."""
    size = tuple(int(2 * h / SPACING) + 1 for h in half_extent_mm)
    origin = -np.array(half_extent_mm, float)
    geometry = ImageGeometry(origin_lps=origin, spacing=[SPACING] * 3, direction_lps=np.eye(3), size=size)
    k, j, i = np.indices(geometry.shape_kji)
    return geometry, tuple(origin[a] + SPACING * index for a, index in enumerate((i, j, k)))


def case(geometry: ImageGeometry, hu: np.ndarray, manubrium: np.ndarray, body: np.ndarray) -> tuple[Volume, Volume]:
    labels = np.zeros(geometry.shape_kji, np.uint8)
    labels[manubrium] = MANUBRIUM
    labels[body] = BODY
    return Volume(labels, geometry), Volume(hu.astype(np.int16), geometry)


def head_and_neck() -> tuple[Volume, Volume]:
    """A skull on a neck; the frontal bone labelled as manubrium (upper) and sternal body (lower)."""
    geometry, (x, y, z) = grid((100.0, 120.0, 180.0))
    hu = np.full(geometry.shape_kji, -1000.0)
    head = (x / 75) ** 2 + (y / 95) ** 2 + ((z - 60) / 100) ** 2
    hu[head <= 1.0] = 40.0
    skull = (head <= 1.0) & (head >= 0.8)
    hu[skull] = 850.0
    hu[(x**2 + ((y - 20) / 1.2) ** 2 <= 55**2) & (z < -20)] = 40.0  # neck
    hu[((np.abs(x) - 25) / 12) ** 2 + ((y + 70) / 12) ** 2 + ((z - 40) / 15) ** 2 <= 1] = -1000.0  # sinuses
    frontal = skull & (y < -55)
    return case(geometry, hu, frontal & (z >= 95), frontal & (z < 95) & (z >= 55))


def abdomen_and_pelvis() -> tuple[Volume, Volume]:
    """Abdomen with lumbar spine and iliac wings; two vertebral bodies labelled as manubrium and body."""
    geometry, (x, y, z) = grid((180.0, 130.0, 150.0))
    hu = np.full(geometry.shape_kji, -1000.0)
    hu[(x / 165) ** 2 + (y / 115) ** 2 <= 1.0] = 40.0
    for centre in ((-60.0, -20.0, 40.0), (70.0, 0.0, -30.0), (20.0, -50.0, 80.0)):
        hu[(x - centre[0]) ** 2 + (y - centre[1]) ** 2 + (z - centre[2]) ** 2 <= 25**2] = -1000.0  # bowel gas
    vertebrae = x**2 + (y - 55) ** 2 <= 22**2
    hu[vertebrae] = 300.0
    hu[vertebrae & (x**2 + (y - 55) ** 2 >= 19**2)] = 900.0
    hu[(np.abs(np.abs(x) - 110) < 6) & (np.abs(y - 30) < 50) & (z < -40)] = 800.0  # iliac wings
    return case(geometry, hu, vertebrae & (z >= 20) & (z < 45), vertebrae & (z >= -15) & (z < 20))


def limb() -> tuple[Volume, Volume]:
    """A thigh; the femoral shaft labelled as manubrium (upper) and sternal body (lower)."""
    geometry, (x, y, z) = grid((110.0, 110.0, 200.0))
    hu = np.full(geometry.shape_kji, -1000.0)
    hu[x**2 + y**2 <= 80**2] = 40.0
    femur = x**2 + y**2 <= 14**2
    hu[femur] = 1000.0
    hu[x**2 + y**2 <= 9**2] = -50.0  # fatty marrow
    return case(geometry, hu, femur & (z >= 40) & (z < 100), femur & (z >= -40) & (z < 40))


def thorax_without_sternum() -> tuple[Volume, Volume]:
    """The phantom thorax with its sternum replaced by soft tissue; the thoracic spine labelled instead."""
    phantom = generate_phantom(PhantomParameters(spacing=(SPACING,) * 3))
    hu = phantom.image.array.astype(float)
    labels = phantom.labels.array.copy()
    sternum = np.isin(labels, (MANUBRIUM, BODY, XIPHOID))
    hu[sternum] = 40.0
    labels[sternum] = 0
    x, y, z = phantom.labels.geometry.index_to_lps(np.argwhere(labels >= 0)[:, ::-1]).T.reshape(3, *labels.shape)
    spine = (hu >= 200.0) & (np.abs(x) < 20) & (y > 30)
    labels[spine & (z >= -45) & (z < -21)] = MANUBRIUM
    labels[spine & (z >= -100) & (z < -64)] = BODY
    return Volume(labels, phantom.labels.geometry), Volume(hu.astype(np.int16), phantom.image.geometry)


def empty_air() -> tuple[Volume, Volume]:
    """Nothing but air, with a sternum-shaped label map (the phantom's own truth)."""
    phantom = generate_phantom(PhantomParameters(spacing=(SPACING,) * 3))
    air = np.random.default_rng(0).normal(-1000.0, 20.0, phantom.image.array.shape)
    return phantom.labels, Volume(air.astype(np.int16), phantom.image.geometry)


NOT_A_STERNUM = {
    "head_and_neck": head_and_neck,
    "abdomen_and_pelvis": abdomen_and_pelvis,
    "limb": limb,
    "thorax_without_sternum": thorax_without_sternum,
    "empty_air": empty_air,
}


@pytest.fixture(scope="module", params=sorted(NOT_A_STERNUM))
def not_a_sternum(request) -> tuple[Volume, Volume]:
    return NOT_A_STERNUM[request.param]()


def test_the_confused_labels_pass_the_volume_ranges(not_a_sternum):
    """What made the old QA pass these: the labelled "bones" have plausible volumes."""
    labels, _ = not_a_sternum
    volumes = class_volumes_ml(labels)
    for name in ("Manubrium", "Sternal_body"):
        low, high = SCHEME.by_name(name).plausible_volume_ml
        assert low <= volumes[name] <= high, (name, volumes[name])


def test_qa_says_no_sternum_found(not_a_sternum):
    labels, ct = not_a_sternum
    flags = qa_flags(labels, ct=ct)
    assert [flag.code for flag in flags] == ["no_sternum"]
    assert flags[0].severity == "error"
    assert flags[0].message.startswith("No sternum found: the bone labelled as sternum ")
    assert "do not correct this result" in flags[0].message


def test_the_landmark_step_refuses_with_one_message(not_a_sternum):
    from SternumLandmarksLib.landmark_prediction import LandmarkModel

    labels, ct = not_a_sternum
    with pytest.raises(NoSternumError, match=r"^No sternum found: .* No landmarks placed") as refused:
        LandmarkModel(device="cpu").predict(labels, ct)
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize(
    ("build", "reason"),
    [
        (head_and_neck, "is not elongated"),
        (head_and_neck, "has no lungs behind it"),
        (abdomen_and_pelvis, "is not at the front of the body"),
        (limb, "is not at the front of the body"),
        (thorax_without_sternum, "has no costal cartilage joining it"),
        (thorax_without_sternum, "is not at the front of the body"),
        (empty_air, "is not bone on the CT"),
        (empty_air, "has no body around it"),
    ],
)
def test_each_case_fails_for_its_anatomical_reason(build, reason):
    labels, ct = build()
    assert any(problem.startswith(reason) for problem in sternum_problems(labels, ct)), sternum_problems(labels, ct)


def test_without_the_ct_the_labels_alone_still_catch_shape_and_cartilage():
    assert sternum_problems(head_and_neck()[0])
    assert sternum_problems(thorax_without_sternum()[0])


def test_a_manubrium_below_the_body_is_not_a_sternum():
    phantom = generate_phantom(PhantomParameters(spacing=(SPACING,) * 3))
    swapped = phantom.labels.array.copy()
    swapped[phantom.labels.array == MANUBRIUM] = BODY
    swapped[phantom.labels.array == BODY] = MANUBRIUM
    problems = sternum_problems(Volume(swapped, phantom.labels.geometry), phantom.image)
    assert len(problems) == 1
    assert problems[0].startswith("has its manubrium ") and " mm below the body" in problems[0]


@pytest.mark.parametrize("seed", range(4))
def test_phantom_thoraxes_are_sternums(seed):
    phantom = generate_phantom(random_parameters(seed, spacing=(SPACING,) * 3))
    assert sternum_problems(phantom.labels, phantom.image) == []
    assert "no_sternum" not in [flag.code for flag in qa_flags(phantom.labels, ct=phantom.image)]


def test_the_default_phantom_passes_clean():
    phantom = generate_phantom(PhantomParameters(spacing=(2.0, 2.0, 2.0)))
    assert qa_flags(phantom.labels, ct=phantom.image) == []
