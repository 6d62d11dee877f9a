"""The HTML reports open in a real browser: headless Chromium loads each page from disk with no
network, every plot renders, and the page logs no error. The negative tests show the check can
fail: a plot that never renders, a broken script, a console error and a remote resource are
each reported. Skipped only when no Chromium is installed (``.ci/run`` installs Debian's)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import report_samples as samples
from browser import CHROMIUMS, Rendered, find_chromium, render

from crashgate.harness.html_report import certificate_html, gate_html, soak_html

CHROMIUM = find_chromium()
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason=f"no Chromium on PATH (looked for {', '.join(CHROMIUMS)}): "
    "install Debian's `chromium` (apt-get install chromium; .ci/run does where it can)")

PAGES: dict[str, Callable[[], str]] = {
    "certificate": lambda: certificate_html(samples.certificate()),
    "gate": lambda: gate_html(*samples.gate()),
    "soak": lambda: soak_html(samples.soak()),
}


def _open(tmp_path: Path, html: str, screenshot: Path | None = None) -> Rendered:
    path = tmp_path / "report.html"
    path.write_text(html)
    return render(path, screenshot=screenshot)


@pytest.mark.parametrize("name", sorted(PAGES))
def test_the_report_renders_every_plot_and_logs_no_error(tmp_path: Path, name: str) -> None:
    got = _open(tmp_path, PAGES[name]())
    assert got.data.get("checked") == "1", "the page's own check never finished"
    assert got.plots_expected is not None and got.plots_expected > 0
    assert got.plots_rendered == got.plots_expected, got.data
    assert got.page_errors == []
    # Chromium logs console messages without their level; our pages log nothing at all
    assert got.console == ()
    assert got.network == []
    assert "pwned" not in got.data   # escaped report text never ran as a script


def test_a_screenshot_is_taken(tmp_path: Path) -> None:
    shot = tmp_path / "soak.png"
    got = _open(tmp_path, PAGES["soak"](), screenshot=shot)
    assert got.screenshot == shot.resolve()
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000


def test_a_plot_that_never_renders_is_reported(tmp_path: Path) -> None:
    html = PAGES["certificate"]()
    guard = 'if (document.getElementById("plot-2"))'
    assert html.count(guard) == 1
    got = _open(tmp_path, html.replace(guard, "if (false)"))
    assert got.plots_expected is not None and got.plots_expected >= 2
    assert got.plots_rendered == got.plots_expected - 1
    assert got.page_errors == []   # silent: only the count shows it


def test_errors_console_errors_and_remote_loads_are_reported(tmp_path: Path) -> None:
    html = PAGES["gate"]().replace("</body>", """
<img src="https://example.invalid/pixel.png">
<script>console.error("deliberate console error");</script>
<script>Promise.reject(new Error("deliberate rejection"));</script>
<script>undefinedFunctionOfThisPage();</script>
</body>""")
    got = _open(tmp_path, html)
    errors = "\n".join(got.page_errors)
    assert "console.error: deliberate console error" in errors
    assert "deliberate rejection" in errors
    assert "undefinedFunctionOfThisPage" in errors
    assert "failed to load https://example.invalid/pixel.png" in errors
    assert any(u.startswith("Uncaught ReferenceError") for u in got.uncaught), got.uncaught
    assert any("deliberate console error" in m for m in got.console)
    # the broken scripts stop nothing else: the plots still render
    assert got.plots_rendered == got.plots_expected
