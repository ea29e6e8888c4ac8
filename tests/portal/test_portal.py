"""The tenant portal in a real browser: Debian's Chromium driven by Playwright, against a real `courier serve`
and a real receiver (both started by scripts/portal-tests.sh, on 127.0.0.1 only).

Each test is a function named test_*; the runner at the bottom runs them in order and exits non-zero on the first
failure. Every page a test opens while signed in is watched for console errors and uncaught exceptions (a CSP
violation is a console error), and every page is captured into $SCREENSHOTS.
"""

import json
import os
import sys
import time
import traceback
import urllib.request
from datetime import datetime, timedelta, timezone

from playwright.sync_api import Page, expect, sync_playwright

COURIER = os.environ["COURIER_URL"]
KEY = os.environ["API_KEY"]
OTHER_KEY = os.environ["OTHER_KEY"]
RECEIVER = os.environ["RECEIVER_URL"]
SCREENSHOTS = os.environ.get("SCREENSHOTS", "target/portal-screenshots")
ALL_SCOPES = ["webhooks:read", "webhooks:write", "deliveries:read", "deliveries:replay"]


def api(method, path, body=None, key=KEY):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"{COURIER}{path}", data=data, method=method)
    req.add_header("Authorization", f"Bearer {key}")
    req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as res:
            return res.status, json.loads(res.read() or b"null")
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"null")


def receiver(path):
    with urllib.request.urlopen(f"{RECEIVER}{path}", timeout=10) as res:
        return json.loads(res.read()) if path == "/received" else res.read()


def wait_for(what, check, seconds=30):
    deadline = time.time() + seconds
    while time.time() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def delivery(id):
    status, body = api("GET", f"/api/v1/deliveries/{id}")
    assert status == 200, body
    return body


def mint(scopes=ALL_SCOPES, key=KEY):
    status, body = api("POST", "/api/v1/portal/sessions", {"scopes": scopes, "expires_in": 3600}, key)
    assert status == 201, body
    return body["url"]


class Watched:
    """A browser context whose pages must not log a console error or throw."""

    def __init__(self, browser):
        self.context = browser.new_context(viewport={"width": 1280, "height": 900})
        self.problems = []
        self.page = self.context.new_page()
        self.page.on("console", lambda m: m.type == "error" and self.problems.append(f"console: {m.text}"))
        self.page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        self.page.on("response", lambda r: r.status >= 400 and self.problems.append(f"{r.status} for {r.url}"))
        self.page.on("dialog", lambda d: (self.problems.append(f"dialog opened: {d.message}"), d.dismiss()))

    def check(self):
        assert not self.problems, self.problems
        assert self.page.evaluate("window.__pwned === undefined"), "a receiver's script ran"

    def close(self):
        self.check()
        self.context.close()


def shoot(page: Page, name):
    os.makedirs(SCREENSHOTS, exist_ok=True)
    page.screenshot(path=os.path.join(SCREENSHOTS, f"{name}.png"), full_page=True)


def enter(page: Page, url: str) -> None:
    """Opens a magic link and signs in from its landing page (opening it alone changes nothing)."""
    page.goto(url)
    page.get_by_role("button", name="Continue to the portal").click()


def sign_in(browser, scopes=ALL_SCOPES):
    watched = Watched(browser)
    url = mint(scopes)
    enter(watched.page, url)
    watched.page.wait_for_url(f"{COURIER}/portal")
    assert "token" not in watched.page.url
    return watched


def setup():
    """Two webhooks: one that always answers 200, one failing (hostile body) until healed; a few events."""
    hooks = {}
    for name, path, attempts in [("steady", "/ok", 3), ("flaky", "/flaky", 1)]:
        status, body = api("POST", "/api/v1/webhooks", {
            "url": f"{RECEIVER}{path}", "filter": {"events": ["*"]}, "max_attempts": attempts,
            "description": f"the {name} receiver"})
        assert status == 201, body
        hooks[name] = body["id"]
    for i in range(3):
        status, body = api("POST", "/api/v1/events", {
            "type": "call.failed" if i == 2 else "call.completed",
            "data": {"call_id": f"call-{i}", "status": "done"}})
        assert status in (201, 202), body
    def all_finished():
        status, body = api("GET", "/api/v1/deliveries?limit=100")
        rows = body["data"]
        return len(rows) == 6 and all(d["status"] in ("succeeded", "failed") for d in rows) and rows
    rows = wait_for("the first deliveries to finish", all_finished)
    failed = [d for d in rows if d["webhook_id"] == hooks["flaky"]]
    assert all(d["status"] == "failed" for d in failed), failed
    return hooks


def test_overview_lists_the_webhooks_with_their_chart(browser, hooks):
    w = sign_in(browser)
    page = w.page
    expect(page.get_by_role("heading", name="Webhooks", level=1)).to_be_visible()
    for path in ["/ok", "/flaky"]:
        expect(page.get_by_role("link", name=f"{RECEIVER}{path}")).to_be_visible()
    expect(page.get_by_role("img", name=f"{RECEIVER}/flaky: 0 succeeded and 3 failed in the last 24 hours")).to_be_visible()
    expect(page.locator("article", has_text="/ok").get_by_text("100.0 %")).to_be_visible()
    shoot(page, "overview")
    w.close()


def test_a_failed_delivery_is_found_inspected_and_replayed(browser, hooks):
    w = sign_in(browser)
    page = w.page
    page.get_by_role("link", name="Delivery log").click()
    page.get_by_label("Status").select_option("failed")
    page.get_by_label("Webhook").select_option(hooks["flaky"])
    page.get_by_role("button", name="Filter").click()
    rows = page.locator("tbody tr")
    expect(rows).to_have_count(3)
    for i in range(3):
        expect(rows.nth(i).locator(".badge")).to_have_text("failed")
    shoot(page, "delivery-log")
    page.get_by_label("Call ID").fill("call-2")
    page.get_by_role("button", name="Filter").click()
    expect(rows).to_have_count(1)
    rows.first.get_by_role("link").click()

    # The attempt: HTTP 500 and the receiver's hostile body, as text.
    expect(page.get_by_role("heading", name="Attempts")).to_be_visible()
    expect(page.locator("td", has_text="HTTP 500")).to_be_visible()
    expect(page.locator("pre.body")).to_contain_text('<script>window.__pwned = 1; alert("pwned")</script>')
    expect(page.locator("pre.payload")).to_contain_text('"call_id": "call-2"')
    assert page.locator("img").count() == 0, "the receiver's <img> is text, not an element"
    original = page.url.rsplit("/", 1)[1]
    shoot(page, "delivery")

    receiver("/heal")
    replay = page.get_by_role("button", name="Replay")
    replay.focus()
    page.keyboard.press("Enter")  # Keyboard alone is enough.
    page.wait_for_url(lambda url: not url.endswith(original))
    replayed = page.url.rsplit("/", 1)[1]
    assert replayed.startswith("dlv_") and replayed != original
    body = wait_for("the replay to be delivered", lambda: (d := delivery(replayed))["status"] == "succeeded" and d)
    assert body["replay_of"] == original, body
    assert any(r["delivery_id"] == replayed for r in receiver("/received"))
    page.reload()
    expect(page.locator("dd .badge")).to_have_text("succeeded")
    w.close()


def test_send_a_test_event_to_one_webhook(browser, hooks):
    w = sign_in(browser)
    page = w.page
    page.get_by_role("link", name=f"{RECEIVER}/ok").click()
    expect(page.get_by_role("heading", name="Recent deliveries")).to_be_visible()
    shoot(page, "webhook")
    before = len(receiver("/received"))
    page.get_by_role("button", name="Send test event").click()
    page.wait_for_url(f"{COURIER}/portal/deliveries/dlv_*")
    sent = page.url.rsplit("/", 1)[1]
    body = wait_for("the test event to arrive", lambda: (d := delivery(sent))["status"] == "succeeded" and d)
    assert body["webhook_id"] == hooks["steady"] and body["event_type"] == "call.completed", body
    arrived = receiver("/received")[before:]
    assert [r["path"] for r in arrived] == ["/ok"], f"to this webhook only: {arrived}"
    w.close()


def test_recover_replays_every_failed_delivery_since(browser, hooks):
    w = sign_in(browser)
    page = w.page
    page.get_by_role("link", name="Recover").click()
    page.get_by_label("Webhook").select_option(hooks["flaky"])
    since = (datetime.now(timezone.utc) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")
    page.get_by_label("Failed since (UTC)").fill(since)
    page.get_by_role("button", name="Count failed deliveries").click()
    # Three failed at first; one of them was replayed already, and a bulk replay skips what was replayed.
    expect(page.get_by_role("status")).to_contain_text("2 failed deliveries would be replayed")
    shoot(page, "recover")
    page.get_by_role("button", name="Replay 2 deliveries").click()
    page.wait_for_url(f"{COURIER}/portal/replays/rpl_*")
    expect(page.locator("dd[role=status]")).to_have_text("finished", timeout=20_000)
    expect(page.locator("dl.facts dd").nth(1)).to_have_text("2")
    shoot(page, "replay-progress")
    wait_for("the recovered deliveries", lambda: len([
        d for d in api("GET", f"/api/v1/deliveries?webhook_id={hooks['flaky']}&status=succeeded&limit=100")[1]["data"]
        if d["replay_of"]]) == 3)
    w.close()


def test_event_catalog(browser, hooks):
    w = sign_in(browser)
    page = w.page
    page.get_by_role("link", name="Event catalog").click()
    for t in ["call.started", "call.connected", "call.completed", "call.failed", "call.disconnected", "call.agent.changed"]:
        expect(page.get_by_role("heading", name=t)).to_be_visible()
    expect(page.get_by_text("def verify_signature")).to_be_visible()
    shoot(page, "event-catalog")
    w.close()


def test_refusals(browser, hooks):
    # A used link lands on the expired page.
    url = mint()
    first = browser.new_context()
    page = first.new_page()
    enter(page, url)
    page.wait_for_url(f"{COURIER}/portal")
    again = browser.new_context().new_page()
    enter(again, url)
    expect(again.get_by_role("heading", name="This link has expired")).to_be_visible()
    shoot(again, "expired")
    forged = browser.new_context().new_page()
    enter(forged, f"{COURIER}/portal/login?token=pl_{'A' * 43}")
    expect(forged.get_by_role("heading", name="This link has expired")).to_be_visible()

    # Another tenant's session: 404 for this tenant's webhook and delivery.
    status, body = api("GET", "/api/v1/deliveries?limit=1")
    ours = body["data"][0]
    stranger = browser.new_context().new_page()
    enter(stranger, mint(key=OTHER_KEY))
    stranger.wait_for_url(f"{COURIER}/portal")
    for path in [f"/portal/webhooks/{ours['webhook_id']}", f"/portal/deliveries/{ours['id']}"]:
        res = stranger.goto(f"{COURIER}{path}")
        assert res.status == 404, (path, res.status)

    # A read-only session has no Replay button.
    reader = sign_in(browser, ["deliveries:read"])
    reader.page.goto(f"{COURIER}/portal/deliveries/{ours['id']}")
    expect(reader.page.get_by_role("heading", name="Attempts")).to_be_visible()
    assert reader.page.get_by_role("button", name="Replay").count() == 0
    reader.close()


TESTS = [
    test_overview_lists_the_webhooks_with_their_chart,
    test_a_failed_delivery_is_found_inspected_and_replayed,
    test_send_a_test_event_to_one_webhook,
    test_recover_replays_every_failed_delivery_since,
    test_event_catalog,
    test_refusals,
]


def main():
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        hooks = setup()
        for test in TESTS:
            started = time.time()
            try:
                test(browser, hooks)
            except Exception:
                traceback.print_exc()
                print(f"FAIL {test.__name__}", file=sys.stderr)
                sys.exit(1)
            print(f"ok   {test.__name__} ({time.time() - started:.1f} s)", file=sys.stderr)
        browser.close()


if __name__ == "__main__":
    main()
