"""The Linux-console rendering of the snapshots: colours downgraded as Textual's driver does for a
16-colour terminal, then drawn by console_codes(4)'s rules."""

from __future__ import annotations

from rich.color import Color
from rich.style import Style

from qx_console.screenshot import LINUX_PALETTE, LINUX_THEME, linux_style


def idx(style: Style) -> tuple[int | None, int | None]:
    return style.color.number, style.bgcolor.number  # type: ignore[union-attr]


def test_truecolour_goes_to_the_nearest_of_the_16() -> None:
    assert idx(linux_style(Style(color="#ffffff", bgcolor="#0000ff"))) == (15, 4)  # Textual's white on blue
    assert idx(linux_style(Style(color="#008000", bgcolor="#000000"))) == (2, 0)  # CSS green


def test_bright_background_is_not_supported() -> None:
    """SGR 100-107 are 40-47 on the Linux console: yellow behind text shows as brown, white as grey."""
    assert idx(linux_style(Style(color="#000000", bgcolor="#ffff00"))) == (0, 3)
    assert idx(linux_style(Style(color="#000000", bgcolor="#ffffff"))) == (0, 7)


def test_bold_is_a_bright_foreground() -> None:
    assert idx(linux_style(Style(color="#000000", bgcolor="#aaaaaa", bold=True))) == (8, 7)  # dark grey
    assert idx(linux_style(Style(color=Color.from_ansi(1), bold=True))) == (9, 0)
    assert not linux_style(Style(color="#ffffff", bold=True)).bold  # no heavier font on a console


def test_reverse_keeps_the_brightness_on_the_foreground() -> None:
    assert idx(linux_style(Style(color="#000000", bgcolor="#ffff00", bold=True, reverse=True))) == (11, 0)
    assert idx(linux_style(Style(color="#ffffff", bgcolor="#0000aa", reverse=True))) == (12, 7)


def test_default_colours_and_dim() -> None:
    assert idx(linux_style(None)) == (7, 0)
    assert idx(linux_style(Style(color="#aaaaaa", dim=True))) == (8, 0)


def test_theme_is_the_kernel_palette() -> None:
    assert LINUX_THEME.ansi_colors[3].hex == "#aa5500" and LINUX_THEME.ansi_colors[11].hex == "#ffff55"
    assert [c.hex for c in LINUX_THEME.ansi_colors] == ["#%02x%02x%02x" % rgb for rgb in LINUX_PALETTE]
    assert LINUX_THEME.background_color.hex == "#000000" and LINUX_THEME.foreground_color.hex == "#aaaaaa"
