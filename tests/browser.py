"""Render an HTML file in headless Chromium (Debian package ``chromium``; ``make test`` installs it when
missing): a screenshot, every image's load state, console messages and uncaught errors.

No browser-automation package is needed: a checker script is injected into a copy of the page (the page
itself is not changed); it records failed loads and errors as they happen and, after the load event,
every ``<img>``'s state into an element that ``chromium --dump-dom`` prints; console messages come from
Chromium's own log (``--enable-logging=stderr``)."""

from __future__ import annotations

import html as html_lib
import json
import re
import shutil
import subprocess
from pathlib import Path

CHECK_ID = "speechkeep-browser-check"
_CHECKER = """<script>
(function () {
  var errors = [];
  window.addEventListener('error', function (e) {
    var t = e.target;
    if (t && t !== window && t.tagName) { errors.push('failed to load <' + t.tagName.toLowerCase() + '> ' + String(t.src || t.href || '').slice(-80)); }
    else { errors.push('uncaught: ' + (e.message || e)); }
  }, true);
  var origError = console.error;
  console.error = function () { errors.push('console.error: ' + Array.prototype.join.call(arguments, ' ')); origError.apply(console, arguments); };
  window.addEventListener('load', function () {
    var imgs = Array.prototype.slice.call(document.images).map(function (i) {
      return {alt: i.alt, complete: i.complete, width: i.naturalWidth, height: i.naturalHeight};
    });
    var pre = document.createElement('pre');
    pre.id = '%s';
    pre.textContent = JSON.stringify({images: imgs, errors: errors, title: document.title});
    document.body.appendChild(pre);
  });
})();
</script>""" % CHECK_ID


def chromium() -> str | None:
    """The Chromium executable, or None."""
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def _run(args: list[str], timeout: int = 120) -> subprocess.CompletedProcess:
    exe = chromium()
    if exe is None:
        raise RuntimeError("no chromium executable (Debian: apt-get install chromium)")
    base = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
            "--hide-scrollbars", "--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000"]
    return subprocess.run(base + args, capture_output=True, text=True, timeout=timeout)


def render(html_path: Path, screenshot: Path, workdir: Path, size: tuple[int, int] = (1280, 4000)) -> dict:
    """Open ``html_path`` in headless Chromium; returns ``{"images": [...], "errors": [...], "console": [...],
    "screenshot": path}`` (console: every console message the page produced)."""
    html_path, screenshot = Path(html_path).resolve(), Path(screenshot).resolve()
    text = html_path.read_text(encoding="utf-8")
    probe = workdir / ("probe_" + html_path.name)
    head = re.search(r"<head[^>]*>", text)
    if head is None:
        raise ValueError(f"{html_path}: no <head>")
    probe.write_text(text[: head.end()] + _CHECKER + text[head.end():], encoding="utf-8")
    dom = _run(["--dump-dom", probe.resolve().as_uri()])
    m = re.search(rf'<pre id="{CHECK_ID}">(.*?)</pre>', dom.stdout, re.S)
    if m is None:
        raise RuntimeError(f"chromium did not run the page's load event (rc {dom.returncode}): {dom.stderr[-2000:]}")
    result = json.loads(html_lib.unescape(m.group(1)))
    console = [line for line in dom.stderr.splitlines() if ":CONSOLE" in line]
    shot = _run([f"--screenshot={screenshot}", f"--window-size={size[0]},{size[1]}", html_path.as_uri()])
    if not screenshot.is_file():
        raise RuntimeError(f"chromium wrote no screenshot (rc {shot.returncode}): {shot.stderr[-2000:]}")
    console += [line for line in shot.stderr.splitlines() if ":CONSOLE" in line]
    result.update(console=console, screenshot=str(screenshot))
    return result
