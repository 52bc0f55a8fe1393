"""A small terminal model: raw PTY bytes in, readable text and hyperlinks out.

The CLIs draw their login screens with escape sequences (colours, cursor
moves, the alternate screen, OSC 8 hyperlinks). We need the *text* a person
would read, to find the login URL, the user code and the "paste code" prompt.
A full screen emulator (pyte) is not in a bare guest image, and we do not need
the screen's geometry, only the reading order, so this model keeps a
transcript and interprets the sequences that change what a reader sees:

- Cursor moves are *spaces*, never deleted: Ink-based TUIs separate words with
  ``ESC[nG``/``ESC[nC`` instead of spaces, so deleting them glues words and
  URLs together.
- Vertical moves and absolute positioning start a new line.
- A line that fills the terminal width and keeps going is a soft wrap: it is
  joined with the next one, so a URL the terminal wrapped stays whole.
- OSC 8 hyperlinks keep their target in ``links``: Claude prints a short link
  text while the target holds the full URL.
- Everything else (SGR colours, erase, modes, other OSC) does not change the
  reading and is dropped.

Bytes are fed as they come; a sequence or UTF-8 character cut by a read is
held until the rest arrives. Stdlib only: this runs inside the guest image.
"""

from __future__ import annotations

import codecs
import re

_ESC = "\x1b"
_BEL = "\x07"

# CSI: ESC [ params intermediates final. Params may start with ?, >, <, =.
_CSI = re.compile(r"\x1b\[([0-?]*)([ -/]*)([@-~])")
# OSC: ESC ] ... terminated by BEL or ST (ESC \).
_OSC = re.compile(r"\x1b\](.*?)(?:\x07|\x1b\\)", re.DOTALL)
# Other two/three-byte escapes (charset selection, keypad modes, save/restore).
_ESC_OTHER = re.compile(r"\x1b(?:[()*+][0-~]|[#%][0-~]|[0-~])")

# Keep transcripts bounded: a login screen is a few KB; a spinner left running
# for 15 minutes must not grow memory without end.
MAX_TRANSCRIPT = 256 * 1024


class Transcript:
    """Feed raw terminal output; read ``text`` (reading order) and ``links``."""

    def __init__(self, columns: int = 80) -> None:
        self.columns = columns
        self.links: list[str] = []
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending = ""  # an escape sequence cut by the end of a read
        self._lines: list[str] = [""]
        self._col = 0

    @property
    def text(self) -> str:
        return "\n".join(self._lines)

    def feed(self, data: bytes | str) -> None:
        chunk = self._decoder.decode(data) if isinstance(data, bytes) else data
        buf = self._pending + chunk
        self._pending = ""
        i = 0
        n = len(buf)
        while i < n:
            ch = buf[i]
            if ch == _ESC:
                consumed = self._escape(buf, i)
                if consumed == 0:  # incomplete: wait for more bytes
                    self._pending = buf[i:]
                    break
                i += consumed
                continue
            if ch == "\n":
                self._newline()
            elif ch == "\r":
                # CR then LF is a plain newline; a lone CR redraws the line
                # (spinners). Starting a new line keeps every frame readable.
                if i + 1 < n and buf[i + 1] == "\n":
                    pass
                elif i + 1 == n:
                    self._pending = "\r"  # decide when the next byte arrives
                    break
                else:
                    self._newline()
            elif ch == "\t":
                self._put(" " * (8 - self._col % 8))
            elif ch == "\b":
                if self._col > 0 and self._lines[-1]:
                    self._lines[-1] = self._lines[-1][:-1]
                    self._col -= 1
            elif ch >= " " and ch != "\x7f":
                self._put(ch)
            # other C0 controls (BEL, SO/SI, ...) do not print
            i += 1
        self._trim()

    # -- internals -----------------------------------------------------------

    def _put(self, text: str) -> None:
        for ch in text:
            if self._col >= self.columns:
                # Auto-wrap: the terminal continues on the next row, but the
                # reader's line goes on (a wrapped URL stays one word).
                self._col = 0
            self._lines[-1] += ch
            self._col += 1

    def _newline(self) -> None:
        self._lines.append("")
        self._col = 0

    def _space_to(self, column: int) -> None:
        if column > self._col:
            self._lines[-1] += " " * (column - self._col)
            self._col = column
        elif self._lines[-1] and not self._lines[-1].endswith(" "):
            # Moving left/back over text: the next text is a new word.
            self._lines[-1] += " "

    def _escape(self, buf: str, i: int) -> int:
        """Interpret the sequence at ``buf[i]``; return its length, 0 if incomplete."""
        if i + 1 >= len(buf):
            return 0
        kind = buf[i + 1]
        if kind == "[":
            m = _CSI.match(buf, i)
            if m is None:
                # Incomplete if only parameter bytes follow; otherwise garbage.
                tail = buf[i + 2 :]
                return 0 if re.fullmatch(r"[0-?]*[ -/]*", tail) else 2
            self._csi(m.group(1), m.group(3))
            return m.end() - i
        if kind == "]":
            m = _OSC.match(buf, i)
            if m is None:
                return 0 if len(buf) - i < 8192 else 2
            self._osc(m.group(1))
            return m.end() - i
        if kind in "PX^_":  # DCS/SOS/PM/APC strings: skip to ST
            end = buf.find(_ESC + "\\", i + 2)
            return 0 if end == -1 else end + 2 - i
        m = _ESC_OTHER.match(buf, i)
        return 2 if m is None else m.end() - i

    def _csi(self, params: str, final: str) -> None:
        nums = [int(p) if p.isdigit() else 0 for p in params.lstrip("?>=<").split(";")]
        first = nums[0] if nums else 0
        if final in "CI":  # cursor forward / tab forward
            self._space_to(self._col + max(first, 1))
        elif final in "G`":  # cursor horizontal absolute (1-based)
            self._space_to(max(first, 1) - 1)
        elif final in "ABEFHfdTSL":  # vertical moves, absolute position, scroll
            if self._lines[-1].strip():
                self._newline()
            if final in "Hf" and len(nums) > 1:
                self._space_to(max(nums[1], 1) - 1)
        elif final in "DZ" and self._lines[-1] and not self._lines[-1].endswith(" "):
            self._lines[-1] += " "  # cursor back: what follows is a new word
        elif (
            final == "h"
            and params.startswith("?")
            and first in (47, 1047, 1049)
            and self._lines[-1].strip()
        ):
            self._newline()  # alternate screen: a new page of reading
        # m (colour), K/J (erase), l/h (modes), others: no effect on reading.

    def _osc(self, body: str) -> None:
        if body.startswith("8;"):
            # OSC 8 ; params ; URI -- an empty URI closes the link.
            _, _, uri = body[2:].partition(";")
            if uri and (not self.links or self.links[-1] != uri):
                self.links.append(uri)

    def _trim(self) -> None:
        total = sum(len(line) + 1 for line in self._lines)
        while total > MAX_TRANSCRIPT and len(self._lines) > 1:
            total -= len(self._lines.pop(0)) + 1
        if len(self.links) > 64:
            del self.links[:-64]
