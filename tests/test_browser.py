"""The built book in a real browser: headless Chromium over the DevTools protocol (a pipe, no extra deps).

With ``LEAKLIB_BOOK_HTML`` set (``.ci/run`` sets it to the HTML of ``leaklib book run`` and of
``jupyter-book build book/``), that book is checked and every chapter notebook under ``book/`` must
have its page; otherwise a tiny book is built into a temporary folder first. Each page must load,
every image on it must have a non-zero natural size, every local link (and its ``#fragment``) must
resolve, and its maths must be typeset by MathJax loaded from the book itself (no network): MathJax
output elements, no raw ``\\(`` left in the text. Screenshots of the intro, of the first page with a
figure and of a chapter's maths are kept in ``<html>/../screenshots/``.

Without Chromium the browser test is skipped with a line saying how to install it; with
``LEAKLIB_REQUIRE_TOOLS=1`` (set by ``.ci/run``) it fails instead.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import re
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest

from leaklib import book
from required import missing_tool

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[1]
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--hide-scrollbars", "--mute-audio"]

PAGE_REPORT_JS = """
(async () => {
  const imgs = Array.from(document.images);
  imgs.forEach(i => { i.loading = 'eager'; });
  const settle = Promise.all(imgs.map(i => i.complete ? null :
      new Promise(r => { i.addEventListener('load', r); i.addEventListener('error', r); })));
  await Promise.race([settle, new Promise(r => setTimeout(r, 10000))]);
  const h1 = document.querySelector('article h1, main h1');
  return {
    readyState: document.readyState,
    title: document.title,
    h1: h1 ? h1.textContent : null,
    images: imgs.map(i => ({src: i.currentSrc || i.src, w: i.naturalWidth, h: i.naturalHeight})),
    links: Array.from(document.querySelectorAll('a[href]')).map(a => a.href),
  };
})()
"""


MATHS_REPORT_JS = """
(async () => {
  const mj = window.MathJax;
  if (mj && mj.startup && mj.startup.promise) {
    await Promise.race([mj.startup.promise, new Promise(r => setTimeout(r, 20000))]);
  }
  const script = Array.from(document.scripts).find(s => /mathjax/i.test(s.src));
  const maths = Array.from(document.querySelectorAll('.math'));
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT, {acceptNode: n =>
      n.parentElement.closest('pre, code, script, style, mjx-container, .highlight')
        ? NodeFilter.FILTER_REJECT : NodeFilter.FILTER_ACCEPT});
  const raw = [];
  while (walker.nextNode()) {
    const t = walker.currentNode.nodeValue;
    if (t.includes('\\\\(') || t.includes('\\\\[')) raw.push(t.trim().slice(0, 60));
  }
  return {
    script: script ? script.src : null,
    loaded: !!(mj && mj.startup && mj.version),
    maths: maths.length,
    typeset: document.querySelectorAll('mjx-container').length,
    untypeset: maths.filter(m => !m.querySelector('mjx-container')).length,
    raw: raw,
  };
})()
"""
#: Pages of a Jupyter Book build that are not the book's own pages.
GENERATED_PAGES = {"index.html", "genindex.html", "search.html"}
#: Book pages without any formula.
PAGES_WITHOUT_MATHS = {"references.html"}
CHROMIUM_HINT = ("headless Chromium not found: install it with `apt-get install -y chromium` "
                 "(or set CHROMIUM=/path/to/chromium)")


def chromium_binary() -> str | None:
    """Debian's chromium (or $CHROMIUM); None if there is none."""
    for candidate in (os.environ.get("CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if candidate and shutil.which(candidate):
            return shutil.which(candidate)
    return None


def maths_problems(name: str, report: dict[str, Any], must_have_maths: bool) -> list[str]:
    """What is wrong with a page's maths, from ``MATHS_REPORT_JS``'s report."""
    problems = []
    if report["maths"] or must_have_maths:
        if not report["script"] or not report["script"].startswith("file:"):
            problems.append(f"{name}: MathJax is not loaded from the book itself (script {report['script']!r})")
        if not report["loaded"]:
            problems.append(f"{name}: MathJax did not start (offline, a CDN copy cannot load)")
        if report["typeset"] == 0:
            problems.append(f"{name}: no typeset maths (MathJax output elements) on the page")
    if report["untypeset"]:
        problems.append(f"{name}: {report['untypeset']} of {report['maths']} formulas not typeset")
    problems += [f"{name}: raw TeX in the text: {t!r}" for t in report["raw"]]
    return problems


class Browser:
    """Minimal Chrome DevTools Protocol client over ``--remote-debugging-pipe`` (fds 3 and 4)."""

    def __init__(self, binary: str, profile_dir: Path) -> None:
        to_chrome_r, to_chrome_w = os.pipe()
        from_chrome_r, from_chrome_w = os.pipe()
        # move the child's ends above fd 4 so that dup2 onto 3/4 cannot clobber one of them
        hi_r = fcntl.fcntl(to_chrome_r, fcntl.F_DUPFD_CLOEXEC, 10)
        hi_w = fcntl.fcntl(from_chrome_w, fcntl.F_DUPFD_CLOEXEC, 10)
        for fd in (to_chrome_r, from_chrome_w):
            os.close(fd)

        def in_child() -> None:
            os.dup2(hi_r, 3)
            os.dup2(hi_w, 4)

        self.proc = subprocess.Popen(
            [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile_dir}", "--remote-debugging-pipe",
             "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=in_child, close_fds=False)
        os.close(hi_r)
        os.close(hi_w)
        self.wfd, self.rfd = to_chrome_w, from_chrome_r
        self.buffer = b""
        self.next_id = 0
        self.events: list[dict[str, Any]] = []

    def _read_message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.rfd], [], [], left)[0]:
                raise TimeoutError("no answer from Chromium")
            chunk = os.read(self.rfd, 1 << 20)
            if not chunk:
                raise RuntimeError(f"Chromium closed the pipe (exit {self.proc.poll()})")
            self.buffer += chunk
        raw, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(raw)

    def send(self, method: str, params: dict[str, Any] | None = None, session: str | None = None,
             timeout: float = 30.0) -> dict[str, Any]:
        """Call ``method`` and return its result; events met on the way are kept."""
        self.next_id += 1
        msg: dict[str, Any] = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self.wfd, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_event(self, name: str, session: str, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            for i, ev in enumerate(self.events):
                if ev.get("method") == name and ev.get("sessionId") == session:
                    return self.events.pop(i)
            self.events.append(self._read_message(deadline))

    def open(self, url: str) -> str:
        """A new tab showing ``url`` after its load event; returns the session id."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        self.send("Page.enable", session=session)
        self.send("Emulation.setDeviceMetricsOverride",
                  {"width": 1280, "height": 900, "deviceScaleFactor": 1, "mobile": False}, session)
        self.events = [e for e in self.events if e.get("sessionId") != session]
        nav = self.send("Page.navigate", {"url": url}, session)
        if nav.get("errorText"):
            raise AssertionError(f"{url}: {nav['errorText']}")
        self.wait_event("Page.loadEventFired", session)
        return session

    def evaluate(self, session: str, expression: str) -> Any:
        res = self.send("Runtime.evaluate", {"expression": expression, "awaitPromise": True,
                                             "returnByValue": True}, session)
        if "exceptionDetails" in res:
            raise RuntimeError(res["exceptionDetails"])
        return res["result"].get("value")

    def screenshot(self, session: str, path: Path) -> Path:
        data = self.send("Page.captureScreenshot", {"format": "png"}, session)["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=5)
        except Exception:  # noqa: BLE001 - it may close the pipe before answering
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        os.close(self.wfd)
        os.close(self.rfd)


def broken_links(links: list[str]) -> list[str]:
    """Local ``file://`` links whose file, or ``#fragment`` id in it, does not exist."""
    bad = []
    ids: dict[Path, set[str]] = {}
    for href in links:
        parts = urlsplit(href)
        if parts.scheme != "file":
            continue  # http(s) and mailto links are not fetched: no network here
        path = Path(unquote(parts.path))
        if not path.is_file():
            bad.append(href)
            continue
        if parts.fragment and path.suffix == ".html":
            if path not in ids:
                ids[path] = set(re.findall(r'\bid="([^"]+)"', path.read_text(errors="replace")))
            if unquote(parts.fragment) not in ids[path]:
                bad.append(href)
    return bad


@pytest.fixture(scope="module")
def chromium() -> str:
    """The Chromium binary; skips (or fails, see ``required``) without one."""
    binary = chromium_binary()
    if binary is None:
        missing_tool(CHROMIUM_HINT)
    return binary  # type: ignore[return-value]


@pytest.fixture(scope="module")
def html_dir(chromium: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The book to check: $LEAKLIB_BOOK_HTML, or a tiny book built here."""
    given = os.environ.get("LEAKLIB_BOOK_HTML")
    if given:
        path = Path(given).resolve()
        assert (path / "index.html").is_file(), f"LEAKLIB_BOOK_HTML={given} holds no built book"
        return path
    from test_book import FIGURE_CELL, make_notebook, make_root

    root = make_root(tmp_path_factory.mktemp("tinybook"))
    make_notebook(root / "book" / "01_neurons_and_coherence.ipynb",
                  FIGURE_CELL.format(name="fig2_coherence"), title="Neurons")
    make_notebook(root / "book" / "03_robustness.ipynb", FIGURE_CELL.format(name="fig3_robustness"),
                  title="Robustness")
    book.run_book(book.RunOptions(root=root, profile="smoke", device="cpu", strict=True), lambda _: None)
    return root / "_build" / "html"


def chapter_pages(html: Path) -> list[Path]:
    """The book's pages (intro, chapters, references): every HTML page but Sphinx's generated ones."""
    pages = sorted(p for p in html.glob("*.html") if p.name not in GENERATED_PAGES)
    assert pages, f"no pages in {html}"
    if os.environ.get("LEAKLIB_BOOK_HTML"):
        expected = {c for c in book.CHAPTERS if (REPO / "book" / f"{c}.ipynb").is_file()}
        missing = expected - {p.stem for p in pages}
        assert not missing, f"chapters without a page: {sorted(missing)}"
    return pages


def test_every_page_loads_with_images_links_and_typeset_maths(chromium: str, html_dir: Path) -> None:
    index = (html_dir / "index.html").read_text()
    target = re.search(r'http-equiv="Refresh" content="0; url=([^"]+)"', index, re.I)
    assert target and (html_dir / target.group(1)).is_file(), "index.html does not lead to the intro"
    pages = chapter_pages(html_dir)
    shots = html_dir.parent / "screenshots"
    for old in shots.glob("*.png"):
        old.unlink()
    figure_page_shot = maths_shot = None
    with tempfile.TemporaryDirectory() as profile:
        browser = Browser(chromium, Path(profile))
        try:
            problems = []
            for page in pages:
                session = browser.open(page.as_uri())
                report = browser.evaluate(session, PAGE_REPORT_JS)
                name = page.relative_to(html_dir).as_posix()
                if report["readyState"] != "complete" or not report["h1"]:
                    problems.append(f"{name}: did not load (state {report['readyState']}, h1 {report['h1']!r})")
                for img in report["images"]:
                    if img["w"] <= 0 or img["h"] <= 0:
                        problems.append(f"{name}: empty image {img['src']}")
                problems += [f"{name}: broken link {href}" for href in broken_links(report["links"])]
                maths = browser.evaluate(session, MATHS_REPORT_JS)
                problems += maths_problems(name, maths, must_have_maths=page.name not in PAGES_WITHOUT_MATHS)
                if maths_shot is None and maths["typeset"] and page.name != "intro.html":
                    browser.evaluate(session, "document.querySelector('mjx-container')"
                                              ".scrollIntoView({block: 'center'})")
                    maths_shot = browser.screenshot(session, shots / f"maths_{page.stem}.png")
                if page.name == "intro.html":
                    browser.screenshot(session, shots / "intro.png")
                big = [i for i in report["images"] if i["w"] >= 100 and i["h"] >= 100]
                if figure_page_shot is None and big and page.name != "intro.html":
                    browser.evaluate(session, "document.images[%d].scrollIntoView({block: 'center'})"
                                     % [i["src"] for i in report["images"]].index(big[0]["src"]))
                    figure_page_shot = browser.screenshot(session, shots / f"figure_{page.stem}.png")
                browser.send("Target.closeTarget",
                             {"targetId": browser.send("Target.getTargetInfo", session=session)["targetInfo"]["targetId"]})
        finally:
            browser.close()
    assert not problems, "\n".join(problems)
    assert figure_page_shot is not None, "no chapter page shows a figure"
    assert maths_shot is not None, "no chapter page shows typeset maths"
    import matplotlib.image as mpimg

    for shot in (shots / "intro.png", figure_page_shot, maths_shot):
        pixels = mpimg.imread(shot)
        assert pixels.shape[:2] == (900, 1280), shot
        assert pixels[..., :3].std() > 0.01, f"{shot} is blank"


def test_broken_links_finds_missing_files_and_fragments(tmp_path: Path) -> None:
    page = tmp_path / "a.html"
    page.write_text('<h1 id="top">x</h1>')
    links = [page.as_uri() + "#top", page.as_uri() + "#nope", (tmp_path / "b.html").as_uri(),
             "https://example.org/x"]
    assert broken_links(links) == [page.as_uri() + "#nope", (tmp_path / "b.html").as_uri()]
