"""A real headless Chromium for the page's tests, and what a person would look at: the DOM it
rendered and a screenshot (PNG decoded with zlib and struct, no imaging library).

Debian's `chromium` package; scripts/test installs it when missing. As root Chromium needs
--no-sandbox. Each call gets its own profile directory, so runs never share state.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import zlib
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import pytest

VOID = {"meta", "br", "img", "input", "link", "hr", "area", "base", "col", "embed", "source", "track", "wbr"}


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("chromium is not installed: scripts/test installs it (Debian's `chromium` package)")
    return path


def _run(args: list[str], profile: Path) -> str:
    argv = [
        chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
        "--disable-extensions", "--disable-dev-shm-usage", f"--user-data-dir={profile}", *args,
    ]  # fmt: skip
    out = subprocess.run(argv, capture_output=True, text=True, timeout=90, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def dump_dom(url: str, tmp: Path) -> str:
    """The DOM Chromium built from `url`, serialized after the page loaded."""
    return _run(["--dump-dom", url], tmp / "profile-dom")


def screenshot(url: str, png: Path, size: tuple[int, int] = (1200, 900)) -> bytes:
    """A screenshot of `url` at `size`, saved at `png`; its bytes."""
    _run([f"--screenshot={png}", f"--window-size={size[0]},{size[1]}", url], png.parent / "profile-shot")
    return png.read_bytes()


# ---- the DOM -----------------------------------------------------------------------------------


@dataclass
class Element:
    tag: str
    attrs: dict[str, str]
    text: str = ""
    children: list[Element] = field(default_factory=list)

    @property
    def classes(self) -> set[str]:
        return set(self.attrs.get("class", "").split())


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.all: list[Element] = []
        self._open: list[Element] = []

    def _add(self, tag: str, attrs: list[tuple[str, str | None]]) -> Element:
        el = Element(tag, {k: v or "" for k, v in attrs})
        self.all.append(el)
        if self._open:
            self._open[-1].children.append(el)
        return el

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        el = self._add(tag, attrs)
        if tag not in VOID:
            self._open.append(el)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._add(tag, attrs)

    def handle_endtag(self, tag: str) -> None:
        for i in range(len(self._open) - 1, -1, -1):
            if self._open[i].tag == tag:
                del self._open[i:]
                return

    def handle_data(self, data: str) -> None:
        for el in self._open:
            el.text += data


def elements(html: str) -> list[Element]:
    """Every element of `html`, each with the text it contains."""
    parser = _Collector()
    parser.feed(html)
    parser.close()
    return parser.all


def by_id(els: list[Element], id_: str) -> Element:
    found = [e for e in els if e.attrs.get("id") == id_]
    assert len(found) == 1, f"expected one element with id {id_!r}, found {len(found)}"
    return found[0]


def by_class(els: list[Element], *classes: str) -> list[Element]:
    return [e for e in els if set(classes) <= e.classes]


# ---- the screenshot ----------------------------------------------------------------------------


def decode_png(data: bytes) -> tuple[int, int, list[bytes]]:
    """(width, height, rows of RGBA bytes) of an 8-bit RGB or RGBA PNG (what Chromium writes)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, width, height, channels = 8, b"", 0, 0, 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            width, height, depth, colour = struct.unpack(">IIBB", body[:10])
            assert depth == 8 and colour in (2, 6), f"unexpected PNG depth {depth} colour type {colour}"
            channels = 4 if colour == 6 else 3
        elif kind == b"IDAT":
            idat += body
        elif kind == b"IEND":
            break
    raw = zlib.decompress(idat)
    stride = width * channels
    rows: list[bytes] = []
    prev = bytearray(stride)
    for y in range(height):
        f = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        _unfilter(f, line, prev, channels)
        rows.append(_rgba(bytes(line), channels))
        prev = line
    return width, height, rows


def _unfilter(f: int, line: bytearray, prev: bytearray, bpp: int) -> None:
    """PNG's five scanline filters, undone in place (https://www.w3.org/TR/png/#9Filters)."""
    if f == 0:
        return
    for i in range(len(line)):
        a = line[i - bpp] if i >= bpp else 0
        b = prev[i]
        if f == 1:
            line[i] = (line[i] + a) & 0xFF
        elif f == 2:
            line[i] = (line[i] + b) & 0xFF
        elif f == 3:
            line[i] = (line[i] + (a + b) // 2) & 0xFF
        elif f == 4:
            c = prev[i - bpp] if i >= bpp else 0
            p = a + b - c
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        else:
            raise AssertionError(f"unknown PNG filter {f}")


def _rgba(line: bytes, channels: int) -> bytes:
    if channels == 4:
        return line
    out = bytearray()
    for i in range(0, len(line), 3):
        out += line[i : i + 3] + b"\xff"
    return bytes(out)


def red_pixels(rows: list[bytes]) -> int:
    """Pixels a person calls red: strong red, little green and blue."""
    n = 0
    for row in rows:
        for i in range(0, len(row), 4):
            r, g, b = row[i], row[i + 1], row[i + 2]
            if r > 170 and g < 90 and b < 90:
                n += 1
    return n


def distinct_colours(rows: list[bytes], step: int = 7) -> int:
    """How many colours a sample of the pixels holds: a blank or one-colour image has one or two."""
    seen = set()
    for row in rows[::step]:
        for i in range(0, len(row), 4 * step):
            seen.add(row[i : i + 3])
    return len(seen)
