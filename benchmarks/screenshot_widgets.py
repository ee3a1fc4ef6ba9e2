"""Checks the kernel-free widgets of a built page in headless Chromium, with screenshots.

For every ``sslbook.widgets`` explorer on the page: a screenshot, then each control moved to
another option and a second screenshot; then the controls are moved back, and the frame that the
page's script draws must be exactly the one the snippet shipped as static HTML. It prints each
widget's weight (bytes, and gzip-compressed as a web server sends it) and the verdicts.

    python benchmarks/screenshot_widgets.py _build/html/notebooks/rotation.html --out shots/

Talks to Chromium over its DevTools pipe (``--remote-debugging-pipe``): standard library only,
no Playwright, no network. Needs ``chromium`` on the PATH (``apt-get install chromium``).
"""

from __future__ import annotations

import argparse
import base64
import gzip
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--hide-scrollbars", "--remote-debugging-pipe",
]  # fmt: skip
# Moves every control of widget W to another option (back to the first ones with BACK) and
# returns the frame's markup: a slider to its other end, a row of buttons to another button.
_MOVE = """(() => {
  const root = document.querySelectorAll(".sbw")[__W__];
  root.querySelectorAll("input[type=range]").forEach((s) => {
    s.value = __BACK__ ? s.defaultValue : (+s.value === +s.max ? s.min : s.max);
    s.dispatchEvent(new Event("input"));
  });
  const groups = {};
  root.querySelectorAll("button[data-control]").forEach((b) => {
    (groups[b.dataset.control] ||= []).push(b);
  });
  Object.values(groups).forEach((buttons) => {
    buttons.forEach((b) => { b.dataset.first ??= b.getAttribute("aria-pressed"); });
    const pressed = buttons.findIndex((b) => b.getAttribute("aria-pressed") === "true");
    const first = buttons.find((b) => b.dataset.first === "true");
    (__BACK__ ? first : buttons[(pressed + 1) % buttons.length]).click();
  });
  return root.querySelector(".sbw-frame").innerHTML;
})()"""


def chromium() -> str | None:
    """The Chromium executable, or None."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


class Browser:
    """Headless Chromium driven over the DevTools protocol on a pair of pipes."""

    def __init__(self, executable: str, width: int = 1100, height: int = 900) -> None:
        commands, self._to_browser = os.pipe()  # the browser reads fd 3, writes fd 4
        self._from_browser, replies = os.pipe()
        self._profile = tempfile.mkdtemp()

        def wire() -> None:  # in the child, before the other descriptors are closed
            os.dup2(commands, 3)
            os.dup2(replies, 4)

        self._process = subprocess.Popen(
            [executable, *CHROMIUM_FLAGS, f"--user-data-dir={self._profile}", "about:blank"],
            pass_fds=(3, 4), preexec_fn=wire, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        os.close(commands)
        os.close(replies)
        self._next_id, self._buffer = 0, b""
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self._session = self.call("Target.attachToTarget", targetId=target, flatten=True)[
            "sessionId"
        ]
        self.call("Emulation.setDeviceMetricsOverride", session=True, width=width, height=height,
                  deviceScaleFactor=1, mobile=False)  # fmt: skip

    def call(self, method: str, session: bool = False, **params) -> dict:
        """Sends one command and returns its result (events in between are dropped)."""
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = self._session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        while True:
            while b"\0" not in self._buffer:
                chunk = os.read(self._from_browser, 1 << 16)
                if not chunk:
                    raise RuntimeError("Chromium closed its DevTools pipe")
                self._buffer += chunk
            raw, self._buffer = self._buffer.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]

    def evaluate(self, expression: str):
        """The value of a JavaScript expression in the page."""
        result = self.call("Runtime.evaluate", session=True, expression=expression,
                           returnByValue=True)  # fmt: skip
        if "exceptionDetails" in result:
            raise RuntimeError(f"page script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def open(self, url: str, timeout: float = 20) -> int:
        """Loads ``url`` and waits until every widget's script has run; returns their number."""
        self.call("Page.navigate", session=True, url=url)
        ready = "[...document.querySelectorAll('.sbw')].filter(w => w.dataset.ready).length"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.evaluate("document.readyState") == "complete":
                count = self.evaluate("document.querySelectorAll('.sbw').length")
                if self.evaluate(ready) == count:
                    return count
            time.sleep(0.1)
        raise TimeoutError(f"the widgets of {url} did not start in {timeout} s")

    def screenshot(self, index: int, path: Path) -> None:
        """A PNG of widget ``index``, cut to its box."""
        box = self.evaluate(
            f"(() => {{ const w = document.querySelectorAll('.sbw')[{index}]; w.scrollIntoView();"
            " const r = w.getBoundingClientRect();"
            " return [r.left + scrollX, r.top + scrollY, r.width, r.height]; })()"
        )
        x, y, width, height = box
        clip = {"x": x, "y": y, "width": width, "height": height, "scale": 1}
        shot = self.call("Page.captureScreenshot", session=True, format="png", clip=clip)
        path.write_bytes(base64.b64decode(shot["data"]))

    def close(self) -> None:
        self._process.terminate()
        self._process.wait(timeout=10)
        os.close(self._to_browser)
        os.close(self._from_browser)
        shutil.rmtree(self._profile, ignore_errors=True)


def snippet_sizes(page: Path) -> list[tuple[int, int]]:
    """``(bytes, gzip bytes)`` of every widget snippet in the page's HTML source."""
    source = page.read_text(encoding="utf-8")
    starts = [m.start() for m in re.finditer(r'<div class="sbw" id="sslbook-widget-', source)]
    out = []
    for start in starts:
        snippet = source[start : source.index("</script></div>", start) + len("</script></div>")]
        data = snippet.encode()
        out.append((len(data), len(gzip.compress(data, 9))))
    return out


def _check_widget(browser: Browser, w: int, out: Path) -> dict:
    """Screenshots of widget ``w`` before and after moving its controls, and the verdicts."""
    move = _MOVE.replace("__W__", str(w))
    static = browser.evaluate(f"document.querySelectorAll('.sbw-frame')[{w}].innerHTML")
    before, after = out / f"widget{w}_before.png", out / f"widget{w}_after.png"
    browser.screenshot(w, before)
    moved = browser.evaluate(move.replace("__BACK__", "false"))
    browser.screenshot(w, after)
    back = browser.evaluate(move.replace("__BACK__", "true"))
    return {"changed": moved != static, "redraw_matches": back == static, "before": before,
            "after": after}  # fmt: skip


def check_page(page: Path, out: Path, executable: str | None = None) -> list[dict]:
    """Screenshots and verdicts for every widget of ``page``.

    Returns:
        One row per widget: ``bytes``, ``gzip_bytes``, ``changed`` (moving the controls changed
        the frame), ``redraw_matches`` (the script draws the shipped first frame exactly),
        ``before`` and ``after`` (the screenshots' paths).
    """
    executable = executable or chromium()
    if executable is None:
        raise FileNotFoundError("no chromium on the PATH (apt-get install chromium)")
    out.mkdir(parents=True, exist_ok=True)
    browser = Browser(executable)
    try:
        count = browser.open(page.resolve().as_uri())
        rows = []
        for (size, zipped), w in zip(snippet_sizes(page), range(count), strict=True):
            rows.append({"bytes": size, "gzip_bytes": zipped, **_check_widget(browser, w, out)})
        return rows
    finally:
        browser.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("page", type=Path, help="a built HTML page with widgets")
    parser.add_argument("--out", type=Path, default=Path("widget_screenshots"))
    args = parser.parse_args()
    page_bytes = args.page.read_bytes()
    print(f"{args.page}: {len(page_bytes):,} bytes ({len(gzip.compress(page_bytes, 9)):,} gzip)")
    rows = check_page(args.page, args.out)
    for w, row in enumerate(rows):
        print(f"widget {w}: {row['bytes']:,} bytes ({row['gzip_bytes']:,} gzip), "
              f"frame changed: {row['changed']}, redraw matches the static frame: "
              f"{row['redraw_matches']}, screenshots {row['before']} {row['after']}")  # fmt: skip
    return 0 if rows and all(r["changed"] and r["redraw_matches"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
