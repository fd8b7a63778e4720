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


def map_points(lake: Path, group: tuple) -> list[tuple[float, float]]:
    """The group's map coordinates in the page's point order, as float32 (as /api/points)."""
    with connect_read_only(lake) as con:
        rows = con.execute(
            "SELECT image_id, x::FLOAT, y::FLOAT FROM map "
            "WHERE backbone = ? AND weights_id = ? AND precision = ?",
            list(group[:3]),
        ).fetchall()
    rows.sort(key=lambda r: (int(r[0][:16], 16), r[0]))
    return [(x, y) for _, x, y in rows]


def in_polygon(poly: list[tuple[float, float]], x: float, y: float) -> bool:
    """Even-odd rule, the same arithmetic as the page's pointsInPolygon (so the same doubles)."""
    inside = False
    for a in range(len(poly)):
        (xa, ya), (xb, yb) = poly[a], poly[a - 1]
        if (ya > y) != (yb > y) and x < xa + (y - ya) * (xb - xa) / (yb - ya):
            inside = not inside
    return inside


def test_a_lasso_or_a_box_selection_fills_the_grid_with_the_points_inside(site):
    lake, url, page = site
    open_map(page, url)
    page.reload()  # a fresh page: no filter or selection left by another test
    page.wait_for_function("window.explorer && window.explorer.ready", timeout=30_000)
    page.evaluate("window.scrollTo(0, 0)")
    group = groups(lake)[0]
    name = "/".join(group[:3])
    page.select_option("#group", name)
    page.wait_for_function(
        f"window.explorer.state.g === {json.dumps(name)} && window.explorer.points === {group[3]}"
    )
    ids = ordered_ids(lake, group)
    points = map_points(lake, group)
    assert len(points) == len(ids) == group[3]
    at = page.evaluate(
        """() => { const c = document.getElementById('map'); const r = c.getBoundingClientRect();
        const v = window.explorer.state.view;
        return { left: r.left, top: r.top, w: c.clientWidth, h: c.clientHeight, ...v }; }"""
    )

    def to_data(px: float, py: float) -> tuple[float, float]:  # the page's toData
        return (
            at["cx"] + (px - at["w"] / 2) / at["z"],
            at["cy"] - (py - at["h"] / 2) / at["z"],
        )

    # the points' extent in canvas pixels, and whole client pixels around it
    pxs = [(x - at["cx"]) * at["z"] + at["w"] / 2 for x, _ in points]
    pys = [-(y - at["cy"]) * at["z"] + at["h"] / 2 for _, y in points]

    def client(px: float, py: float) -> tuple[int, int]:
        px, py = min(max(px, 2), at["w"] - 2), min(max(py, 2), at["h"] - 2)
        return round(at["left"] + px), round(at["top"] + py)

    left, right, top, bottom = min(pxs) - 10, max(pxs) + 10, min(pys) - 10, max(pys) + 10
    # a triangle: the upper-left half of the points, cut by a diagonal
    triangle = [client(left, top), client(right, top), client(left, bottom)]
    poly = [to_data(cx - at["left"], cy - at["top"]) for cx, cy in triangle]
    inside = [i for i, (x, y) in enumerate(points) if in_polygon(poly, x, y)]
    assert 0 < len(inside) < len(points)

    def drag(corners: list[tuple[int, int]], key: str) -> None:
        page.evaluate("window.explorer.selected = null")
        page.mouse.move(*corners[0])
        page.keyboard.down(key)
        page.mouse.down()
        for corner in corners[1:]:
            page.mouse.move(*corner)
        page.mouse.up()
        page.keyboard.up(key)

    def check_selection(expected: list[int]) -> None:
        page.wait_for_function(f"window.explorer.selected === {len(expected)}")
        assert page.evaluate("window.explorer.state.selected") == expected
        assert page.text_content("#selection-title") == f"Selection: {len(expected)} images"
        cards = page.locator("#grid .card")
        cards.nth(min(len(expected), 200) - 1).wait_for()
        shown = cards.evaluate_all("cs => cs.map((c) => c.dataset.imageId)")
        assert shown == [ids[i] for i in expected[:200]]
        page.wait_for_function(  # thumbnails, not placeholders
            "[...document.querySelectorAll('#grid .card img')]"
            ".some((img) => img.complete && img.naturalWidth > 0)"
        )
        assert page.locator("#grid .noimg").count() == 0

    # alt+drag: a lasso
    drag(triangle, "Alt")
    check_selection(inside)
    assert page.evaluate("window.explorer.lasso") == [c for xy in poly for c in xy]
    assert page.locator("#lasso").get_attribute("hidden") is not None  # gone on release
    # the hint line's box/lasso choice makes shift+drag draw a lasso too
    page.select_option("#select-shape", "lasso")
    drag(triangle, "Shift")
    check_selection(inside)
    # and shift+drag's box, as before: every point within it, edges included
    page.select_option("#select-shape", "box")
    corner = client((left + right) / 2, bottom)
    x0, y1 = to_data(triangle[0][0] - at["left"], triangle[0][1] - at["top"])
    x1, y0 = to_data(corner[0] - at["left"], corner[1] - at["top"])
    in_box = [i for i, (x, y) in enumerate(points) if x0 <= x <= x1 and y0 <= y <= y1]
    assert 0 < len(in_box) < len(points) and in_box != inside
    drag([triangle[0], corner], "Shift")
    check_selection(in_box)


def test_the_lasso_picks_exactly_the_even_odd_points_of_a_million_in_a_moment(site):
    """The page's own pointsInPolygon (banded edges, bounding-box prefilter) on 1 M synthetic
    points and a free-hand-like loop that crosses itself, with and without a filter: the same
    points as the plain loop over every edge, and quick enough not to freeze the page."""
    lake, url, page = site
    open_map(page, url)
    result = page.evaluate(
        """(n) => {
        const s = window.explorer.state;
        const saved = { n: s.n, xy: s.xy, flags: s.flags, filterActive: s.filterActive };
        let seed = 7;
        const rnd = () => (seed = (seed * 16807) % 2147483647) / 2147483647;
        const xy = new Float32Array(2 * n), flags = new Uint8Array(n);
        for (let i = 0; i < 2 * n; i++) xy[i] = rnd() * 2 - 1;
        for (let i = 0; i < n; i++) flags[i] = rnd() < 0.5 ? 1 : 0;
        const m = 120, poly = new Float64Array(2 * m); // a wobbly figure of eight
        for (let k = 0; k < m; k++) {
          const t = 2 * Math.PI * k / m, r = 0.5 + 0.4 * rnd();
          poly[2 * k] = r * Math.cos(t); poly[2 * k + 1] = r * Math.sin(2 * t);
        }
        const plain = () => {
          const out = [];
          for (let i = 0; i < n; i++) {
            if (s.filterActive && !(flags[i] & 1)) continue;
            const x = xy[2 * i], y = xy[2 * i + 1];
            let inside = false;
            for (let a = 0, b = m - 1; a < m; b = a++) {
              const xa = poly[2 * a], ya = poly[2 * a + 1], xb = poly[2 * b], yb = poly[2 * b + 1];
              const crosses = (ya > y) !== (yb > y);
              if (crosses && x < xa + (y - ya) * (xb - xa) / (yb - ya)) inside = !inside;
            }
            if (inside) out.push(i);
          }
          return out;
        };
        const runs = [];
        try {
          Object.assign(s, { n, xy, flags });
          for (const filterActive of [false, true]) {
            s.filterActive = filterActive;
            const started = performance.now();
            const picked = window.explorer.pointsInPolygon(poly);
            const ms = performance.now() - started;
            const expected = plain();
            const same = picked.length === expected.length
              && expected.every((v, k) => picked[k] === v);
            runs.push({ ms, count: picked.length, same });
          }
        } finally { Object.assign(s, saved); }
        return runs;
        }""",
        1_000_000,
    )
    no_filter, filtered = result
    assert no_filter["same"] and filtered["same"], result
    assert 0 < filtered["count"] < no_filter["count"] < 1_000_000
    assert max(no_filter["ms"], filtered["ms"]) < 1000, result  # measured: tens of ms
