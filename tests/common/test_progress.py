"""qx_common.progress: the one progress bar of qx-build, qx-update and qx-release, in each of its modes.

The text lines are for people and logs (one per 10 % off a terminal); machine-readable progress is an
observer's business (qx-update apply --json prints its own ProgressEvent lines from one).
"""

from __future__ import annotations

import io

import pytest

from qx_common import progress
from qx_common.progress import Progress

MiB = 1024**2


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def _run(bar: Progress, total: int, step: int) -> None:
    for _ in range(total // step):
        bar.update(step)
    bar.update(total % step)
    bar.close()


def test_off_a_terminal_one_line_per_ten_percent_then_a_summary() -> None:
    out = io.StringIO()
    _run(Progress("writing slot", 10 * MiB, stream=out), 10 * MiB, MiB // 4)
    lines = out.getvalue().splitlines()
    assert lines[:10] == [f"  writing slot: {p} % ({p / 10:.1f} MiB/10.0 MiB)" for p in range(10, 101, 10)]
    assert len(lines) == 11 and lines[10].startswith("  writing slot: 10.0 MiB in ") and lines[10].endswith(" MiB/s)")


def test_on_a_terminal_the_line_is_redrawn_in_place() -> None:
    out = Tty()
    _run(Progress("hashing root", 4 * MiB, stream=out), 4 * MiB, MiB)
    text = out.getvalue()
    assert text.count("\r") == 5 and text.count("\n") == 2  # five redraws (the last adds 0 bytes), a summary
    assert "\r  hashing root [" + "#" * 30 + "] 100.0 % 4.0 MiB/4.0 MiB\n" in text


def test_a_resumed_bar_does_not_repeat_what_was_already_done() -> None:
    out = io.StringIO()
    bar = Progress("downloading root", 100, start=55, stream=out)
    bar.update(10)
    bar.update(35)
    assert [line.split(":")[1].split("(")[0].strip() for line in out.getvalue().splitlines()] == ["60 %", "100 %"]


def test_off_mode_and_disabled_bars_draw_nothing(monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    out = io.StringIO()
    _run(Progress("a", 100, enabled=False, stream=out), 100, 10)
    monkeypatch.setattr(progress, "MODE", "off")
    _run(Progress("b", 100, stream=out), 100, 10)
    assert out.getvalue() == "" and capsys.readouterr() == ("", "")


def test_an_observer_gets_every_update_and_nothing_is_drawn(capsys: pytest.CaptureFixture[str]) -> None:
    seen: list[tuple[str, int, int]] = []
    out = io.StringIO()
    _run(Progress("writing slot", 10, enabled=lambda *a: seen.append(a), stream=out), 10, 4)
    assert seen == [("writing slot", 4, 10), ("writing slot", 8, 10), ("writing slot", 10, 10)]
    assert out.getvalue() == "" and capsys.readouterr() == ("", "")
