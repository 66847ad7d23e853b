"""The dashboard in a real browser (Playwright driving Debian's Chromium) against a live streaming
job: `cryoclass simulate --stream-to` feeds `cryoclass stream --dashboard`. The page loads, class
images appear, counts update as particles arrive (no reload, the same cards), classes are
selected by clicking and the export writes the STAR of exactly their particles.

Skipped only when no Chromium can be found (``make test`` installs Debian's). Screenshots go to
the test's folder, and also to $CRYOCLASS_SCREENSHOT_DIR when it is set.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cryoclass.io import read_star

CHROMIUM = next(
    (
        p
        for p in (shutil.which("chromium"), shutil.which("chromium-browser"), "/usr/bin/chromium")
        if p and Path(p).exists()
    ),
    None,
)
if CHROMIUM is None:
    pytest.skip(
        "Debian's chromium is not installed (apt-get install chromium; `make test` "
        "tries to): the browser test cannot run",
        allow_module_level=True,
    )
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright (the test extra) is not installed"
)

N = 360
JOB = [
    "--classes",
    "3",
    "--max-res-A",
    "12.5",
    "--batch-size-per-class",
    "20",
    "--n-online-em-iters",
    "4",
    "--n-full-iters",
    "1",
    "--device",
    "cpu",
    "--initial-uncertainty-factor",
    "8",
    "--sigma-anneal-start",
    "1",
    "--sigma-anneal-iters",
    "3",
]
CLASSIFIED = "Number(document.getElementById('p-classified').textContent.replace(/,/g, ''))"


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-c", "from cryoclass.cli import main; main()", *args]


def _wait_for_url(log: Path, proc: subprocess.Popen, timeout_s: float = 60.0) -> str:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        m = re.search(r"dashboard: (http://\S+)", log.read_text(errors="replace"))
        if m:
            return m.group(1)
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    raise AssertionError(f"no dashboard URL; stream output:\n{log.read_text(errors='replace')}")


def _shot(page, tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    page.screenshot(path=str(path), full_page=True)
    extra = os.environ.get("CRYOCLASS_SCREENSHOT_DIR")
    if extra:
        Path(extra).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(extra) / name)
    assert path.stat().st_size > 10_000


@pytest.mark.timeout(240)
def test_live_stream_dashboard_in_chromium(tmp_path):
    live, out, log = tmp_path / "live", tmp_path / "job", tmp_path / "stream.log"
    env = dict(os.environ, OMP_NUM_THREADS="1", COLUMNS="200")
    procs = []
    try:
        with open(log, "w") as fh:
            stream = subprocess.Popen(
                _cli(
                    "stream",
                    str(live),
                    "--out",
                    str(out),
                    "--poll",
                    "0.2",
                    "--dashboard",
                    "--dashboard-port",
                    "0",
                    *JOB,
                ),
                stdout=fh,
                stderr=subprocess.STDOUT,
                env=env,
            )
        procs.append(stream)
        url = _wait_for_url(log, stream)
        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(url)
            page.evaluate("window.__sameDocument = true")
            page.wait_for_selector("#no-classes", state="visible")  # open before any particle
            procs.append(
                subprocess.Popen(
                    _cli(
                        "simulate",
                        "--stream-to",
                        str(live),
                        "--rate",
                        "40",
                        "--n",
                        str(N),
                        "--box",
                        "32",
                        "--apix",
                        "5",
                        "--views",
                        "3",
                        "--snr",
                        "1",
                        "--per-mic",
                        "30",
                    ),
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    env=env,
                )
            )

            # class images appear while the stream runs
            page.wait_for_selector(".card img[src]", timeout=90_000)
            page.wait_for_function(
                "[...document.querySelectorAll('.card img')]"
                ".every(i => i.complete && i.naturalWidth > 0)"
            )
            first_card = page.query_selector(".card")
            page.wait_for_function(f"{CLASSIFIED} > 0")
            seen = page.evaluate(CLASSIFIED)
            assert 0 < seen < N, f"the page should open on a running stream ({seen} classified)"
            assert page.inner_text("#job-kind") == "streaming"
            assert page.inner_text("#job-status") == "running"
            _shot(page, tmp_path, "dashboard_live.png")

            # counts update as particles arrive, without a reload
            page.wait_for_function(f"{CLASSIFIED} > {seen}", timeout=90_000)
            page.wait_for_function(
                "document.getElementById('job-status').textContent === 'finished'", timeout=120_000
            )
            assert page.evaluate("window.__sameDocument === true"), "the page was reloaded"
            assert first_card.evaluate("e => e.isConnected"), "class cards were rebuilt"
            assert page.evaluate(CLASSIFIED) == N
            counts = [
                int(c)
                for c in page.eval_on_selector_all(".card", "cs => cs.map(c => c.dataset.count)")
            ]
            assert sum(counts) == N and counts == sorted(counts, reverse=True)
            plots = page.eval_on_selector_all("svg path", "ps => ps.length")
            assert plots >= 5  # distribution areas and the history lines are drawn

            # select two classes by clicking, export
            cards = page.locator(".card")
            picked = sorted(int(cards.nth(i).get_attribute("data-number")) for i in (0, 2))
            cards.nth(0).click()
            cards.nth(2).click()
            page.wait_for_function(
                "document.querySelectorAll('.card[data-mark=good]').length === 2"
            )
            page.wait_for_function(
                "document.getElementById('sel-summary').textContent.startsWith('2 good classes')"
            )
            page.click("#export")
            page.wait_for_selector("#export-result a", timeout=30_000)
            _shot(page, tmp_path, "dashboard_selected.png")
            assert not errors, errors
            browser.close()

        allp = read_star(out / "particles.star").particles
        got = read_star(out / "selected_particles.star").particles
        want = allp.loc[allp["rlnClassNumber"].isin(picked)]
        assert len(got) == len(want) > 0
        assert got["rlnImageName"].tolist() == want["rlnImageName"].tolist()
        assert sorted(got["rlnClassNumber"].unique().tolist()) == picked
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
