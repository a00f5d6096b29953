"""The trace viewer's web UI in a real headless Chromium (Debian's `chromium`, driven by Playwright).

A `sentinel traces` process receives spans from the OpenTelemetry SDK over OTLP/gRPC; the browser then
searches for them, opens the trace, reads the waterfall and a span's details, follows a link to another
trace, uses the back button, opens `/trace/<id>` directly and an unknown id. Screenshots go to
$SENTINEL_SCREENSHOTS (or the test's tmp dir), and to docs/images/viewer-*.png for the docs when
SENTINEL_UPDATE_DOC_IMAGES=1.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry import trace as trace_api
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, format_span_id, format_trace_id
from playwright.sync_api import Browser, Locator, Page, expect, sync_playwright

from tests.support.process import wait_for
from tests.support.viewer import ViewerProcess, viewer_process

REPO = Path(__file__).resolve().parents[2]
DOCS_IMAGES = REPO / "docs" / "images"
UNKNOWN_TRACE = "0123456789abcdef0123456789abcdef"
TIMEOUT_MS = 15_000


def chromium_executable() -> str:
    """Debian's Chromium (or $SENTINEL_CHROMIUM). Missing is a failure, never a skip: CI must run this test."""
    explicit = os.environ.get("SENTINEL_CHROMIUM")
    if explicit:
        if not os.access(explicit, os.X_OK):
            pytest.fail(f"SENTINEL_CHROMIUM={explicit} is not an executable file")
        return explicit
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    if os.access("/usr/lib/chromium/chromium", os.X_OK):
        return "/usr/lib/chromium/chromium"
    pytest.fail(
        "Chromium is missing: this test drives a headless Chromium through Playwright. "
        "Install Debian's package (apt-get install chromium; `./dev test` does it when run as root) "
        "or set SENTINEL_CHROMIUM to a Chromium binary."
    )


@pytest.fixture
def viewer(tmp_path: Path) -> Iterator[ViewerProcess]:
    with viewer_process(tmp_path / "traces.db") as v:
        yield v


@pytest.fixture
def browser() -> Iterator[Browser]:
    executable = chromium_executable()
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def screenshots(tmp_path: Path) -> Path:
    directory = Path(os.environ.get("SENTINEL_SCREENSHOTS") or tmp_path / "screenshots")
    directory.mkdir(parents=True, exist_ok=True)
    return directory


# -- the traces ------------------------------------------------------------------------------------


class Shop:
    """Two traces sent by three services over OTLP/gRPC: an earlier, successful `frontend GET /cart`, and a
    failed (502) `frontend GET /checkout` → `sentinel GET /api/*` → (agent call, upstream `GET` that times
    out, with an exception event and a link to the cart trace) → `backend GET /api/cart`."""

    def __init__(self, grpc_port: int) -> None:
        self.providers = {
            service: TracerProvider(
                resource=Resource.create(
                    {"service.name": service, "service.version": "1.4.2", "deployment.environment": "demo"}
                )
            )
            for service in ("frontend", "sentinel", "backend")
        }
        for provider in self.providers.values():
            exporter = OTLPSpanExporter(endpoint=f"http://127.0.0.1:{grpc_port}", insecure=True)
            provider.add_span_processor(SimpleSpanProcessor(exporter))
        self.cart_id, self.cart_span = self._cart()
        self.trace_id, self.failing_span = self._checkout()
        for provider in self.providers.values():
            provider.shutdown()

    def tracer(self, service: str) -> trace_api.Tracer:
        return self.providers[service].get_tracer("demo", "1.0")

    def _cart(self) -> tuple[str, str]:
        t0 = time.time_ns() - 20 * 10**9
        root = self.tracer("frontend").start_span("GET /cart", kind=SpanKind.SERVER, start_time=t0)
        root.set_attribute("http.request.method", "GET")
        root.set_attribute("http.response.status_code", 200)
        root.end(end_time=t0 + 12 * 10**6)
        ctx = root.get_span_context()
        return format_trace_id(ctx.trace_id), format_span_id(ctx.span_id)

    def _checkout(self) -> tuple[str, str]:
        ms = 10**6
        t0 = time.time_ns() - 5 * 10**9
        frontend, sentinel, backend = self.tracer("frontend"), self.tracer("sentinel"), self.tracer("backend")
        root = frontend.start_span("GET /checkout", kind=SpanKind.SERVER, start_time=t0)
        root.set_attribute("http.request.method", "GET")
        root.set_attribute("http.response.status_code", 502)
        root.set_status(Status(StatusCode.ERROR))
        in_root = trace_api.set_span_in_context(root)

        server = sentinel.start_span("GET /api/*", context=in_root, kind=SpanKind.SERVER, start_time=t0 + 2 * ms)
        server.set_attribute("http.route", "/api/*")
        server.set_attribute("http.response.status_code", 502)
        server.set_attribute("sentinel.route.id", "api")
        server.set_status(Status(StatusCode.ERROR))
        in_server = trace_api.set_span_in_context(server)

        agent = sentinel.start_span(
            "agent auth request_headers", context=in_server, kind=SpanKind.CLIENT, start_time=t0 + 3 * ms
        )
        agent.set_attribute("sentinel.agent.id", "auth")
        agent.set_attribute("sentinel.agent.decision", "allow")
        agent.end(end_time=t0 + 5 * ms)

        cart = SpanContext(
            int(self.cart_id, 16), int(self.cart_span, 16), is_remote=True, trace_flags=trace_api.TraceFlags(1)
        )
        client = sentinel.start_span(
            "GET",
            context=in_server,
            kind=SpanKind.CLIENT,
            start_time=t0 + 6 * ms,
            links=[Link(cart, {"link.reason": "same session"})],
        )
        client.set_attribute("url.full", "http://127.0.0.1:8081/api/cart")
        client.set_attribute("error.type", "timeout")
        client.add_event(
            "exception",
            {"exception.type": "TimeoutError", "exception.message": "upstream did not answer within 150 ms"},
            timestamp=t0 + 156 * ms,
        )
        client.set_status(Status(StatusCode.ERROR, "upstream timed out"))
        in_client = trace_api.set_span_in_context(client)

        upstream = backend.start_span("GET /api/cart", context=in_client, kind=SpanKind.SERVER, start_time=t0 + 8 * ms)
        upstream.set_attribute("http.response.status_code", 200)
        upstream.end(end_time=t0 + 170 * ms)
        client.end(end_time=t0 + 156 * ms)
        server.end(end_time=t0 + 160 * ms)
        root.end(end_time=t0 + 182 * ms)
        ctx, failing = root.get_span_context(), client.get_span_context()
        return format_trace_id(ctx.trace_id), format_span_id(failing.span_id)


# -- the test --------------------------------------------------------------------------------------


def shoot(page: Page, directory: Path, name: str, full_page: bool = False) -> None:
    path = directory / f"viewer-{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    if os.environ.get("SENTINEL_UPDATE_DOC_IMAGES") == "1":
        # Only on request: a test run must not change tracked files.
        DOCS_IMAGES.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, DOCS_IMAGES / path.name)


def row(page: Page, name: str) -> Locator:
    """The waterfall row of the span called exactly `name`."""
    exact = page.locator("[data-testid=span-name]", has_text=re.compile(f"^{re.escape(name)}$"))
    return page.get_by_test_id("span-row").filter(has=exact)


def test_search_open_a_trace_and_read_a_span(browser: Browser, viewer: ViewerProcess, screenshots: Path) -> None:
    shop = Shop(viewer.ports["otlp grpc"])
    wait_for(
        lambda: viewer.span_count(shop.trace_id) == 5 and viewer.span_count(shop.cart_id) == 1,
        20,
        what="the spans to be stored",
    )

    page = browser.new_page(viewport={"width": 1280, "height": 860})
    page.set_default_timeout(TIMEOUT_MS)
    expect.set_options(timeout=TIMEOUT_MS)
    page_errors: list[str] = []
    page.on("pageerror", lambda exc: page_errors.append(str(exc)))

    # Search: service, errors only.
    page.goto(f"{viewer.url}/")
    service = page.get_by_test_id("search-service")
    expect(service.locator("option[value=frontend]")).to_have_count(1)
    service.select_option("frontend")
    expect(page.get_by_test_id("search-operation").locator("option[value='GET /checkout']")).to_have_count(1)
    page.get_by_test_id("search-submit").click()
    expect(page.get_by_test_id("result-item")).to_have_count(2)  # both traces, the newest first
    expect(page.get_by_test_id("result-name")).to_have_text(["frontend: GET /checkout", "frontend: GET /cart"])

    page.get_by_test_id("search-errors-only").check()
    page.get_by_test_id("search-submit").click()
    expect(page).to_have_url(re.compile(r"/search\?service=frontend&tags=%7B%22error%22%3A%22true%22%7D"))
    results = page.get_by_test_id("result-item")
    expect(results).to_have_count(1)
    result = results.first
    expect(result).to_have_attribute("data-trace-id", shop.trace_id)
    expect(result.get_by_test_id("result-name")).to_have_text("frontend: GET /checkout")
    expect(result.get_by_test_id("result-spans")).to_have_text("5 spans")
    expect(result.get_by_test_id("result-error")).to_have_text("3 errors")
    expect(result.get_by_test_id("result-duration")).to_have_text("182ms")
    services = result.get_by_test_id("result-services")
    for name in ("frontend (1)", "sentinel (3)", "backend (1)"):
        expect(services).to_contain_text(name)
    search_url = page.url
    shoot(page, screenshots, "search")

    # The trace: header and waterfall.
    result.get_by_test_id("result-link").click()
    expect(page).to_have_url(f"{viewer.url}/trace/{shop.trace_id}")
    expect(page.get_by_test_id("trace-title")).to_have_text("frontend: GET /checkout")
    expect(page.get_by_test_id("trace-id")).to_have_text(shop.trace_id)
    expect(page.get_by_test_id("trace-span-count")).to_have_text("5")
    expect(page.get_by_test_id("trace-duration")).to_have_text("182ms")
    rows = page.get_by_test_id("span-row")
    expect(rows.get_by_test_id("span-name")).to_have_text(
        ["GET /checkout", "GET /api/*", "agent auth request_headers", "GET", "GET /api/cart"]
    )
    expect(rows.get_by_test_id("span-service")).to_have_text(
        ["frontend", "sentinel", "sentinel", "sentinel", "backend"]
    )
    depths = [rows.nth(i).get_attribute("data-depth") for i in range(5)]
    assert depths == ["0", "1", "2", "2", "3"]
    errors = [rows.nth(i).get_attribute("data-error") for i in range(5)]
    assert errors == ["true", "true", "false", "true", "false"]
    expect(row(page, "GET").get_by_test_id("span-error-mark")).to_be_visible()
    expect(row(page, "agent auth request_headers").get_by_test_id("span-error-mark")).to_have_count(0)
    shoot(page, screenshots, "trace")

    # A span's details: attributes, the event at its time in the span, the link, the resource.
    failing = row(page, "GET")
    failing.click()
    detail = page.get_by_test_id("span-detail")
    expect(detail).to_have_count(1)
    expect(detail).to_have_attribute("data-span-id", shop.failing_span)
    attributes = detail.get_by_test_id("span-attributes")
    expect(attributes.locator("tr[data-key='error.type'] td")).to_have_text("timeout")
    expect(attributes.locator("tr[data-key='url.full'] td")).to_have_text("http://127.0.0.1:8081/api/cart")
    expect(attributes.locator("tr[data-key='otel.status_code'] td")).to_have_text("ERROR")
    expect(detail.get_by_test_id("detail-status")).to_contain_text("upstream timed out")
    event = detail.get_by_test_id("span-event")
    expect(event).to_have_count(1)
    expect(event.get_by_test_id("span-event-name")).to_have_text("exception")
    expect(event.get_by_test_id("span-event-time")).to_have_text("+150ms")
    expect(event.locator("tr[data-key='exception.type'] td")).to_have_text("TimeoutError")
    expect(detail.get_by_test_id("detail-parent-id")).to_contain_text(
        rows.nth(1).get_attribute("data-span-id") or "missing"
    )
    process = detail.get_by_test_id("span-process")
    expect(process.locator("tr[data-key='service.version'] td")).to_have_text("1.4.2")
    link = detail.get_by_test_id("span-link-open")  # the linked trace is stored here: a link
    expect(link).to_have_attribute("href", f"/trace/{shop.cart_id}?span={shop.cart_span}")
    failing.scroll_into_view_if_needed()
    shoot(page, screenshots, "span", full_page=True)

    # Follow the link, then the back button twice: the trace, then the search results.
    link.click()
    expect(page).to_have_url(f"{viewer.url}/trace/{shop.cart_id}?span={shop.cart_span}")
    expect(page.get_by_test_id("trace-title")).to_have_text("frontend: GET /cart")
    expect(page.get_by_test_id("span-detail")).to_have_attribute("data-span-id", shop.cart_span)
    page.go_back()
    expect(page.get_by_test_id("trace-title")).to_have_text("frontend: GET /checkout")
    page.go_back()
    expect(page).to_have_url(search_url)
    expect(page.get_by_test_id("result-item")).to_have_count(1)
    expect(page.get_by_test_id("search-errors-only")).to_be_checked()

    # /trace/<id> opened directly (as from an access-log line), and the trace id box with a traceparent.
    page.goto(f"{viewer.url}/trace/{shop.trace_id}")
    expect(page.get_by_test_id("trace-title")).to_have_text("frontend: GET /checkout")
    expect(page.get_by_test_id("span-row")).to_have_count(5)
    page.get_by_test_id("trace-id-input").fill(f"00-{shop.cart_id}-{shop.cart_span}-01")
    page.get_by_test_id("trace-id-open").click()
    expect(page).to_have_url(f"{viewer.url}/trace/{shop.cart_id}")
    expect(page.get_by_test_id("trace-title")).to_have_text("frontend: GET /cart")

    # An unknown trace id.
    page.goto(f"{viewer.url}/trace/{UNKNOWN_TRACE}")
    expect(page.get_by_test_id("trace-not-found")).to_contain_text("Trace not found")
    expect(page.get_by_test_id("trace-not-found")).to_contain_text(UNKNOWN_TRACE)
    expect(page.get_by_test_id("span-row")).to_have_count(0)

    assert page_errors == []
