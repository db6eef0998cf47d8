"""The report in a real headless browser (Debian's chromium): it renders with no console
error, every plot is decoded and visible, and the screenshot is not blank.

Chromium is driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``), so
no extra Python package and no network port are needed. CI installs chromium
(``apt-get install -y chromium``); elsewhere the test skips, saying so.
"""

from __future__ import annotations

import base64
import io
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from mmfuse.report import write_report  # noqa: E402

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
WIDTH, HEIGHT = 1200, 900


def _browser() -> str:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("no headless Chromium found (Debian: apt-get install -y chromium); "
                ".ci/run installs it for CI")


def _high_pipe() -> tuple[int, int]:
    """A pipe whose fds are >= 10, so they cannot collide with 3 and 4 in the child."""
    import fcntl

    ends = []
    for fd in os.pipe():
        ends.append(fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10))
        os.close(fd)
    return ends[0], ends[1]


class DevTools:
    """A minimal DevTools-protocol client over chromium's pipe (fds 3 and 4 in the child)."""

    def __init__(self, binary: str):
        to_browser_r, self._write = _high_pipe()
        self._read, from_browser_w = _high_pipe()
        self.profile = tempfile.mkdtemp(prefix="mmfuse-chromium-")
        args = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe",
                "--no-first-run", "--no-default-browser-check", "--disable-extensions",
                "--disable-background-networking", "--disable-sync", "--mute-audio",
                f"--user-data-dir={self.profile}", f"--window-size={WIDTH},{HEIGHT}",
                "about:blank"]
        # a small Python trampoline puts the pipe ends on fds 3 and 4, where chromium expects
        # them, then execs it (no preexec_fn: pytest may be running threads)
        wiring = ("import os, sys; r, w = int(sys.argv[1]), int(sys.argv[2]); "
                  "os.dup2(r, 3); os.dup2(w, 4); os.close(r); os.close(w); "
                  "os.execv(sys.argv[3], sys.argv[3:])")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", wiring, str(to_browser_r), str(from_browser_w), *args],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            pass_fds=(to_browser_r, from_browser_w))
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict] = []

    def _message(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("chromium did not answer in time")
            if select.select([self._read], [], [], left)[0]:
                chunk = os.read(self._read, 1 << 20)
                if not chunk:
                    raise RuntimeError("chromium closed the DevTools pipe")
                self._buffer += chunk
        raw, _, self._buffer = self._buffer.partition(b"\0")
        return json.loads(raw)

    def call(self, method: str, params: dict | None = None, session: str | None = None,
             timeout: float = 60) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._write, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            answer = self._message(deadline)
            if answer.get("id") == self._next_id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer.get("result", {})
            self.events.append(answer)

    def wait_for(self, event: str, timeout: float = 60) -> dict:
        for i, seen in enumerate(self.events):
            if seen.get("method") == event:
                return self.events.pop(i)
        deadline = time.monotonic() + timeout
        while True:
            message = self._message(deadline)
            if message.get("method") == event:
                return message
            self.events.append(message)

    def close(self) -> None:
        try:
            self.call("Browser.close", timeout=5)
        except Exception:
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._write)
        os.close(self._read)
        shutil.rmtree(self.profile, ignore_errors=True)


def render(url: str) -> tuple[list[dict], bytes, list[str]]:
    """Open ``url``: (images' state, full-page PNG screenshot, console/log problems)."""
    browser = DevTools(_browser())
    try:
        target = browser.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = browser.call("Target.attachToTarget",
                               {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            browser.call(f"{domain}.enable", session=session)
        browser.call("Emulation.setDeviceMetricsOverride", {
            "width": WIDTH, "height": HEIGHT, "deviceScaleFactor": 1, "mobile": False},
            session=session)
        browser.call("Page.navigate", {"url": url}, session=session)
        browser.wait_for("Page.loadEventFired")

        def evaluate(expression: str):
            return browser.call("Runtime.evaluate", {"expression": expression,
                                                     "returnByValue": True},
                                session=session)["result"]["value"]

        images = json.loads(evaluate(
            "JSON.stringify(Array.from(document.images).map(i => {const r = "
            "i.getBoundingClientRect(); return {complete: i.complete, natural: i.naturalWidth,"
            " width: r.width, height: r.height, top: r.top + window.scrollY, "
            "visible: getComputedStyle(i).visibility === 'visible' && "
            "getComputedStyle(i).display !== 'none'}; }))"))
        height = int(evaluate("document.documentElement.scrollHeight"))
        shot = browser.call("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": WIDTH, "height": height, "scale": 1}},
            session=session)
        evaluate("1")  # a last round trip collects late console events
        problems = []
        for event in browser.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.consoleAPICalled" and params.get("type") in (
                    "error", "assert", "warning"):
                args = [a.get("value", a.get("description")) for a in params.get("args", [])]
                problems.append(f"console.{params['type']}: {args}")
            elif method == "Runtime.exceptionThrown":
                details = params.get("exceptionDetails", {})
                problems.append(f"exception: {details.get('exception', {}).get('description')}")
            elif method == "Log.entryAdded" and params["entry"]["level"] in ("error", "warning"):
                entry = params["entry"]
                problems.append(f"log {entry['level']}: {entry['text']} {entry.get('url', '')}")
        return images, base64.b64decode(shot["data"]), problems
    finally:
        browser.close()


def _not_blank(png: bytes) -> None:
    from PIL import Image

    with Image.open(io.BytesIO(png)) as img:
        pixels = np.asarray(img.convert("RGB"), dtype=np.float32)
    assert pixels.shape[1] == WIDTH and pixels.shape[0] > HEIGHT
    assert pixels.std() > 20, "the screenshot is (almost) one colour"
    colours = np.unique(pixels.reshape(-1, 3)[::7].astype(np.uint8), axis=0)
    assert len(colours) > 50, f"only {len(colours)} colours: the plots did not paint"
    # the plots' blue bars are there
    blue = (pixels[..., 2] > 150) & (pixels[..., 0] < 80)
    assert blue.sum() > 5000


def test_report_renders_cleanly_in_chromium(tmp_path):
    from test_report import synthetic_result

    robustness = {"late": {0.0: 0.77, 0.5: 0.7, 1.0: 0.52}, "image": {0.0: 0.61, 1.0: 0.33}}
    path = write_report(synthetic_result(errors=["row 2, column 'audio': cannot decode"]),
                        tmp_path / "report.html", title="Browser check", robustness=robustness)
    images, png, problems = render(path.resolve().as_uri())
    (tmp_path / "screenshot.png").write_bytes(png)
    assert problems == []
    assert len(images) == 4
    for image in images:
        assert image["complete"] and image["natural"] > 300, image
        assert image["visible"] and image["width"] > 300 and image["height"] > 150, image
    _not_blank(png)


def test_the_check_sees_console_errors_and_broken_images(tmp_path):
    """Guard for the test above: a page with errors must not pass as clean."""
    page = tmp_path / "broken.html"
    page.write_text('<html><body><h1>broken</h1><img src="missing.png">'
                    '<script>console.error("boom"); no_such_function();</script></body></html>')
    images, _, problems = render(page.as_uri())
    assert any("boom" in p for p in problems)
    assert any("no_such_function" in p for p in problems)
    assert any("missing.png" in p for p in problems)
    assert images[0]["natural"] == 0
