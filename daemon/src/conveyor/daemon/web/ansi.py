"""Stage log bytes to HTML: text escaped, ANSI colours as CSS classes.

:class:`AnsiToHtml` converts a log one chunk at a time, as it streams: a
UTF-8 character or an escape sequence cut by a chunk's end is completed by
the next chunk, and every chunk's HTML stands on its own (its spans are
closed, the style carries over to the next one). Select Graphic Rendition
sequences (``ESC [ ... m``: the 16 colours, the 256-colour palette, 24-bit
colours rounded to it, bold, faint, italic, underline) become classes of
:func:`stylesheet`; every other escape sequence (cursor moves, erasing,
hyperlinks, window titles) and control character is dropped, and nothing a
log holds is ever markup.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass, replace

from conveyor.daemon.web.html import Markup, escape

__all__ = ["AnsiToHtml", "stylesheet"]

#: A complete escape sequence: CSI (group 1 its parameters, group 2 its
#: final byte), OSC (ended by BEL or ST), or another one (``ESC =``,
#: ``ESC 7``, ``ESC ( B``: intermediate bytes, then a final byte).
_ESCAPE = re.compile(
    r"\x1b(?:\[([0-?]*)[ -/]*([@-~])|\][^\x07\x1b]*(?:\x07|\x1b\\)|[ -/]*[0-Z\\^-~])"
)
#: The start of an escape sequence that the next chunk may complete.
_PARTIAL = re.compile(r"\x1b(?:\[[0-?]*[ -/]*|\][^\x07\x1b]*\x1b?|[ -/]*)?")
#: Longest partial sequence held back; a longer one is dropped.
MAX_PARTIAL = 256
#: Control characters other than tab and newline (a lone carriage return
#: too: progress bars that redraw a line show as one line of text).
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1a\x1c-\x1f\x7f]")


@dataclass(frozen=True)
class Style:
    fg: int | None = None
    bg: int | None = None
    bold: bool = False
    faint: bool = False
    italic: bool = False
    underline: bool = False

    def classes(self) -> str:
        names = []
        if self.fg is not None:
            names.append(f"a-f{self.fg}")
        if self.bg is not None:
            names.append(f"a-b{self.bg}")
        for flag, name in (
            (self.bold, "a-bo"),
            (self.faint, "a-fa"),
            (self.italic, "a-it"),
            (self.underline, "a-un"),
        ):
            if flag:
                names.append(name)
        return " ".join(names)


PLAIN = Style()


def _rgb_index(red: int, green: int, blue: int) -> int:
    """The xterm 256-colour palette entry nearest to a 24-bit colour."""
    if red == green == blue:
        if red < 8:
            return 16
        if red > 248:
            return 231
        return 232 + round((red - 8) / 247 * 24)

    def level(value: int) -> int:
        return 0 if value < 48 else 1 if value < 115 else (value - 35) // 40

    return 16 + 36 * level(red) + 6 * level(green) + level(blue)


def _number(text: str) -> int:
    return int(text) if text.isdigit() else 0


def _extended(values: list[int]) -> tuple[int | None, int]:
    """A ``38;5;N`` / ``38;2;R;G;B`` colour after its 38 (or 48): the
    palette index (None when malformed) and how many values it used."""
    if len(values) >= 2 and values[0] == 5:
        return (values[1] if values[1] < 256 else None), 2
    if len(values) >= 4 and values[0] == 2:
        red, green, blue = (min(v, 255) for v in values[1:4])
        return _rgb_index(red, green, blue), 4
    return None, len(values)


def apply_sgr(style: Style, parameters: str) -> Style:
    """``style`` after the SGR sequence with these parameters (``1;31``)."""
    parts = parameters.split(";") if parameters else ["0"]
    index = 0
    while index < len(parts):
        part = parts[index]
        index += 1
        if ":" in part:  # 38:2::R:G:B or 38:5:N: one colour in one part
            numbers = [_number(x) for x in part.split(":")]
            rest = numbers[1:]
            if rest and rest[0] == 2 and len(rest) == 5:
                rest = [2, *rest[2:]]  # without the colour-space id
            if numbers[0] in (38, 48):
                colour, _ = _extended(rest)
                style = _colour(style, numbers[0], colour)
            continue
        code = _number(part)
        if code in (38, 48):
            colour, used = _extended([_number(x) for x in parts[index : index + 4]])
            index += used
            style = _colour(style, code, colour)
            continue
        style = _sgr_code(style, code)
    return style


def _colour(style: Style, code: int, colour: int | None) -> Style:
    if colour is None:
        return style
    return replace(style, fg=colour) if code == 38 else replace(style, bg=colour)


def _sgr_code(style: Style, code: int) -> Style:
    if code == 0:
        return PLAIN
    if code == 1:
        return replace(style, bold=True)
    if code == 2:
        return replace(style, faint=True)
    if code == 3:
        return replace(style, italic=True)
    if code == 4:
        return replace(style, underline=True)
    if code == 22:
        return replace(style, bold=False, faint=False)
    if code == 23:
        return replace(style, italic=False)
    if code == 24:
        return replace(style, underline=False)
    if 30 <= code <= 37:
        return replace(style, fg=code - 30)
    if code == 39:
        return replace(style, fg=None)
    if 40 <= code <= 47:
        return replace(style, bg=code - 40)
    if code == 49:
        return replace(style, bg=None)
    if 90 <= code <= 97:
        return replace(style, fg=code - 90 + 8)
    if 100 <= code <= 107:
        return replace(style, bg=code - 100 + 8)
    return style  # blink, inverse, fonts...: not shown


class AnsiToHtml:
    """Converts one log, chunk by chunk, to HTML for a ``<pre>``.

    ``skip_to_newline``: drop everything up to and including the first
    newline (a reader that starts in the middle of a log starts at a line).
    """

    def __init__(self, *, skip_to_newline: bool = False) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._partial = ""
        self._style = PLAIN
        self._skip = skip_to_newline
        #: Chunks were consumed by the skip to the first newline.
        self.skipping = skip_to_newline

    def feed(self, data: bytes, *, final: bool = False) -> Markup:
        """The HTML of ``data``; ``final`` at the end of the log."""
        text = self._partial + self._decoder.decode(data, final)
        self._partial = ""
        if self._skip:
            newline = text.find("\n")
            if newline < 0:
                return Markup("")
            text = text[newline + 1 :]
            self._skip = self.skipping = False
        out: list[str] = []
        position = 0
        while True:
            start = text.find("\x1b", position)
            if start < 0:
                self._text(out, text[position:])
                break
            self._text(out, text[position:start])
            match = _ESCAPE.match(text, start)
            if match is None:
                rest = text[start:]
                if not final and len(rest) <= MAX_PARTIAL and _PARTIAL.fullmatch(rest):
                    self._partial = rest
                    break
                position = start + 1  # a lone ESC: dropped
                continue
            if match.group(2) == "m":
                self._style = apply_sgr(self._style, match.group(1))
            position = match.end()
        return Markup("".join(out))

    def _text(self, out: list[str], text: str) -> None:
        text = _CONTROL.sub("", text.replace("\r\n", "\n"))
        if not text:
            return
        classes = self._style.classes()
        if classes:
            out.append(f'<span class="{classes}">{escape(text)}</span>')
        else:
            out.append(escape(text))


# -- the palette ---------------------------------------------------------------------

#: The 16 standard colours, readable on the log's dark background.
_BASE16 = [
    "#2e3436", "#ef5350", "#8bc34a", "#e5c07b", "#61afef", "#c678dd", "#56b6c2", "#d0d0d0",
    "#767676", "#ff6e6e", "#b5e07a", "#ffd580", "#8ec9ff", "#e09ef5", "#7fd6e0", "#ffffff",
]  # fmt: skip


def palette() -> list[str]:
    """The 256 colours as ``#rrggbb``: the 16 above, the 6x6x6 cube, 24 greys."""
    colours = list(_BASE16)
    steps = [0, 95, 135, 175, 215, 255]
    for red in steps:
        for green in steps:
            for blue in steps:
                colours.append(f"#{red:02x}{green:02x}{blue:02x}")
    for index in range(24):
        grey = 8 + 10 * index
        colours.append(f"#{grey:02x}{grey:02x}{grey:02x}")
    return colours


def stylesheet() -> str:
    """The CSS of the classes :class:`AnsiToHtml` writes."""
    rules = [
        ".a-bo{font-weight:bold}",
        ".a-fa{opacity:.7}",
        ".a-it{font-style:italic}",
        ".a-un{text-decoration:underline}",
    ]
    for index, colour in enumerate(palette()):
        rules.append(f".a-f{index}{{color:{colour}}}")
        rules.append(f".a-b{index}{{background-color:{colour}}}")
    return "\n".join(rules) + "\n"
