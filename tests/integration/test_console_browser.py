"""The console in a real browser: Debian's headless Chromium, driven by Playwright for Python,
against the API server over HTTP on loopback, the real actors on the shared local Ray and the
HubSpot emulator. A person's path: sign in, create an activation through the form, watch its
backfill finish on its page, pause and resume it; look a contact up.

Set HUBSYNC_SCREENSHOTS=<dir> to keep a PNG of each page.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import ray

from crm.tokens import token_fingerprint
from events.model import AttributeChanged, AttributeDefined, AudienceDefined, AudienceEntered
from hubsync.api import ApiServer
from hubsync.config import Config
from tests.integration.conftest import SECRET_KEY
from tests.integration.harness import Hubsync

pytestmark = pytest.mark.integration

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
API_KEY = f"browser-test-key-{secrets.token_hex(12)}"


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip(
            "no Chromium on this machine (`apt-get install -y chromium`; .ci/run installs it): "
            "the console's browser test cannot run"
        )
    return path


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    executable = _chromium()
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        pytest.skip("Playwright for Python is not installed (pip install -e '.[test]')")
    async with async_playwright() as pw:
        launched = await pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            await launched.close()


async def _shot(page: Any, name: str) -> None:
    where = os.environ.get("HUBSYNC_SCREENSHOTS")
    if where:
        Path(where).mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(Path(where) / f"{name}.png"), full_page=True)


async def test_sign_in_create_through_the_form_watch_the_backfill_pause_and_resume(
    hubsync: Hubsync, redis_url: str, tmp_path: Path, browser: Any
) -> None:
    from playwright.async_api import expect

    emails = [f"b{i}@example.com" for i in range(40)]
    await hubsync.publish(
        [
            AudienceDefined(audience_id="vip", name="VIP customers"),
            AudienceDefined(audience_id="churn", name="Churn risk"),
            AttributeDefined(attribute_id="ltv", name="Lifetime value", value_type="number"),
            *(AudienceEntered(audience_id="vip", email=e) for e in emails),
            *(AttributeChanged(attribute_id="ltv", email=e, value=i) for i, e in enumerate(emails)),
        ]
    )
    await hubsync.members_projected("vip", len(emails))
    config = Config(
        redis_url=redis_url,
        home=tmp_path,
        namespace=hubsync.namespace,
        partitions=hubsync.settings.partitions,
        secret_key=SECRET_KEY,
    )
    server = ApiServer(
        config, api_key=API_KEY, host="127.0.0.1", port=0, redis_url=redis_url, poll_interval=0.3
    )
    await asyncio.to_thread(server.start)
    token = f"pat-na1-{uuid.uuid4()}"
    narrow = f"pat-na1-{uuid.uuid4()}"
    await asyncio.to_thread(
        hubsync.emulator.admin.register_token,
        narrow,
        ["crm.objects.contacts.read", "crm.objects.contacts.write"],
    )
    context = await browser.new_context(viewport={"width": 1360, "height": 900})
    page = await context.new_page()
    seen: list[str] = []
    page.on("response", lambda r: seen.append(r.url))
    try:
        # Signed out, every page leads to the sign-in form; a wrong key is refused in words.
        await page.goto(server.url + "/")
        await expect(page).to_have_url(re.compile(r"/signin\?next=/$"))
        await _shot(page, "1-sign-in")
        await page.get_by_label("API key").fill("not-the-key")
        await page.get_by_role("button", name="Sign in").click()
        await expect(page.locator("#sign-in-error")).to_contain_text("not the API key")
        await page.get_by_label("API key").fill(API_KEY)
        await page.get_by_role("button", name="Sign in").click()
        await expect(page.get_by_role("heading", name="Activations")).to_be_visible()
        await expect(page.locator("#activations")).to_contain_text("No activations yet")

        # New activation: the steps in order, through the form.
        await page.get_by_role("link", name="New activation").first.click()
        await expect(
            page.get_by_role("heading", name="1. Create the HubSpot token")
        ).to_be_visible()
        await expect(page.locator(".scopes")).to_contain_text("crm.schemas.contacts.write")
        await page.get_by_label("Name").fill("Browser test")
        await page.get_by_text("Advanced").click()
        await page.get_by_label("HubSpot API address").fill(hubsync.emulator.url)
        # A token without the schema scopes: the check names them.
        await page.get_by_label("HubSpot token").fill(narrow)
        await page.get_by_role("button", name="Test connection").click()
        result = page.locator("#connection-result")
        await expect(result).to_contain_text("lacks 2 of the four scopes")
        await expect(result).to_contain_text("crm.schemas.contacts.write")
        await page.get_by_label("HubSpot token").fill(token)
        await page.get_by_role("button", name="Test connection").click()
        await expect(result).to_contain_text("Connected")
        await page.get_by_label("Search the catalog").fill("vip")
        await expect(page.get_by_text("Churn risk")).to_be_hidden()
        await expect(page.get_by_text("40 members")).to_be_visible()
        await page.get_by_label(re.compile("VIP customers")).check()
        await page.get_by_label("Search the catalog").fill("")
        await page.get_by_label(re.compile("Lifetime value")).check()
        await page.get_by_role("button", name="Show the plan").click()
        await expect(page.locator("#plan-result")).to_contain_text("Properties hubsync will create")
        await expect(page.locator("#plan-result")).to_contain_text("raptor_vip_customers")
        await _shot(page, "2-new-activation")
        await page.get_by_role("button", name="Save and start syncing").click()

        # Its page: the backfill finishes, the properties are listed in HubSpot's group.
        await expect(page).to_have_url(re.compile(r"/activations/[^/]+$"), timeout=20_000)
        await expect(page.get_by_role("heading", name="Browser test")).to_be_visible()
        panel = page.locator("#status-panel")
        await expect(panel.locator(".backfills")).to_contain_text("done", timeout=90_000)
        await expect(panel.locator(".backfills li")).to_have_count(2)
        for item in await panel.locator(".backfills li").all():
            await expect(item).to_contain_text("40 of 40 (100%)", timeout=60_000)
        await expect(page.get_by_text("Raptor Smart Advisor CDP")).to_be_visible()
        await page.reload()  # the created internal names, as HubSpot has them
        await expect(page.locator("table.grid").first).to_contain_text("raptor_vip_customers")
        await asyncio.sleep(2.5)  # one more sample for the charts
        await page.reload()
        await expect(page.locator("#calls-chart polyline")).to_have_count(1)
        await _shot(page, "3-activation")
        held = await asyncio.to_thread(hubsync.emulator.admin.contact_properties)
        assert all(held.get(e, {}).get("raptor_vip_customers") == "true" for e in emails)

        # The Ray dashboard's Repr column, as of now: what each actor is doing, never the token.
        activation_id = page.url.rstrip("/").rsplit("/", 1)[1]
        actor = ray.get_actor(f"activation:{activation_id}", namespace=hubsync.namespace)
        text = await actor.describe.remote()
        assert text.startswith(
            f"ActivationActor({activation_id} 'Browser test': running, 0 pending"
        )
        assert "backfill 80/80 (100%)" in text and token not in text
        governor = ray.get_actor(
            f"governor:{token_fingerprint(token)}", namespace=hubsync.namespace
        )
        text = await governor.describe.remote()
        assert "calls in the 10 s window" in text and "left today" in text and token not in text

        # Pause, with a confirmation that says what happens in HubSpot; then resume.
        await panel.get_by_role("button", name="Pause").click()
        dialog = page.locator("#confirm")
        await expect(dialog).to_contain_text("Nothing in HubSpot changes")
        await _shot(page, "4-confirm-pause")
        await dialog.get_by_role("button", name="Pause").click()
        await expect(page.locator("#status-panel .badge")).to_contain_text("Paused")
        await expect(page.locator("#status-panel")).to_contain_text("paused by an operator")
        # by keyboard alone: focus Resume, Enter; the dialog focuses its action, Enter again
        await page.locator("#status-panel").get_by_role("button", name="Resume").focus()
        await page.keyboard.press("Enter")
        await expect(page.locator("#confirm")).to_contain_text("writes to HubSpot again")
        await page.keyboard.press("Enter")
        await expect(page.locator("#status-panel .badge")).to_contain_text("Running")

        # The contact search box, on every page: CDP and HubSpot side by side, in words.
        await page.get_by_label("Find a contact").fill("b3@example.com")
        await page.get_by_label("Find a contact").press("Enter")
        await expect(page.get_by_role("heading", name=re.compile("b3@example.com"))).to_be_visible()
        await expect(page.locator("main")).to_contain_text("HubSpot holds what the CDP says")
        await _shot(page, "5-contact")

        # The list shows it live.
        await page.get_by_role("link", name="Activations").click()
        await expect(page.locator("#activations")).to_contain_text("Browser test")
        await expect(page.locator("#activations")).to_contain_text("Running")
        await _shot(page, "6-list")
        assert token not in await page.content() and narrow not in await page.content()
    finally:
        await context.close()
        await asyncio.to_thread(server.stop)
    assert not [u for u in seen if not u.startswith(server.url)], "the console fetched elsewhere"
