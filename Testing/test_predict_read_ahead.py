"""``predict`` reads each CT in a thread while the model loads or the CT before it is segmented."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import SimpleITK as sitk
from SternumSSMLib import predict_command
from SternumSSMLib.predict_command import ReadAhead


def _write_ct(path, value: int) -> None:
    image = sitk.GetImageFromArray(np.full((4, 5, 6), value, np.int16))
    image.SetSpacing((2.0, 2.0, 2.0))
    sitk.WriteImage(image, str(path))


def test_the_cts_come_in_order_each_read_before_it_is_asked_for(tmp_path, monkeypatch):
    paths = []
    for value in range(3):
        paths.append(tmp_path / f"ct{value}.nrrd")
        _write_ct(paths[-1], 100 * value)
    started: list[str] = []
    reading = {path.name: threading.Event() for path in paths}
    real_read = predict_command.read_ct

    def recording_read(path, series_uid=None):
        started.append(path.name)
        reading[path.name].set()
        return real_read(path, series_uid)

    monkeypatch.setattr(predict_command, "read_ct", recording_read)
    with ReadAhead(paths, None) as cts:
        assert reading["ct0.nrrd"].wait(10.0)  # began before anyone iterated: it overlaps the model load
        seen = []
        for path, ct in cts:
            seen.append((path.name, int(ct.array.max())))
            if len(seen) < len(paths):  # the next one is on its way while this one is worked on
                assert reading[paths[len(seen)].name].wait(10.0)
    assert seen == [("ct0.nrrd", 0), ("ct1.nrrd", 100), ("ct2.nrrd", 200)]
    assert started == ["ct0.nrrd", "ct1.nrrd", "ct2.nrrd"]


def test_a_ct_that_cannot_be_read_fails_at_its_turn_after_the_ones_before(tmp_path):
    good, bad = tmp_path / "good.nrrd", tmp_path / "bad.nrrd"
    _write_ct(good, 7)
    bad.write_bytes(b"NRRD0004\nnot an image\n")
    yielded = []
    with ReadAhead([good, bad], None) as cts, pytest.raises(ValueError, match=r"Cannot read CT .*bad\.nrrd"):
        for path, _ in cts:
            yielded.append(path.name)
    assert yielded == ["good.nrrd"]
