"""The shop-floor screen in a real browser (Debian's chromium driven by Playwright) against a real
daemon: one card per machine readable from three metres, usable on a phone (390 px), a 10" tablet
(800 px) and a desktop (1440 px); bad parts are red, the probe is not a cutting tool, every text
meets WCAG AA contrast, charts have a text summary.

A cell of its own (this module acknowledges a condition, which the other browser tests must not see).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from monitor.model import ActionKind, AlertState
from tests.browser import TIMEOUT_MS, Watched, screenshot_path
from tests.browser import open_watched as _open
from tests.dashboard.cell import OPERATOR_TOKEN, SIM, XSS, Cell, start_cell
from tests.requires import need_binary

pytestmark = pytest.mark.asyncio(loop_scope="module")

WIDTHS = {"phone": (390, 844), "tablet": (800, 1280), "desktop": (1440, 900)}
"""Viewports (CSS px): a phone held upright, a 10" tablet upright, a desktop screen."""

need_binary("chromium", "chromium", module=True)  # before the module's daemon starts

# The contrast of every visible text element against the background it is drawn on (WCAG 2.x
# relative luminance), walking up to the first opaque background. Plotly's SVG is left out (its
# text is described by the chart summary).
CONTRAST_JS = """
() => {
  const parse = (c) => { const m = c.match(/rgba?\\(([^)]+)\\)/); if (!m) return null;
    const p = m[1].split(",").map(Number); return { r: p[0], g: p[1], b: p[2], a: p.length > 3 ? p[3] : 1 }; };
  const lum = (c) => { const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
    return 0.2126 * f(c.r) + 0.7152 * f(c.g) + 0.0722 * f(c.b); };
  const bgOf = (el) => { for (let n = el; n; n = n.parentElement) {
      const c = parse(getComputedStyle(n).backgroundColor); if (c && c.a > 0.5) return c; }
    return { r: 255, g: 255, b: 255, a: 1 }; };
  const out = [];
  for (const el of document.querySelectorAll("header *, main *")) {
    if (el.closest(".js-plotly-plot, svg, .visually-hidden, option, select")) continue;
    const own = [...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
    if (!own) continue;
    const r = el.getBoundingClientRect(); if (!r.width || !r.height) continue;
    const fg = parse(getComputedStyle(el).color); const bg = bgOf(el);
    const [a, b] = [lum(fg), lum(bg)].sort((x, y) => y - x);
    out.push({ text: el.textContent.trim().slice(0, 40), cls: el.className, ratio: (a + 0.05) / (b + 0.05) });
  }
  return out;
}
"""


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def cell(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Cell]:
    async with start_cell(tmp_path_factory.mktemp("floor")) as c:
        yield c


async def _context(browser: Any, width: int, height: int) -> Any:
    ctx = await browser.new_context(viewport={"width": width, "height": height}, has_touch=width < 1000)
    ctx.set_default_timeout(TIMEOUT_MS)
    return ctx


async def _no_sideways_scroll(w: Watched) -> None:
    sizes = await w.page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert sizes[0] <= sizes[1], f"{w.page.url}: the page is {sizes[0]} px wide in a {sizes[1]} px window"


async def test_api_floor_has_one_card_per_machine_worst_condition_first(cell: Cell) -> None:
    async with aiohttp.ClientSession() as http, http.get(f"{cell.url}/api/floor") as r:
        assert r.status == 200
        cards = {c["machine"]: c for c in (await r.json())["machines"]}
    assert set(cards) == set(cell.daemon.site.machine_ids())
    sim = cards[SIM]
    assert sim["light"] == "red" and sim["word"] == "ACT NOW"
    top = sim["top"]
    # the tool_wear run ends with both bores out of tolerance: the card says what to do, in the register
    assert top["level"] == "out_of_tolerance" and top["feature"] in ("hole1_dia", "hole2_dia")
    assert top["action"].startswith("quarantine part 100 and apply T12 D-wear -0.0")
    assert top["state"] == "open" and top["offset"].startswith("T12 D-wear -0.0")
    levels = [top["level"], *(o["level"] for o in sim["others"])]
    ranks = ["recovering", "watch", "warning", "critical", "out_of_tolerance"]
    assert [ranks.index(x) for x in levels] == sorted((ranks.index(x) for x in levels), reverse=True)
    assert len({top["feature"], *(o["feature"] for o in sim["others"])}) == 1 + len(sim["others"])  # one per feature
    assert cards[XSS]["light"] == "red" and cards[XSS]["word"] == "SIGNAL LOST"
    async with aiohttp.ClientSession() as http, http.get(f"{cell.url}/api/floor?machine=nope") as r:
        assert r.status == 404


async def _box(element: Any) -> Any:
    """The element's box. A refresh redraws the cards and tables: an element found just before a
    redraw is gone when it is measured (playwright then answers None), so it is found again."""
    for _ in range(10):
        await element.wait_for()
        box = await element.bounding_box()
        if box is not None:
            return box
    raise AssertionError(f"{element} was redrawn away ten times in a row while being measured")


async def _font_px(element: Any) -> float:
    """The element's computed font size. Like `_box`: an element redrawn between being found and
    evaluated is detached (its computed style is empty), so it is found again."""
    for _ in range(10):
        await element.wait_for()
        font = await element.evaluate("e => e.isConnected ? parseFloat(getComputedStyle(e).fontSize) : null")
        if font is not None:
            return float(font)
    raise AssertionError(f"{element} was redrawn away ten times in a row while being measured")


@pytest.mark.parametrize("screen", list(WIDTHS))
async def test_the_floor_reads_on_a_phone_a_tablet_and_a_desktop(cell: Cell, browser: Any, screen: str) -> None:
    width, height = WIDTHS[screen]
    ctx = await _context(browser, width, height)
    try:
        w = await _open(ctx, f"{cell.url}/machine?id={SIM}")
        page = w.page
        card = page.locator(f'#floor .card[data-machine="{SIM}"]')
        await card.wait_for()
        assert await card.get_attribute("data-light") == "red"
        assert (await card.locator(".word").text_content() or "").strip() == "ACT NOW"  # colour and word
        todo = card.locator('[data-role="action"]')
        button = card.locator("button.ack")
        for thing in (todo, button):  # the action and the button are on the first screen, no scrolling
            box = await _box(thing)
            assert box["x"] >= 0 and box["x"] + box["width"] <= width
            assert box["y"] + box["height"] <= height, f"{screen}: {await thing.text_content()} is below the fold"
        box = await _box(button)
        assert box["height"] >= 48  # a gloved finger
        assert (await todo.text_content() or "").startswith("quarantine part 100 and apply T12 D-wear -0.0")
        font = await _font_px(todo)
        assert font >= 19  # readable from three metres on a tablet
        await page.locator("#parts tbody tr").nth(49).wait_for()
        await _no_sideways_scroll(w)
        await page.screenshot(path=str(screenshot_path(f"screenshot-floor-{width}.png")))
        w.assert_clean(cell.url)
        for path in ("/", "/alerts?state=", f"/feature?machine={SIM}&program=O1001&feature=hole1_dia"):
            other = await _open(ctx, cell.url + path)
            await other.page.locator("#live.on").wait_for()
            if path == "/":
                await other.page.locator("#floor .card").nth(2).wait_for()
            elif path.startswith("/alerts"):
                await other.page.locator("#alerts tbody tr").first.wait_for()
                msg = other.page.locator("#alerts tbody tr td.message").first
                box = await _box(msg)
                assert box["width"] >= min(width - 40, 250), "the message column is too narrow to read"
            else:
                await other.page.locator('#chart[data-points="100"]').wait_for()
            await _no_sideways_scroll(other)
            other.assert_clean(cell.url)
    finally:
        await ctx.close()


async def test_bad_parts_are_red_and_the_probe_is_not_a_cutting_tool(cell: Cell, browser: Any) -> None:
    features = cell.daemon.site.programs["O1001"].feature_models()
    parts = await cell.daemon.core.read(lambda store: store.parts(machine=SIM, last=50))
    bad = {p.key: [f for f in features if f.judge(p.measurements) is False] for p in parts}
    assert any(bad.values())  # the run ends out of tolerance
    ctx = await _context(browser, 1440, 900)
    try:
        w = await _open(ctx, f"{cell.url}/machine?id={SIM}")
        rows = w.page.locator("#parts tbody tr")
        await rows.nth(49).wait_for()
        for part in parts:
            row = w.page.locator(f'#parts tbody tr[data-key="{part.key}"]')
            status = (await row.locator("td.status").text_content()) or ""
            if bad[part.key]:
                assert status == "out of tolerance: " + ", ".join(f.name for f in bad[part.key])
                assert await row.get_attribute("data-bad") == "1"
                red = await row.locator(".badge.bad").evaluate("e => getComputedStyle(e).backgroundColor")
                assert red == "rgb(183, 28, 28)"
                assert await row.locator(".bad-value").count() == sum(len(f.signals) for f in bad[part.key])
            else:
                assert status == "complete" and await row.get_attribute("data-bad") is None
        tools = set(await w.page.locator("#parts tbody td.tool").all_text_contents())
        assert tools and "99" not in tools  # the probe (tool 99 in the simulation) is not the tool that cut
        w.assert_clean(cell.url)
        good = await _open(ctx, f"{cell.url}/machine?id={XSS}")  # six parts in tolerance: complete, not red
        await good.page.locator("#parts tbody tr").nth(5).wait_for()
        assert set(await good.page.locator("#parts tbody td.status").all_text_contents()) == {"complete"}
        assert await good.page.locator("#parts tbody tr.bad, #parts .bad-value").count() == 0
    finally:
        await ctx.close()


async def test_every_text_meets_wcag_aa_contrast(cell: Cell, browser: Any) -> None:
    ctx = await _context(browser, 1440, 900)
    try:
        worst: list[tuple[float, str, str, str]] = []
        for path in ("/", f"/machine?id={SIM}", "/alerts?state=", f"/feature?machine={SIM}&program=O1001&feature=hole1_dia"):
            w = await _open(ctx, cell.url + path)
            await w.page.locator("#live.on").wait_for()
            await w.page.locator("main table tbody tr").first.wait_for()
            if "feature" in path:
                await w.page.locator("#evidence dl").wait_for()
            else:
                await w.page.locator("main .badge").first.wait_for()
            found = await w.page.evaluate(CONTRAST_JS)
            assert len(found) > 20
            worst += [(f["ratio"], path, f["text"], str(f["cls"])) for f in found if f["ratio"] < 4.5]
        assert not worst, f"below 4.5:1: {sorted(worst)[:10]}"
    finally:
        await ctx.close()


async def test_the_chart_has_a_text_summary(cell: Cell, browser: Any) -> None:
    ctx = await _context(browser, 1440, 900)
    try:
        w = await _open(ctx, f"{cell.url}/feature?machine={SIM}&program=O1001&feature=hole1_dia")
        page = w.page
        await page.locator('#chart[data-points="100"]').wait_for()
        chart = page.locator("#chart")
        assert await chart.get_attribute("role") == "img"
        summary_id = await chart.get_attribute("aria-describedby")
        assert summary_id
        summary = (await page.locator(f"#{summary_id}").text_content()) or ""
        parts = await cell.daemon.core.read(lambda store: store.parts(machine=SIM, program="O1001"))
        feature = next(f for f in cell.daemon.site.programs["O1001"].feature_models() if f.name == "hole1_dia")
        bad = sum(1 for p in parts if feature.judge(p.measurements) is False)
        assert "100 parts" in summary and f"{bad} out of tolerance" in summary
        assert "lower limit 10.0000" in summary and "Condition: out of tolerance since part" in summary
        w.assert_clean(cell.url)
    finally:
        await ctx.close()


async def test_acknowledge_from_the_card_is_recorded_with_the_user_and_comment(cell: Cell, browser: Any) -> None:
    ctx = await _context(browser, *WIDTHS["tablet"])
    try:
        w = await _open(ctx, f"{cell.url}/machine?id={SIM}")
        page = w.page
        card = page.locator(f'#floor .card[data-machine="{SIM}"]')
        await card.locator("button.ack").wait_for()
        target = await cell.daemon.core.read(lambda store: store.alerts(machine=SIM, state=AlertState.OPEN))
        async with aiohttp.ClientSession() as http, http.get(f"{cell.url}/api/floor?machine={SIM}") as r:
            top = (await r.json())["machines"][0]["top"]
        assert top["id"] in {a.id for a in target}
        await card.locator("button.ack").click()  # no token yet: told what to do, nothing written
        await page.locator("#notice.error", has_text="Enter your token").wait_for()
        await page.fill("#token", OPERATOR_TOKEN)
        await page.locator("#token").dispatch_event("change")
        await card.locator(".act input").fill("re-probed part 100: it is real, tool 12 worn")
        # the card is redrawn while the comment is typed (every part, and the refresh the token asks for):
        # what was typed stays, and so does the cursor (under load the tap landed on the redrawn card and
        # acknowledged without the comment)
        typed = await card.locator(".act input").element_handle()
        await page.locator("#token").dispatch_event("change")  # asks for a refresh
        await page.wait_for_function("(e) => !e.isConnected", arg=typed)
        await typed.dispose()
        assert await card.locator(".act input").input_value() == "re-probed part 100: it is real, tool 12 worn"
        assert await page.evaluate("document.activeElement.dataset.condition") == top["id"]
        await card.locator("button.ack").click()
        await page.locator("#notice.ok", has_text="Acknowledged by olga").wait_for()
        after = await cell.daemon.core.read(lambda store: store.alert(top["id"]))
        assert after is not None and after.state is AlertState.ACKNOWLEDGED
        actions = await cell.daemon.core.read(lambda store: store.actions(condition_id=top["id"]))
        assert [(a.kind, a.user, a.comment) for a in actions] == [
            (ActionKind.ACKNOWLEDGE, "olga", "re-probed part 100: it is real, tool 12 worn")
        ]
        await card.filter(has_text="acknowledged by olga").wait_for()  # the card shows who (on top or among the others)
        await page.locator("#actions tbody tr", has_text="re-probed part 100").wait_for()  # what was done
        # the refresh that drew both (the ack's, the token's, the live event's) leaves the answer on show:
        # taken back within a second, it was missed by a glance (and by a browser on a loaded machine)
        assert await page.locator("#notice.ok", has_text="Acknowledged by olga").is_visible()
        w.assert_clean(cell.url)
    finally:
        await ctx.close()


async def test_offset_applied_and_tool_changed_are_recorded_from_the_card_with_two_taps(cell: Cell, browser: Any) -> None:
    ctx = await _context(browser, *WIDTHS["phone"])
    try:
        w = await _open(ctx, f"{cell.url}/machine?id={SIM}")
        page = w.page
        await page.fill("#token", OPERATOR_TOKEN)
        await page.locator("#token").dispatch_event("change")
        card = page.locator(f'#floor .card[data-machine="{SIM}"]')
        offset = card.locator('button.record[data-kind="offset_applied"]')
        await offset.wait_for()
        async with aiohttp.ClientSession() as http, http.get(f"{cell.url}/api/floor?machine={SIM}") as r:
            top = (await r.json())["machines"][0]["top"]
        advised = [(o["label"], o["change_mm"]) for o in top["offsets"]]
        assert advised and advised[0][0] == "T12 D-wear"
        before = await cell.daemon.core.read(lambda store: store.actions(condition_id=top["id"]))
        await offset.click()  # the first tap only says what will be recorded
        await card.locator("button.record.armed", has_text="Tap again: T12 D-wear").wait_for()
        assert await cell.daemon.core.read(lambda store: store.actions(condition_id=top["id"])) == before
        await card.locator("button.record.armed").click()
        await page.locator("#notice.ok", has_text="Offset applied: T12 D-wear").wait_for()
        recorded = await cell.daemon.core.read(lambda store: store.actions(condition_id=top["id"]))
        new = [a for a in recorded if a not in before]
        assert [(a.kind, a.user, a.register.label if a.register else None, a.change) for a in new] == [
            (ActionKind.OFFSET_APPLIED, "olga", label, change) for label, change in advised
        ]
        await page.locator("#actions tbody tr", has_text="offset applied: T12 D-wear").wait_for()

        tool = card.locator('button.record[data-kind="tool_changed"]')
        await tool.click()
        await tool.click()
        await page.locator("#notice.ok", has_text="Tool 12 changed").wait_for()
        changed = await cell.daemon.core.read(lambda store: store.actions(condition_id=top["id"]))
        assert [(a.kind, a.tool) for a in changed if a.kind is ActionKind.TOOL_CHANGED] == [(ActionKind.TOOL_CHANGED, "12")]
        await card.locator(".did", has_text="olga").wait_for()  # the card's last action says who
        await _no_sideways_scroll(w)
        w.assert_clean(cell.url)
        feature = await _open(ctx, f"{cell.url}/feature?machine={SIM}&program=O1001&feature={top['feature']}")
        done = feature.page.locator("#feature-actions tbody tr")
        await done.filter(has_text="offset applied: T12 D-wear").wait_for()  # the feature page says what was done
        assert await done.filter(has_text="olga (operator)").count() >= 2
        feature.assert_clean(cell.url)
    finally:
        await ctx.close()
