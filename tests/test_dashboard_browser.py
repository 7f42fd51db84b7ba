"""The dashboard in a real browser: Debian's headless Chromium, driven by Playwright's Python package
(never `playwright install`: the browser is /usr/bin/chromium from apt).

The site is built from a synthetic ledger of 1,200 experiments on two GPU types and loaded both from
file:// and from `dashboard.serve.serve` on 127.0.0.1. Each load must log no console error, draw one
chart point per experiment of the selected GPU, fill the table, filter it by status, and show a
tooltip on hover. Screenshots (desktop and a 390x844 phone) go to the test's tmp dir and, when
DASHBOARD_SCREENSHOT_DIR is set, there too.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import threading
from pathlib import Path

import pytest
from support.synthetic_ledger import synthetic_records, write_ledger

from dashboard.build import COLUMNS, build_site
from dashboard.serve import serve

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
N_EXPERIMENTS = 1200

pytestmark = [
    pytest.mark.xdist_group("browser"),  # one worker: the module fixture is made once
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="Debian's chromium is not installed (/usr/bin/chromium)"
    ),
]
sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")


# --- fixtures --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """One Chromium for the module, with a fresh, empty profile."""
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_api.sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(profile),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900},
        )
        try:
            yield context
        finally:
            context.close()


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("dashboard")
    ledger = write_ledger(root / "ledger.jsonl", N_EXPERIMENTS, seed=7)
    resources = root / "resources.md"
    first_id = next(r.id for r in synthetic_records(40, seed=7) if r.kind == "experiment")
    resources.write_text(
        "# Learnings\n\n## Summary\n\n- A lower **matrix LR** helps on H100 "
        f"({first_id}).\n- Crashes come from `DEPTH` > 12: OOM.\n\n| idea | kept |\n|---|--:|\n| LR | 3 |\n"
    )
    build_site(ledger, resources, root / "site", repo_url="https://github.com/example/autoresearch-ci")
    return root / "site"


@pytest.fixture(scope="module")
def data(site) -> dict:
    html = (site / "index.html").read_text()
    m = re.search(r'id="ledger-data">(.*?)</script>', html, re.S)
    return json.loads(m.group(1))


@pytest.fixture(scope="module")
def server(site):
    """dashboard.serve.serve on 127.0.0.1, on a free port, in a thread."""
    ready = threading.Event()
    holder = {}

    def on_ready(srv):
        holder["server"] = srv
        ready.set()

    t = threading.Thread(target=serve, args=(site,), kwargs={"port": 0, "on_ready": on_ready}, daemon=True)
    t.start()
    assert ready.wait(10), "serve() did not start"
    srv = holder["server"]
    host, port = srv.server_address[:2]
    try:
        yield f"http://{host}:{port}/"
    finally:
        srv.shutdown()
        t.join(10)


@pytest.fixture
def shots(tmp_path):
    """save(page, name): a PNG in the test's tmp dir, and in DASHBOARD_SCREENSHOT_DIR when set."""
    extra = os.environ.get("DASHBOARD_SCREENSHOT_DIR")

    def save(page, name: str, full_page: bool = False) -> Path:
        path = tmp_path / f"{name}.png"
        page.screenshot(path=str(path), full_page=full_page)
        assert path.stat().st_size > 10_000
        if extra:
            Path(extra).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, Path(extra) / path.name)
        return path

    return save


class Watched:
    """A page that records console errors, page errors, dialogs and every request it makes."""

    def __init__(self, context, width: int = 1280, height: int = 900):
        self.page = context.new_page()
        self.page.set_viewport_size({"width": width, "height": height})
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.page.on(
            "console", lambda m: m.type in ("error", "warning") and self.errors.append(f"{m.type}: {m.text}")
        )
        self.page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))
        self.page.on("dialog", lambda d: (self.errors.append(f"dialog: {d.message}"), d.dismiss()))
        self.page.on("request", lambda r: self.requests.append(r.url))

    def open(self, url: str):
        self.page.goto(url)
        self.page.wait_for_selector("html[data-ready='1']", timeout=20_000)
        return self.page

    def close(self):
        self.page.close()


def rows_of(data: dict) -> list[dict]:
    return [dict(zip(COLUMNS, r, strict=True)) for r in data["rows"]]


def check_dashboard(page, data: dict, shots=None, name: str = "") -> None:
    """Chart, table, filter and tooltip, on a loaded page."""
    rows = rows_of(data)
    assert len(rows) == N_EXPERIMENTS
    # the chart: one point per experiment of the first (busiest) GPU type, failures included
    first_series = [r for r in rows if r["s"] == 0]
    assert page.locator("#chart svg.plot").count() == 1
    assert page.locator("#chart .pt").count() == len(first_series)
    kept = [r for r in first_series if r["st"] == "keep"]
    assert page.locator("#chart circle.pt.keep").count() == len(kept) > 0
    assert page.locator("#chart .pt.crash").count() == sum(r["st"] == "crash" for r in first_series) > 0
    assert page.locator("#chart path.frontier").count() == 1
    assert page.locator("#chart path.noise-band").count() == 1
    # the header figures
    assert page.locator('[data-figure="experiments"] .card-value').inner_text() == f"{N_EXPERIMENTS:,}"
    assert page.locator('[data-figure="kept"] .card-value').inner_text() == str(data["summary"]["kept"])

    # the table: a page of 50 rows, newest first
    body = page.locator("#table-body tr")
    assert body.count() == 50
    assert body.first.get_attribute("data-n") == str(N_EXPERIMENTS)
    assert f"of {N_EXPERIMENTS:,}" in page.locator("#table-count").inner_text()
    pr_link = body.first.locator("td.links a").first
    assert pr_link.get_attribute("href").startswith("https://github.com/example/autoresearch-ci/pull/")

    # filter by status: only crashes remain, and the count says how many
    crashes = sum(r["st"] == "crash" for r in rows)
    page.click('#status-filter [data-status="crash"]')
    # (no wait_for_function: it evaluates strings, which the page's CSP rightly forbids)
    sync_api.expect(page.locator('#table-body tr:not([data-status="crash"])')).to_have_count(0)
    shown = page.locator("#table-body tr")
    assert shown.count() == min(50, crashes)
    assert {shown.nth(i).get_attribute("data-status") for i in range(shown.count())} == {"crash"}
    assert f"of {crashes:,} (filtered from {N_EXPERIMENTS:,})" in page.locator("#table-count").inner_text()
    # add the kept ones: both statuses, sorted by val_bpb, best first
    page.click('#status-filter [data-status="keep"]')
    page.click('th[data-key="v"] button')
    page.click('th[data-key="v"] button')
    assert page.locator('th[data-key="v"]').get_attribute("aria-sort") == "ascending"
    first = page.locator("#table-body tr").first
    assert first.get_attribute("data-status") == "keep"
    best_kept = min(r["v"] for r in rows if r["st"] == "keep")
    assert first.locator("td.c-v").inner_text() == f"{best_kept:.5f}"
    page.click("#reset-filters")
    assert page.locator("#table-body tr").count() == 50

    # hover a kept point: the tooltip shows its hypothesis and delta
    target = kept[len(kept) // 2]
    page.locator(f'#chart circle.pt.keep[data-n="{target["n"]}"]').hover()
    tip = page.locator("#tooltip")
    tip.wait_for(state="visible")
    text = tip.inner_text()
    assert target["h"][:40] in text
    assert "Δ" in text and f"#{target['n']}" in text
    if shots:
        shots(page, f"{name}-tooltip")

    # the other GPU type has its own chart
    second = [r for r in rows if r["s"] == 1]
    page.click('#series-switch [data-series="1"]')
    assert page.locator("#chart .pt").count() == len(second)
    page.click('#series-switch [data-series="0"]')


# --- tests -------------------------------------------------------------------------------------------


def test_dashboard_from_file_url(browser, site, data, shots):
    w = Watched(browser)
    try:
        page = w.open((site / "index.html").as_uri())
        shots(page, "dashboard-desktop")
        check_dashboard(page, data, shots, "dashboard-desktop")
        # learnings: rendered markdown, with the experiment id linked to its row
        assert page.locator("#learnings h2#md-summary").count() == 1
        assert page.locator("#learnings table").count() == 1
        link = page.locator("#learnings a.exp-link").first
        exp_id = link.inner_text()
        link.click()
        page.wait_for_selector(f"#row-{exp_id}.hl")
        assert page.locator("#table-body tr").count() == 1
        shots(page, "dashboard-desktop-full", full_page=True)
        assert w.errors == []
        assert all(u.startswith("file://") or u.startswith("data:") for u in w.requests), w.requests
    finally:
        w.close()


def test_dashboard_from_serve(browser, server, data, shots):
    w = Watched(browser)
    try:
        page = w.open(server)
        check_dashboard(page, data)
        shots(page, "dashboard-served")
        assert w.errors == []
        # nothing but the local server (and the page's inline data: favicon) was asked for anything
        assert all(u.startswith(server) or u.startswith("data:") for u in w.requests), w.requests
    finally:
        w.close()


def test_dashboard_on_a_phone(browser, site, data, shots):
    w = Watched(browser, 390, 844)
    try:
        page = w.open((site / "index.html").as_uri())
        # nothing wider than the screen: no sideways scrolling of the page itself
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        assert page.locator("#chart .pt").count() == sum(1 for r in rows_of(data) if r["s"] == 0)
        assert page.locator("#table-body tr").count() == 50
        shots(page, "dashboard-phone")
        page.locator("#experiments").scroll_into_view_if_needed()
        shots(page, "dashboard-phone-table")
        # a tap on a point pins its details, with a link to the PR, instead of leaving the page
        page.locator("#progress").scroll_into_view_if_needed()
        page.evaluate(
            """() => {
              const c = document.querySelector('#chart circle.pt.keep'), b = c.getBoundingClientRect();
              const at = {bubbles: true, clientX: b.x + b.width / 2, clientY: b.y + b.height / 2};
              c.dispatchEvent(new PointerEvent('pointerdown', {...at, pointerType: 'touch'}));
              c.dispatchEvent(new MouseEvent('click', at));
            }"""
        )
        link = page.locator("#tooltip.pinned a")
        link.wait_for(state="visible")
        assert link.get_attribute("href").startswith("https://github.com/example/autoresearch-ci/pull/")
        shots(page, "dashboard-phone-tooltip")
        assert w.errors == []
    finally:
        w.close()


def build_small(tmp_path, records) -> Path:
    ledger = tmp_path / "ledger.jsonl"
    ledger.write_text("".join(r.model_dump_json() + "\n" for r in records))
    return build_site(ledger, None, tmp_path / "site")


def test_empty_ledger_shows_a_message(browser, tmp_path, shots):
    index = build_site(tmp_path / "none.jsonl", None, tmp_path / "site")
    w = Watched(browser)
    try:
        page = w.open(index.as_uri())
        assert page.locator("#chart-empty").is_visible()
        assert "No experiments yet" in page.locator("#chart-empty").inner_text()
        assert page.locator("#chart svg").count() == 0
        assert page.locator("#table-empty").is_visible()
        assert page.locator('[data-figure="experiments"] .card-value').inner_text() == "0"
        shots(page, "dashboard-empty")
        assert w.errors == []
    finally:
        w.close()


def test_crashes_only_ledger_shows_a_message_and_the_table(browser, tmp_path, shots):
    recs = [r for r in synthetic_records(300, seed=1) if r.kind == "experiment"]
    crashes = [r for r in recs if r.verdict.decision in ("crash", "invalid")][:12]
    assert len(crashes) >= 5
    index = build_small(tmp_path, crashes)
    w = Watched(browser)
    try:
        page = w.open(index.as_uri())
        msg = page.locator("#chart-empty")
        assert msg.is_visible()
        assert "Nothing to chart yet" in msg.inner_text()
        assert page.locator("#chart svg").count() == 0
        assert page.locator("#table-body tr").count() == len(crashes)
        shots(page, "dashboard-crashes-only")
        assert w.errors == []
    finally:
        w.close()


def test_torn_ledger_shows_a_banner_and_scripts_in_text_stay_text(browser, tmp_path):
    recs = [r for r in synthetic_records(30, seed=2) if r.kind == "experiment"]
    recs[3].hypothesis = "</script><script>alert('pwned')</script><img src=x onerror=alert(2)>"
    ledger = tmp_path / "ledger.jsonl"
    ledger.write_text("".join(r.model_dump_json() + "\n" for r in recs) + recs[0].model_dump_json()[:50])
    index = build_site(ledger, None, tmp_path / "site")
    w = Watched(browser)
    try:
        page = w.open(index.as_uri())
        banner = page.locator("#warnings")
        assert banner.is_visible() and "could not be read" in banner.inner_text()
        assert page.locator("#table-body img").count() == 0
        page.fill("#search", "pwned")
        sync_api.expect(page.locator("#table-body tr")).to_have_count(1)
        assert "<script>alert('pwned')</script>" in page.locator("#table-body .hyp").inner_text()
        assert w.errors == []  # no dialog opened, no error logged
    finally:
        w.close()
