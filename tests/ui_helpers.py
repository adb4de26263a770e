"""Helpers of the browser test (tests/test_ui_browser.py): a `dagster dev` server in its own process group,
and Debian's Chromium, driven by Playwright, on a closed network."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

CHROMIUM_ENV_VAR = "SLIDE2VEC_CHROMIUM"
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
# Playwright starts Chromium with a fresh temporary --user-data-dir of its own. The network here is closed:
# without the background-networking flags Chromium's own connections (updates, sync, QUIC probes) are
# refused and the page loads stall.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def find_chromium() -> str | None:
    """$SLIDE2VEC_CHROMIUM, else the first Chromium or Chrome on PATH (Debian's is /usr/bin/chromium)."""
    configured = os.environ.get(CHROMIUM_ENV_VAR)
    if configured:
        return configured if Path(configured).is_file() else shutil.which(configured)
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def graphql(port: int, query: str, timeout_s: float = 10.0) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        return json.loads(response.read())


def _tail(path: Path, chars: int = 4000) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")[-chars:]
    except OSError:
        return "<no log>"


def _default_signals() -> None:
    # A shell that runs jobs in the background starts them with SIGINT/SIGTERM ignored, and the ignore is
    # inherited: `dagster dev` would then not stop on SIGTERM (docs: DESIGN.md).
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _stop_group(process: subprocess.Popen, grace_s: float = 30.0) -> None:
    """SIGTERM the server's process group (dagster dev, its webserver, daemon and code server), then SIGKILL
    whatever is left after grace_s."""
    pgid = process.pid  # start_new_session: the group's id is the leader's pid
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        pass
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)  # anyone left in the group?
        except ProcessLookupError:
            break
        time.sleep(0.5)
    else:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
    if process.poll() is None:
        process.wait(timeout=10)


@contextlib.contextmanager
def dagster_dev(
    *,
    workspace: Path,
    env: dict[str, str],
    cwd: Path,
    log_path: Path,
    expected_assets: int,
    timeout_s: float = 150.0,
) -> Iterator[int]:
    """`dagster dev` on 127.0.0.1 and a free port; yields the port once the code location serves at least
    `expected_assets` asset nodes. The whole process group is stopped on exit, failure included."""
    port = free_port()
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "dagster", "dev", "-h", "127.0.0.1", "-p", str(port), "-w", str(workspace)],
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_default_signals,
        )
    try:
        deadline = time.monotonic() + timeout_s
        last = "no answer yet"
        while True:
            if process.poll() is not None:
                raise AssertionError(f"dagster dev exited with {process.returncode}:\n{_tail(log_path)}")
            try:
                payload = graphql(port, "{ assetNodes { id } }")
                nodes = (payload.get("data") or {}).get("assetNodes") or []
                if len(nodes) >= expected_assets:
                    break
                last = f"{len(nodes)} asset node(s): {str(payload)[:300]}"
            except (OSError, ValueError) as exc:  # not listening yet / still loading
                last = repr(exc)
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"dagster dev served no code location with {expected_assets} assets in {timeout_s:.0f} s "
                    f"({last}):\n{_tail(log_path)}"
                )
            time.sleep(1)
        yield port
    finally:
        _stop_group(process)


# Dagster's asset graph is an SVG whose group boxes and asset nodes are <foreignObject>s (groups carry the
# class `group`); nodes outside the view are not rendered.
_GRAPH_BOUNDS_JS = """(toolbarBottom) => {
    const objects = Array.from(document.querySelectorAll('svg foreignObject'));
    const rects = objects.map((e) => e.getBoundingClientRect()).filter((r) => r.width > 0);
    const view = objects[0].closest('svg').parentElement.parentElement.getBoundingClientRect();
    return {
        left: Math.min(...rects.map((r) => r.left)), right: Math.max(...rects.map((r) => r.right)),
        top: Math.min(...rects.map((r) => r.top)), bottom: Math.max(...rects.map((r) => r.bottom)),
        viewLeft: view.left, viewRight: view.right, viewTop: Math.max(view.top, toolbarBottom), viewBottom: view.bottom,
    };
}"""

_GRAPH_PLACEMENT_JS = """() => {
    const box = (e) => e.getBoundingClientRect();
    const objects = Array.from(document.querySelectorAll('svg foreignObject'));
    const groups = objects.filter((e) => e.classList.contains('group'))
        .map((e) => ({name: e.textContent.trim(), r: box(e)}));
    const nodes = objects.filter((e) => !e.classList.contains('group') && e.textContent.trim());
    return nodes.map((e) => {
        const r = box(e), x = r.x + r.width / 2, y = r.y + r.height / 2;
        const g = groups.find((g) => g.r.left <= x && x <= g.r.right && g.r.top <= y && y <= g.r.bottom);
        return [g ? g.name : null, e.textContent.trim()];
    });
}"""


def fit_graph(page, toolbar_bottom: float, margin: float = 24) -> None:
    """Zoom the asset graph out (ctrl + wheel, small steps) until it fits the view, then drag it to the
    middle. The zoom buttons' steps are too coarse to fill a 1280 x 800 window."""
    for _ in range(2):  # once more after centring: nodes that come into view may widen the graph
        for _ in range(40):
            b = page.evaluate(_GRAPH_BOUNDS_JS, toolbar_bottom)
            fits_width = b["right"] - b["left"] <= b["viewRight"] - b["viewLeft"] - 2 * margin
            fits_height = b["bottom"] - b["top"] <= b["viewBottom"] - b["viewTop"] - 2 * margin
            if fits_width and fits_height:
                break
            page.mouse.move((b["viewLeft"] + b["viewRight"]) / 2, (b["viewTop"] + b["viewBottom"]) / 2)
            page.keyboard.down("Control")
            page.mouse.wheel(0, 10)
            page.keyboard.up("Control")
            page.wait_for_timeout(100)
        b = page.evaluate(_GRAPH_BOUNDS_JS, toolbar_bottom)
        dx = (b["viewLeft"] + b["viewRight"] - b["left"] - b["right"]) / 2
        dy = (b["viewTop"] + b["viewBottom"] - b["top"] - b["bottom"]) / 2
        # Drag from a corner away from the graph (the bottom right one holds the zoom buttons).
        x = b["viewRight"] - 90 if dx >= 0 else b["viewLeft"] + 10
        y = b["viewBottom"] - 10 if dy >= 0 else b["viewTop"] + 10
        page.mouse.move(x, y)
        page.mouse.down()
        page.mouse.move(x + dx, y + dy, steps=8)
        page.mouse.up()
        page.wait_for_timeout(300)


def graph_placement(page) -> list[tuple[str | None, str]]:
    """(group box it sits in, label) of every asset node the graph shows."""
    return [tuple(row) for row in page.evaluate(_GRAPH_PLACEMENT_JS)]
