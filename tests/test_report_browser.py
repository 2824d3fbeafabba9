"""The report as a person sees it: a tiny real run's report.html opened in headless Chromium
(Debian's `chromium`, which .ci/run installs; skipped where it is absent). Every image must have
loaded, the error on the page must be metrics.json's, and a screenshot is saved (into
$DRMM_SCREENSHOTS too, when set)."""

import html
import json
import os
import re
import shutil
import subprocess

import pytest
from PIL import Image

from drmm.cli import main
from drmm.metrics import read_metrics

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
WINDOW = (1200, 3000)  # the screenshot's size, pixels
# Appended to a copy of the page: after the load event, each image's alt text, whether it
# completed and its decoded width (0: it did not load), as an attribute --dump-dom prints.
PROBE = ('<script>window.addEventListener("load", () => document.body.setAttribute('
         '"data-images", JSON.stringify([...document.images].map('
         'i => [i.alt, i.complete, i.naturalWidth]))));</script>')

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")


def chromium(tmp_path, *args) -> str:
    profile = tmp_path / f"profile{len(list(tmp_path.glob('profile*')))}"  # new and empty
    done = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_report_opens_in_a_browser(tmp_path):
    run = tmp_path / "run"
    assert main(["train", "--dataset", "digits", "--arch", "conv_tiny", "--epochs", "1",
                 "--no-tensorboard", "--out", str(run), "--quiet"]) == 0
    report = (run / "report.html").read_text()
    probe = tmp_path / "probe.html"
    probe.write_text(report.replace("</body>", PROBE + "</body>"))
    dom = chromium(tmp_path, "--virtual-time-budget=10000", "--dump-dom", probe.as_uri())

    found = re.search(r'data-images="([^"]*)"', dom)
    assert found, "the page's script did not run"
    images = json.loads(html.unescape(found.group(1)))
    assert len(images) == report.count("<img ") > 20  # figures and every gallery's tiles
    assert [alt for alt, complete, width in images if not (complete and width > 0)] == []
    shown = re.search(r'<span id="test-error">([^<]*)</span>', dom).group(1)
    assert shown == f"{read_metrics(run)['test_error_percent']:.2f}"

    shot = tmp_path / "report.png"
    chromium(tmp_path, f"--window-size={WINDOW[0]},{WINDOW[1]}", "--hide-scrollbars",
             f"--screenshot={shot}", (run / "report.html").as_uri())
    with Image.open(shot) as im:
        assert im.size == WINDOW
        assert im.convert("L").getextrema()[0] < 100  # not a blank page: dark text and figures
    if os.environ.get("DRMM_SCREENSHOTS"):
        os.makedirs(os.environ["DRMM_SCREENSHOTS"], exist_ok=True)
        shutil.copy(shot, os.path.join(os.environ["DRMM_SCREENSHOTS"], "report_digits.png"))
