"""Rendering a page in headless Chromium (a test helper, not a test): the DOM after load, the
console messages, and optionally a screenshot. No Python dependency: Chromium's own
``--dump-dom`` and ``--screenshot``.

What Chromium prints (checked with Debian's chromium 150 on a page that calls console.log and
console.error, throws, and rejects a promise): with ``--enable-logging=stderr --v=0`` every
console message becomes one stderr record ``[pid:tid:date/time:INFO:CONSOLE:<line>] "<text>",
source: <url> (<line>)`` (older builds: ``INFO:CONSOLE(<line>)]``), at level INFO whatever the
message's level; an uncaught exception reads ``"Uncaught Error: ..."`` and an unhandled
rejection ``"Uncaught (in promise) ..."``. So the level of a console message cannot be read off
the log: ``Rendered.console`` holds every message, ``uncaught`` those Chromium marks uncaught,
and the report page itself records ``console.error`` calls and errors in its ``data-errors``
(``harness.html_report``). A resource that fails to load prints nothing; the page records it.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

__all__ = ["CHROMIUMS", "Rendered", "find_chromium", "render"]

CHROMIUMS = ("chromium", "chromium-browser", "google-chrome")
TIMEOUT = 180   # seconds: a guard against a hung browser, not a speed assertion
_CONSOLE = re.compile(r'^\[[^\]]*:INFO:CONSOLE[:(][^\]]*\] "(.*?)", source: (\S*) \((\d+)\)$',
                      re.S | re.M)


def find_chromium() -> str | None:
    """The path of the first Chromium on PATH, or None."""
    for name in CHROMIUMS:
        path = shutil.which(name)
        if path:
            return path
    return None


@dataclass(frozen=True)
class Rendered:
    """``dom``: the document after load; ``data``: the body's ``data-*`` attributes (names
    without ``data-``); ``console``: every console message, as ``text (source:line)``;
    ``uncaught``: those that are uncaught exceptions or rejections."""

    dom: str
    data: Mapping[str, str]
    console: tuple[str, ...]
    uncaught: tuple[str, ...]
    stderr: str
    screenshot: Path | None = None

    def _int(self, name: str) -> int | None:
        value = self.data.get(name)
        return int(value) if value is not None and value.isdigit() else None

    @property
    def plots_expected(self) -> int | None:
        return self._int("plots-expected")

    @property
    def plots_rendered(self) -> int | None:
        return self._int("plots-rendered")

    @property
    def page_errors(self) -> list[str]:
        """What the page recorded (``data-errors``) and what Chromium logged as uncaught."""
        recorded = json.loads(self.data.get("errors", "[]"))
        return [str(e) for e in recorded] + list(self.uncaught)

    @property
    def network(self) -> list[str]:
        """Resources the page loaded from anywhere but itself (``data-network``)."""
        return [str(u) for u in json.loads(self.data.get("network", "[]"))]


class _Body(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.data: dict[str, str] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "body":
            self.data = {k[5:]: v or "" for k, v in attrs if k.startswith("data-")}


def _run(chromium: str, url: str, extra: list[str], profile: str) -> subprocess.CompletedProcess:
    # a profile of its own per run: two test workers never share one; and no name resolves,
    # so a page that reaches for the network cannot get it
    args = [chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
            f"--user-data-dir={profile}", "--host-resolver-rules=MAP * ~NOTFOUND",
            "--virtual-time-budget=10000", "--enable-logging=stderr", "--v=0", *extra, url]
    return subprocess.run(args, capture_output=True, text=True, timeout=TIMEOUT, check=False)


def render(html_path: Path | str, screenshot: Path | str | None = None,
           chromium: str | None = None) -> Rendered:
    """Load ``html_path`` from disk in headless Chromium; dump its DOM after load (virtual time
    lets the page's timers run), and with ``screenshot`` also save a 1280x4000 PNG there."""
    chromium = chromium or find_chromium()
    if chromium is None:
        raise FileNotFoundError(f"no Chromium on PATH (looked for {', '.join(CHROMIUMS)}); "
                                "install Debian's `chromium` (apt-get install chromium)")
    url = Path(html_path).resolve().as_uri()
    with tempfile.TemporaryDirectory(prefix="crashgate-chromium-") as profile:
        got = _run(chromium, url, ["--dump-dom"], profile)
        if got.returncode != 0 or "<body" not in got.stdout:
            raise RuntimeError(f"chromium exited {got.returncode} rendering {url}; its stderr "
                               f"ends: {got.stderr[-2000:]}")
        shot = None
        if screenshot is not None:
            shot = Path(screenshot).resolve()
            _run(chromium, url, [f"--screenshot={shot}", "--window-size=1280,4000",
                                 "--hide-scrollbars"], profile)
            if not shot.exists():
                raise RuntimeError(f"chromium wrote no screenshot at {shot}")
    body = _Body()
    body.feed(got.stdout)
    messages = [(m.group(1), f"{m.group(2)}:{m.group(3)}")
                for m in _CONSOLE.finditer(got.stderr)]
    return Rendered(dom=got.stdout, data=body.data,
                    console=tuple(f"{text} ({where})" for text, where in messages),
                    uncaught=tuple(f"{text} ({where})" for text, where in messages
                                   if text.startswith("Uncaught")),
                    stderr=got.stderr, screenshot=shot)
