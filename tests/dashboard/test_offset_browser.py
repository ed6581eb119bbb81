"""'Apply on the controller' clicked in a real browser (Debian's chromium) on the shop-floor card of a
daemon that reads the secure simulated CNC over OPC UA (SignAndEncrypt): an operator is not offered
the write (told it needs an engineer) and nothing is written; an engineer's two taps write the advice on the controller, which the
register shows, and the action is recorded with who did it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from monitor.config import load_site
from monitor.model import ActionKind
from monitor.sim.closedloop import ClosedLoop
from monitor.sim.opcua_server import OpcUaSimServer
from tests.browser import TIMEOUT_MS, open_watched
from tests.daemons import running_daemon
from tests.offset_cell import (
    ALICE,
    BOB,
    CONNECTED,
    DWEAR,
    EFFECTS,
    SHAPE,
    T0,
    bore_out_of_tolerance,
    offset_env,
    offsets_pki,
    write_site,
)
from tests.requires import need_binary

pytestmark = pytest.mark.asyncio(loop_scope="module")

need_binary("chromium", "chromium", module=True)  # before the daemon starts


async def _use_token(page: Any, token: str) -> None:
    await page.fill("#token", token)
    await page.locator("#token").dispatch_event("change")


async def test_apply_on_the_controller_from_the_card_engineer_writes_operator_not_offered(tmp_path: Path, browser: Any) -> None:
    pki = offsets_pki(tmp_path / "pki")
    with offset_env():
        async with OpcUaSimServer([SHAPE], security=pki.server) as sim:
            site = load_site(write_site(tmp_path, sim.endpoint, pki, dashboard=True))
            await sim.publish(SHAPE.id, "program.name", "O1001", T0)
            await sim.publish(SHAPE.id, "part.count", 0, T0)
            async with running_daemon(site) as running:
                await running.until(CONNECTED, timeout_s=60)
                event = await bore_out_of_tolerance(running, ClosedLoop(sim, {SHAPE.id: EFFECTS}))
                condition = event.data["id"]
                [advice] = event.data["evidence"]["advice"]["offsets"]
                assert advice["label"] == "T12 D-wear" and advice["change_mm"] > 0
                written = f"T12 D-wear +{advice['change_mm']:.4f} mm"
                url = running.daemon.dashboard_url
                assert url is not None
                ctx = await browser.new_context(viewport={"width": 800, "height": 1280}, has_touch=True)
                ctx.set_default_timeout(TIMEOUT_MS)
                try:
                    w = await open_watched(ctx, f"{url}machine?id={SHAPE.id}")
                    page = w.page
                    card = page.locator(f'#floor .card[data-machine="{SHAPE.id}"]')
                    apply = card.locator('button.apply[data-kind="apply_offset"]')
                    await apply.wait_for()

                    # an operator is not offered the write (the server refuses it anyway: test_offset_apply)
                    await _use_token(page, BOB)
                    await card.locator('[data-role="apply-needs"]', has_text="needs an engineer").wait_for()
                    assert await apply.count() == 0
                    assert await card.locator('button.record[data-kind="offset_applied"]').count() == 1  # recording is theirs
                    assert sim.register_writes == [] and sim.register_value(SHAPE.id, DWEAR) == 0.0

                    # the engineer: the first tap says what will be written, the second writes the advice
                    # between parts, read back, recorded
                    await _use_token(page, ALICE)
                    await card.locator("button.apply:not(.armed)", has_text="Apply on the controller").click()
                    armed = card.locator("button.apply.armed", has_text=f"Tap again: write {written}")
                    first = await armed.element_handle()
                    # the card is redrawn between the taps (as on every part; here the token is read
                    # again): the second tap still confirms, it does not arm again
                    await _use_token(page, ALICE)
                    await page.wait_for_function("button => !button.isConnected", arg=first)
                    await armed.click()
                    notice = page.locator("#notice.ok", has_text="Applied on the controller: T12 D-wear: 0.0000 →")
                    await notice.wait_for()
                    assert sim.register_value(SHAPE.id, DWEAR) == pytest.approx(advice["change_mm"], abs=1e-4)
                    assert [(x.register, x.user) for x in sim.register_writes] == [(DWEAR, "engineer")]
                    assert f"{sim.register_value(SHAPE.id, DWEAR):.4f}" in (await notice.text_content() or "")
                    actions = await running.daemon.core.read(lambda store: store.actions(condition_id=condition))
                    assert [(a.kind, a.user, a.source) for a in actions] == [(ActionKind.OFFSET_APPLIED, "alice", "controller")]
                    [applied] = actions
                    assert applied.old_value == 0.0 and applied.new_value == pytest.approx(advice["change_mm"], abs=1e-4)
                    assert applied.part_number == 6 and "through the dashboard" in applied.reason
                    await card.locator(".did", has_text="alice").wait_for()  # the card says who did it
                    w.assert_clean(url.rstrip("/"))
                finally:
                    await ctx.close()
