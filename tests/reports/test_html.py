"""report.html in headless Chromium (Debian's package), opened from a file: every image loads, the
console stays silent, and a screenshot of the first screen is not blank. A control page with a
broken image, a console error and nothing drawn shows that each of these checks can fail."""
import re
import shutil
import subprocess

import pytest

from report_docs import run_report
from test_report_tables import run_a

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="headless Chromium is not installed (Debian package chromium; scripts/setup installs it)")

# Appended to a copy of the page: once everything has loaded, the body records how many images decoded.
MARKER = """<script>window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.body.setAttribute('data-images-loaded', ok + '/' + imgs.length);
});</script>"""


def chromium(tmp_path, *args):
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--hide-scrollbars",
           "--disable-dev-shm-usage",
           f"--user-data-dir={tmp_path / 'chromium-profile'}", "--enable-logging=stderr", "--v=0",
           "--virtual-time-budget=10000", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def open_page(tmp_path, html_text):
    """(images loaded 'ok/total', console messages) of a page opened from a file."""
    page = tmp_path / "page.html"
    page.write_text(html_text.replace("</body>", MARKER + "</body>"))
    r = chromium(tmp_path, "--dump-dom", page.as_uri())
    m = re.search(r'data-images-loaded="(\d+)/(\d+)"', r.stdout)
    assert m, f"the page never finished loading: {r.stderr[-2000:]}"
    console = [line for line in r.stderr.splitlines() if ":CONSOLE" in line]
    return (int(m.group(1)), int(m.group(2))), console


def screenshot_spread(tmp_path, page_uri):
    """Standard deviation of the first screen's pixels (0 for a blank page) and its share of non-white pixels."""
    import matplotlib.image
    shot = tmp_path / "shot.png"
    shot.unlink(missing_ok=True)
    chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,900", page_uri)
    assert shot.exists(), "Chromium wrote no screenshot"
    pixels = matplotlib.image.imread(str(shot))[..., :3]
    return float(pixels.std()), float((pixels.min(axis=2) < 0.9).mean())


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    run = run_a(tmp_path_factory.mktemp("runs") / "20261129-000000-html")
    run_report(run, "--no-tensorboard")
    return run / "report" / "report.html"


def test_every_image_loads_without_console_messages(report, tmp_path):
    text = report.read_text()
    figures = len(re.findall(r"<img ", text))
    assert figures == 7
    # Self-contained: images are data URIs, and nothing else is fetched.
    assert len(re.findall(r'src="data:image/png;base64,', text)) == figures
    assert not re.search(r'(src|href)="(https?:|//)', text)
    (loaded, total), console = open_page(tmp_path, text)
    assert (loaded, total) == (figures, figures)
    assert console == []


def test_first_screen_is_not_blank(report, tmp_path):
    spread, inked = screenshot_spread(tmp_path, report.as_uri())
    assert spread > 0.05 and inked > 0.01, (spread, inked)


def test_the_checks_catch_a_broken_page(tmp_path):
    pixel = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
    broken = (f'<html><body><img src="data:image/png;base64,{pixel}"><img src="missing.png">'
              '<script>console.error("boom")</script></body></html>')
    (loaded, total), console = open_page(tmp_path, broken)
    assert (loaded, total) == (1, 2)
    assert any('"boom"' in line for line in console)
    blank = tmp_path / "blank.html"
    blank.write_text("<html><body></body></html>")
    spread, inked = screenshot_spread(tmp_path, blank.as_uri())
    assert spread == 0 and inked == 0
