"""The build's closing line says where its time went, phase by phase (qx_build.build.Phases)."""

from __future__ import annotations

import time

import pytest

from qx_build.build import Phases


def test_phases_are_timed_in_order_and_the_rest_is_what_no_phase_took() -> None:
    phase = Phases()
    with phase("mkosi"):
        time.sleep(0.05)
    with phase("ISO"):
        pass
    (name1, s1), (name2, s2) = phase.spent
    assert (name1, name2) == ("mkosi", "ISO") and s1 >= 0.05 and s2 < s1
    assert phase.summary(10.0).startswith("mkosi 0 s, ISO 0 s, the rest 10 s")


def test_a_phase_that_fails_is_still_timed() -> None:
    phase = Phases()
    with pytest.raises(RuntimeError), phase("live ESP"):
        raise RuntimeError("ukify failed")
    assert [n for n, _ in phase.spent] == ["live ESP"]
    assert phase.summary(0.0).endswith("the rest 0 s")   # never negative
