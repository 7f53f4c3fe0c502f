"""What may reach the user's terminal: server strings with their control
characters escaped, the colour policy, and stage log bytes filtered of
escape sequences.

Every string the CLI prints that came from the daemon (names, reasons,
paths, messages: anything a pipeline file, a tool or an API client chose)
goes through :func:`printable`, so a clear-screen or window-title sequence
shows as ``\\x1b[2J`` instead of acting. Stage logs are the exception: they
are a tool's own output, so :class:`LogFilter` keeps their colours when
colour is on and removes every other escape sequence.
"""

from __future__ import annotations

import codecs
import os
import re
from typing import IO, Any

#: Values of ``--color``.
COLOR_MODES = ("auto", "always", "never")

# Bidirectional formatting characters reorder what is shown ("Trojan
# Source"); line and paragraph separators break lines in some terminals.
_INVISIBLE = "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u2028\u2029"
_NAMED = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}


def _escaped(char: str) -> str:
    code = ord(char)
    if char in _NAMED:
        return _NAMED[char]
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


_CONTROLS = [*map(chr, range(0x20)), "\x7f", *map(chr, range(0x80, 0xA0)), *_INVISIBLE]
_ONE_LINE = str.maketrans({c: _escaped(c) for c in _CONTROLS})
_MULTI_LINE = str.maketrans({c: _escaped(c) for c in _CONTROLS if c not in "\n\t"})


def printable(text: str, *, multiline: bool = False) -> str:
    """``text`` with every control character written out visibly: ESC as
    ``\\x1b``, a newline as ``\\n`` (kept as a newline with ``multiline``,
    like tabs), C1 controls as ``\\x9b``, bidirectional overrides as
    ``\\u202e``. Printable text, backslashes included, is unchanged, so
    applying it twice changes nothing more."""
    return text.translate(_MULTI_LINE if multiline else _ONE_LINE)


def use_color(mode: str, stream: IO[Any]) -> bool:
    """Whether to write colours to ``stream`` for ``--color MODE``:
    ``always``, ``never``, or ``auto``: only to a terminal, and not when
    ``NO_COLOR`` is set to anything but the empty string (no-color.org) or
    ``TERM`` is ``dumb``. ``--color always`` wins over ``NO_COLOR``."""
    if mode == "always":
        return True
    if mode == "never":
        return False
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty is not None and isatty())


def paint(text: str, code: str | None, color: bool) -> str:
    """``text`` in the SGR colour ``code`` ("31" is red) when ``color`` is on."""
    return f"\x1b[{code}m{text}\x1b[0m" if color and code else text


# -- stage logs ---------------------------------------------------------------

ESC = "\x1b"
# A control character that may start something to remove: C0 except tab and
# newline, DEL, C1 (as a character, or as a raw byte that is not UTF-8).
_SPECIAL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\udc80-\udc9f]")
# What ends a control string (OSC, DCS, SOS, PM, APC): BEL, ESC (of ST, or
# starting something else), ST as a C1 character or raw byte, CAN, SUB.
_STRING_END = re.compile("[\x07\x1b\x9c\udc9c\x18\x1a]")
_SGR_PARAMETERS = re.compile(r"[0-9;:]*")
_RESETS = frozenset({"", "0", "00"})
#: CSI parameters longer than this are not a colour: the sequence is dropped.
MAX_CSI_PARAMETERS = 64

_GROUND, _ESC, _CSI, _STRING, _STRING_ESC, _NF, _CR = range(7)


class LogFilter:
    """Filters stage log bytes for the user's terminal or a file, chunk by
    chunk (a sequence may span chunks).

    Removes every escape sequence (ECMA-48: CSI, OSC and other control
    strings, two-byte escapes, their 8-bit C1 forms) and every control
    character except tab and newline; a carriage return becomes a newline
    (so a progress bar cannot overwrite, or hide, what came before it).
    With ``keep_colors``, SGR sequences (colours, bold: ``ESC [ ... m``)
    stay, and :meth:`close` resets the colours if the log left them on.
    Text, valid or not as UTF-8, is otherwise unchanged.
    """

    def __init__(self, *, keep_colors: bool) -> None:
        self.keep_colors = keep_colors
        self._decoder = codecs.getincrementaldecoder("utf-8")("surrogateescape")
        self._state = _GROUND
        self._csi = ""
        self._colored = False

    def feed(self, data: bytes) -> bytes:
        """The filtered bytes of the next chunk."""
        return self._filter(self._decoder.decode(data))

    def close(self) -> bytes:
        """The filtered end of the log: what was held back for the next chunk."""
        out = self._filter(self._decoder.decode(b"", final=True))
        if self._state == _CR:
            out += b"\n"
        if self._colored:
            out += b"\x1b[0m"
        self._state, self._colored = _GROUND, False
        return out

    def _filter(self, text: str) -> bytes:
        out: list[str] = []
        i, n = 0, len(text)
        while i < n:
            state = self._state
            if state == _GROUND:
                match = _SPECIAL.search(text, i)
                if match is None:
                    out.append(text[i:])
                    break
                out.append(text[i : match.start()])
                char = match.group()
                i = match.end()
                if char == ESC:
                    self._state = _ESC
                elif char == "\r":
                    self._state = _CR
                elif "\x80" <= char <= "\x9f" or "\udc80" <= char <= "\udc9f":
                    # an 8-bit C1 control is ESC and the matching 7-bit byte
                    self._escape(chr((ord(char) & 0xFF) - 0x40))
                # other controls are dropped
            elif state == _CR:
                out.append("\n")
                self._state = _GROUND
                if text[i] == "\n":
                    i += 1
            elif state == _ESC:
                if self._escape(text[i]):
                    i += 1
            elif state == _CSI:
                char = text[i]
                if "\x20" <= char <= "\x3f":
                    if len(self._csi) <= MAX_CSI_PARAMETERS:  # longer is dropped anyway
                        self._csi += char
                    i += 1
                elif "\x40" <= char <= "\x7e":
                    i += 1
                    self._end_csi(char, out)
                else:  # not part of a sequence: abort it, keep the character
                    self._state = _GROUND
            elif state == _STRING_ESC:
                # ESC \ (ST) ends the string; ESC and anything else starts anew
                if text[i] == "\\":
                    self._state = _GROUND
                    i += 1
                else:
                    self._state = _ESC
            elif state == _STRING:
                match = _STRING_END.search(text, i)
                if match is None:
                    break
                i = match.end()
                self._state = _STRING_ESC if match.group() == ESC else _GROUND
            else:  # _NF: ESC, intermediate bytes, then one final byte
                char = text[i]
                if "\x20" <= char <= "\x2f":
                    i += 1
                else:
                    self._state = _GROUND
                    i += "\x30" <= char <= "\x7e"
        return "".join(out).encode("utf-8", "surrogateescape")

    def _escape(self, char: str) -> bool:
        """Go on from ESC with ``char``; False when ``char`` is not part of
        the sequence (then it is read again, as text)."""
        if char == "[":
            self._state, self._csi = _CSI, ""
        elif char in "]PX^_":
            self._state = _STRING
        elif "\x20" <= char <= "\x2f":
            self._state = _NF
        else:
            self._state = _GROUND
            return "\x30" <= char <= "\x7e"
        return True

    def _end_csi(self, final: str, out: list[str]) -> None:
        self._state = _GROUND
        parameters, self._csi = self._csi, ""
        if (
            self.keep_colors
            and final == "m"
            and len(parameters) <= MAX_CSI_PARAMETERS
            and _SGR_PARAMETERS.fullmatch(parameters)
        ):
            out.append(f"{ESC}[{parameters}m")
            self._colored = parameters not in _RESETS
