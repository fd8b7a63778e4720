"""`embedlake explore` in a real browser: Debian's chromium, headless, driven by Playwright for
Python (`executable_path`: no browser is downloaded). One server per module, on a copy of the
session lake (`embedlake run` made it). The page runs with its CSP bypassed, so that only the
page's own text handling stands between lake text and script (the CSP is a second line)."""

from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path

import pytest

from embedlake.tasks.catalog import connect_read_only
from embedlake.tasks.explore import Explorer, make_server
from embedlake.tasks.reviews import add_reviews, export_collection
from tests.conftest import copy_lake

pytestmark = [pytest.mark.e2e, pytest.mark.heavy]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if (CHROMIUM is None or shutil.which("chromium") is None) and not os.environ.get(
    "CI_REQUIRE_CHROMIUM"
):
    pytest.skip(
        "chromium not installed (.ci/run installs it and sets CI_REQUIRE_CHROMIUM)",
        allow_module_level=True,
    )
playwright_api = pytest.importorskip("playwright.sync_api")
# WebGL2 in headless chromium without a GPU: SwiftShader through ANGLE
CHROMIUM_ARGS = ["--use-angle=swiftshader", "--enable-unsafe-swiftshader"]


def lake_listing(lake: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(lake)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(lake.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


@pytest.fixture(scope="module")
def site(pipeline_lake, tmp_path_factory):
    """(lake, url, page): one server on a copy of the session lake, one headless chromium."""
    lake = copy_lake(pipeline_lake.path, tmp_path_factory.mktemp("explore-browser") / "lake")
    explorer = Explorer(lake, timeout=30)
    server, url = make_server(explorer, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1})
    thread.daemon = True
    thread.start()
    with playwright_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900}, bypass_csp=True)
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        yield lake, url, page
        browser.close()
    explorer.close()
    server.shutdown()
    server.server_close()
    assert not errors, errors


def open_image(page, url: str, image_id: str) -> None:
    page.goto(url + "#image/" + image_id)
    page.wait_for_function(
        f"window.explorer.image && window.explorer.image.image_id === {json.dumps(image_id)}"
    )


def open_map(page, url: str) -> None:
    page.goto(url + "#map")
    page.wait_for_function("window.explorer && window.explorer.ready", timeout=30_000)


def groups(lake: Path) -> list[tuple[str, str, str, int]]:
    with connect_read_only(lake) as con:
        return con.execute(
            "SELECT backbone, weights_id, precision, count(*) FROM map GROUP BY ALL ORDER BY ALL"
        ).fetchall()


def ordered_ids(lake: Path, group: tuple) -> list[str]:
    with connect_read_only(lake) as con:
        rows = con.execute(
            "SELECT image_id FROM map WHERE backbone = ? AND weights_id = ? AND precision = ?",
            list(group[:3]),
        ).fetchall()
    return sorted((r[0] for r in rows), key=lambda i: (int(i[:16], 16), i))


def test_the_map_draws_every_point_of_each_group(site):
    lake, url, page = site
    open_map(page, url)
    found = groups(lake)
    assert len(found) >= 2  # two backbones
    for backbone, weights_id, precision, count in found:
        name = f"{backbone}/{weights_id}/{precision}"
        if page.eval_on_selector("#group", "s => s.value") != name:
            page.select_option("#group", name)
            page.wait_for_function(
                f"window.explorer.state.g === {json.dumps(name)} && "
                f"window.explorer.points === {count}"
            )
        drawn = page.evaluate("window.explorer.drawn")
        assert drawn == count == page.evaluate("window.explorer.points")
    # the canvas holds coloured pixels, not only the background
    lit = page.evaluate(
        """() => { const c = document.getElementById('map');
        const g = c.getContext('webgl2'); const px = new Uint8Array(c.width * c.height * 4);
        g.readPixels(0, 0, c.width, c.height, g.RGBA, g.UNSIGNED_BYTE, px);
        let n = 0; for (let i = 0; i < px.length; i += 4) if (px[i] > 40 || px[i+1] > 40) n++;
        return n; }"""
    )
    assert lit > 0


def test_a_click_opens_the_image_with_its_neighbours_under_each_backbone(site):
    lake, url, page = site
    open_map(page, url)
    group = groups(lake)[0]
    page.select_option("#group", "/".join(group[:3]))
    page.wait_for_function(f"window.explorer.points === {group[3]}")
    ids = ordered_ids(lake, group)
    box = page.locator("#map").bounding_box()
    x, y = page.evaluate(
        """(i) => { const s = window.explorer.state; const c = document.getElementById('map');
        return [(s.xy[2*i] - s.view.cx) * s.view.z + c.clientWidth / 2,
                -(s.xy[2*i+1] - s.view.cy) * s.view.z + c.clientHeight / 2]; }""",
        0,
    )
    page.mouse.click(box["x"] + x, box["y"] + y)
    page.wait_for_selector("#neighbors .column")
    shown = page.text_content("#image-id")
    # the nearest point to the click: the first, unless another lies on top of it
    xy = page.evaluate("Array.from(window.explorer.state.xy)")
    same_place = [ids[i] for i in range(len(ids)) if (xy[2 * i], xy[2 * i + 1]) == (xy[0], xy[1])]
    assert shown in same_place
    columns = page.locator("#neighbors .column")
    assert columns.count() == len(groups(lake))
    with connect_read_only(lake) as con:
        expected = con.execute(
            "SELECT backbone, count(*) FROM neighbors WHERE image_id = ? GROUP BY ALL",
            [shown],
        ).fetchall()
    for backbone, count in expected:
        column = page.locator(f"#neighbors .column:has(h3:text-is('{backbone}'))")
        assert column.locator(".item").count() == min(count, 10)


def test_a_where_filter_highlights_the_matching_points(site):
    lake, url, page = site
    open_map(page, url)
    group = groups(lake)[0]
    page.select_option("#group", "/".join(group[:3]))
    page.wait_for_function(f"window.explorer.points === {group[3]}")
    where = "path LIKE 'copies/%' OR label = 'coffee'"
    page.fill("#filter", where)
    page.click("#filter-form button[type=submit]")
    page.wait_for_function("typeof window.explorer.filterCount === 'number'")
    flagged = page.evaluate(
        "Array.from(window.explorer.state.flags).flatMap((f, i) => (f & 1) ? [i] : [])"
    )
    ids = ordered_ids(lake, group)
    with connect_read_only(lake) as con:
        expected = {
            r[0]
            for r in con.execute(
                "SELECT i.image_id FROM images i LEFT JOIN metadata m USING (path) WHERE " + where
            ).fetchall()
        }
    assert {ids[i] for i in flagged} == expected and expected
    assert page.evaluate("window.explorer.state.filterActive")
    assert page.text_content("#filter-status").startswith(f"{len(expected)} of {len(ids)}")


def test_an_injected_writing_where_is_refused(site, tmp_path):
    lake, url, page = site
    open_map(page, url)
    before = lake_listing(lake)
    target = tmp_path / "out.csv"
    page.fill("#filter", f"true); COPY images TO '{target}' (FORMAT csv); SELECT (true")
    page.click("#filter-form button[type=submit]")
    page.wait_for_selector("#filter-status.error")
    message = page.text_content("#filter-status")
    assert message.startswith("refused: only SELECT") and "COPY" in message
    assert not page.evaluate("window.explorer.state.filterActive")
    assert not target.exists() and lake_listing(lake) == before


def test_a_review_made_in_the_page_is_in_reviews_and_changes_export(site, tmp_path):
    lake, url, page = site
    with connect_read_only(lake) as con:
        image_id, path = con.execute(
            "SELECT image_id, min(path) FROM images GROUP BY image_id ORDER BY 1 LIMIT 1"
        ).fetchone()
    export_collection(lake, tmp_path / "before.csv", "csv")
    assert path in (tmp_path / "before.csv").read_text()
    open_image(page, url, image_id)
    page.fill("#note", "a copy, from the page")
    page.click("#btn-exclude")
    page.wait_for_function(
        "(document.getElementById('review-status') || {}).textContent === 'recorded: exclude'"
    )
    with connect_read_only(lake) as con:
        rows = con.execute(
            "SELECT decision, note FROM reviews WHERE image_id = ?", [image_id]
        ).fetchall()
    assert rows == [("exclude", "a copy, from the page")]
    export_collection(lake, tmp_path / "after.csv", "csv")
    assert image_id not in (tmp_path / "after.csv").read_text()
    # and the map shows it: colour by review
    open_map(page, url)
    page.select_option("#color-by", "review")
    page.wait_for_function(
        "window.explorer.state.legend && window.explorer.state.legend.by === 'review'"
    )
    legend = page.evaluate("window.explorer.state.legend")
    assert {e["label"]: e["count"] for e in legend["entries"]}.get("exclude") == 1
    assert "exclude" in page.text_content("#legend")


def test_lake_text_is_rendered_as_text(site):
    lake, url, page = site
    hostile = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>'
    with connect_read_only(lake) as con:
        (image_id,) = con.execute("SELECT max(image_id) FROM images").fetchone()
    add_reviews(
        lake,
        [
            {
                "image_id": image_id,
                "decision": "tag",
                "value": "<b>x</b>",
                "note": hostile,
                "who": "<i>who</i>",
            }
        ],
    )
    open_image(page, url, image_id)
    text = page.text_content("#reviews")
    assert hostile in text and "<b>x</b>" in text and "<i>who</i>" in text
    assert page.locator("#reviews img, #reviews script, #reviews b, #reviews i").count() == 0
    assert page.evaluate("window.__pwned") is None


def test_the_review_queue_moves_and_decides_with_the_keyboard(site):
    lake, url, page = site
    page.goto(url + "#queue/near_duplicates/0")
    page.wait_for_selector("#case-images .card")
    total = page.evaluate("window.explorer.queue.total")
    assert total >= 1
    assert page.text_content("#queue-pos") == f"case 1 of {total}"
    if total > 1:
        page.keyboard.press("j")
        page.wait_for_function("window.explorer.queue.pos === 1")
        page.keyboard.press("k")
        page.wait_for_function("window.explorer.queue.pos === 0")
    page.wait_for_selector("#case-images .card")
    page.keyboard.press("l")  # the second image of the case
    focused = page.evaluate("window.explorer.focused()[0]")
    page.keyboard.press("x")
    page.wait_for_function(
        "((document.getElementById('review-status') || {}).textContent || '')"
        ".startsWith('recorded: exclude')"
    )
    with connect_read_only(lake) as con:
        decisions = con.execute(
            "SELECT decision FROM current_reviews WHERE image_id = ?", [focused]
        ).fetchall()
    assert ("exclude",) in decisions
    card = page.locator(f"#case-images .card[data-image-id='{focused}'] .decisions")
    assert "exclude" in card.text_content()
