"""`embedlake explore`'s server, without a browser: the API on a lake `embedlake run` made, the
token off the loopback, Host and Origin checks, an unknown image, a refused writing filter, the
read-only invariant, and Ctrl-C in a subprocess (the browser cases: test_explore.py)."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from embedlake.tasks.catalog import connect_read_only
from embedlake.tasks.explore import Explorer, make_server
from tests.conftest import CLI, copy_lake

pytestmark = pytest.mark.e2e


def lake_listing(lake: Path) -> dict[str, tuple[int, int]]:
    """Every file under the lake with its size and mtime (what a write would change)."""
    return {
        str(p.relative_to(lake)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(lake.rglob("*"))
        if p.is_file() and p.name != ".lock"  # the writer's lock file: taken, not data
    }


def start_server(lake: Path, host: str = "127.0.0.1", token: str | None = None):
    explorer = Explorer(lake, timeout=30)
    server, url = make_server(explorer, host, 0, token=token)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1})
    thread.daemon = True
    thread.start()
    return explorer, server, url, thread


def stop_server(explorer, server, thread) -> None:
    explorer.close()
    server.shutdown()
    server.server_close()
    thread.join(5)


def get(url: str, headers: dict[str, str] | None = None):
    """(status, headers, body) of a GET; errors are returned, not raised."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


def post(url: str, body: bytes, headers: dict[str, str]):
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


@pytest.fixture(scope="module")
def explored(pipeline_lake, tmp_path_factory):
    """One server (in this process, a free port on 127.0.0.1) on a copy of the session lake."""
    lake = copy_lake(pipeline_lake.path, tmp_path_factory.mktemp("explore-server") / "lake")
    explorer, server, url, thread = start_server(lake)
    yield lake, url, explorer
    stop_server(explorer, server, thread)


def first_group(url: str) -> tuple[dict, str]:
    status, _, body = get(url + "api/groups")
    assert status == 200
    group = json.loads(body)["groups"][0]
    name = "/".join((group["backbone"], group["weights_id"], group["precision"]))
    return group, urllib.parse.quote(name, safe="")


def ordered_ids(lake: Path, group: dict) -> list[str]:
    """The group's image_ids in the explorer's one order (first 16 hex digits, then the id)."""
    with connect_read_only(lake) as con:
        rows = con.execute(
            "SELECT image_id FROM map WHERE backbone = ? AND weights_id = ? AND precision = ?",
            [group["backbone"], group["weights_id"], group["precision"]],
        ).fetchall()
    return sorted((r[0] for r in rows), key=lambda i: (int(i[:16], 16), i))


def test_points_colours_and_filter_are_binary_in_one_order(explored):
    lake, url, _ = explored
    group, g = first_group(url)
    ids = ordered_ids(lake, group)
    assert group["points"] == len(ids) > 0

    status, headers, body = get(f"{url}api/points?g={g}")
    assert status == 200 and headers["Content-Type"] == "application/octet-stream"
    xy = np.frombuffer(body, dtype="<f4").reshape(-1, 2)
    assert len(xy) == len(ids) == int(headers["X-Count"])
    with connect_read_only(lake) as con:
        stored = dict(
            (r[0], (r[1], r[2]))
            for r in con.execute(
                "SELECT image_id, x, y FROM map WHERE backbone = ? AND weights_id = ?",
                [group["backbone"], group["weights_id"]],
            ).fetchall()
        )
    assert np.allclose(xy, np.array([stored[i] for i in ids], dtype=np.float32))

    status, headers, codes = get(f"{url}api/colors?g={g}&by=label&column=label")
    assert status == 200 and len(codes) == len(ids)
    legend = json.loads(headers["X-Legend"])
    labels = {e["code"]: e["label"] for e in legend["entries"]}
    with connect_read_only(lake) as con:
        given = dict(con.execute("SELECT image_id, label FROM metadata").fetchall())
    assert [labels.get(c) for c in codes] == [given.get(i) for i in ids]

    where = "path LIKE 'copies/%' OR label = 'coffee'"
    status, headers, mask = get(f"{url}api/filter?g={g}&where={urllib.parse.quote(where)}")
    assert status == 200
    hits = np.unpackbits(np.frombuffer(mask, np.uint8), bitorder="little")[: len(ids)]
    with connect_read_only(lake) as con:
        expected = {
            r[0]
            for r in con.execute(
                "SELECT i.image_id FROM images i LEFT JOIN metadata m USING (path) WHERE " + where
            ).fetchall()
        }
    assert {ids[i] for i in np.flatnonzero(hits)} == expected
    assert int(headers["X-Count"]) == len(expected) > 0

    status, _, body = get(f"{url}api/ids?g={g}&i=0,{len(ids) - 1}")
    assert [p["image_id"] for p in json.loads(body)["points"]] == [ids[0], ids[-1]]


def test_a_writing_filter_is_refused_in_one_line_and_nothing_is_written(explored, tmp_path):
    lake, url, _ = explored
    _, g = first_group(url)
    before = lake_listing(lake)
    target = tmp_path / "leak.csv"
    for where, kind in (
        (f"true); COPY (SELECT * FROM images) TO '{target}' (FORMAT csv); SELECT (1", "COPY"),
        (f"true); COPY images TO '{lake}/files/x.parquet'; SELECT (true", "COPY"),
        ("true); INSERT INTO reviews VALUES (1); SELECT (1", "INSERT"),
        ("true); ATTACH 'x.db' AS x; SELECT (1", "ATTACH"),
        ("true); EXPLAIN ANALYZE COPY images TO 'x.csv'; SELECT (1", "EXPLAIN"),
        ("true); DROP VIEW images; --", None),  # does not parse as a whole: refused too
    ):
        status, _, body = get(f"{url}api/filter?g={g}&where={urllib.parse.quote(where)}")
        message = json.loads(body)["error"]
        assert status == 400 and "\n" not in message, message
        if kind:
            assert message.startswith("refused: only SELECT") and kind in message, message
    assert not target.exists()
    assert lake_listing(lake) == before


def test_image_ids_are_checked_and_unknown_ones_are_404(explored):
    _, url, _ = explored
    assert get(url + "api/image/" + "0" * 64)[0] == 404
    assert get(url + "api/thumb/" + "0" * 64)[0] == 404
    for bad in ("..%2F..%2Fetc%2Fpasswd", "A" * 64, "abc", "0" * 63 + "g"):
        status, _, body = get(url + "api/image/" + bad)
        assert status == 400 and "not an image_id" in json.loads(body)["error"]
        assert get(url + "api/thumb/" + bad)[0] == 400
    status, _, _ = get(url + "no/such/page")
    assert status == 404


def test_image_page_data_has_neighbours_under_each_backbone(explored):
    lake, url, _ = explored
    status, _, body = get(url + "api/groups")
    groups = json.loads(body)["groups"]
    with connect_read_only(lake) as con:
        (image_id,) = con.execute("SELECT min(image_id) FROM map").fetchone()
    status, _, body = get(url + "api/image/" + image_id)
    data = json.loads(body)
    assert status == 200 and data["files"] and data["metadata"]
    assert {n["backbone"] for n in data["neighbors"]} == {g["backbone"] for g in groups}
    assert all(len(n["items"]) > 0 for n in data["neighbors"])
    status, headers, thumb = get(url + "api/thumb/" + image_id)
    assert status == 200 and headers["Content-Type"] == "image/jpeg"
    assert thumb[:2] == b"\xff\xd8"


def test_review_post_must_be_same_origin_json(explored):
    lake, url, _ = explored
    with connect_read_only(lake) as con:
        (image_id,) = con.execute("SELECT min(image_id) FROM images").fetchone()
    body = json.dumps({"image_ids": [image_id], "decision": "tag", "value": "t"}).encode()
    before = lake_listing(lake)
    # a form post from another site: not JSON
    status, _, _ = post(url + "api/review", body, {"Content-Type": "text/plain"})
    assert status == 415
    status, _, _ = post(
        url + "api/review",
        body,
        {"Content-Type": "application/json", "Origin": "http://evil.example"},
    )
    assert status == 403
    status, _, answer = post(
        url + "api/review",
        json.dumps({"image_ids": ["f" * 64], "decision": "exclude"}).encode(),
        {"Content-Type": "application/json"},
    )
    assert status == 404 and "holds no image" in json.loads(answer)["error"]
    assert lake_listing(lake) == before  # nothing written by a refused review
    origin = url.rstrip("/")
    status, _, answer = post(
        url + "api/review", body, {"Content-Type": "application/json", "Origin": origin}
    )
    assert status == 200 and json.loads(answer) == {"recorded": 1}
    with connect_read_only(lake) as con:
        assert con.execute(
            "SELECT decision, value FROM reviews WHERE image_id = ?", [image_id]
        ).fetchall() == [("tag", "t")]


def test_a_foreign_host_header_is_refused_on_the_loopback(explored):
    _, url, _ = explored
    port = urllib.parse.urlsplit(url).port
    status, _, _ = get(url + "api/groups", {"Host": f"attacker.example:{port}"})
    assert status == 403
    assert get(url + "api/groups", {"Host": f"localhost:{port}"})[0] == 200


def test_a_host_other_than_the_loopback_needs_the_token(explored):
    explorer, server, url, thread = start_server(explored[0], host="0.0.0.0")
    try:
        parts = urllib.parse.urlsplit(url)
        token = urllib.parse.parse_qs(parts.query)["token"][0]
        assert len(token) >= 32
        base = f"http://127.0.0.1:{parts.port}/"
        for path in ("", "api/groups", "app.js", "api/image/" + "0" * 64):
            status, _, body = get(base + path)
            assert status == 403 and b"token" in body
        assert get(base + "api/groups?token=wrong")[0] == 403
        status, headers, _ = get(base + "?token=" + token)
        assert status == 200
        cookie = headers["Set-Cookie"].split(";")[0]
        assert "HttpOnly" in headers["Set-Cookie"] and "SameSite=Strict" in headers["Set-Cookie"]
        assert get(base + "api/groups", {"Cookie": cookie})[0] == 200
        assert get(base + "api/groups", {"Cookie": "embedlake_token=x"})[0] == 403
    finally:
        stop_server(explorer, server, thread)


def test_ctrl_c_stops_the_server_within_2_s_with_nothing_left(explored):
    import psutil

    proc = subprocess.Popen(
        [*CLI, "explore", "--lake", str(explored[0]), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        assert "http://127.0.0.1:" in line, line + proc.stderr.read()
        url = line.split()[2]
        _, g = first_group(url)
        # a query that would run for hours is inside DuckDB when the signal comes
        endless = urllib.parse.quote("(SELECT count(*) FROM range(10000000000000)) > 0")
        answers: list = []
        threading.Thread(
            target=lambda: answers.append(get(f"{url}api/filter?g={g}&where={endless}")),
            daemon=True,
        ).start()
        time.sleep(1.0)
        children = psutil.Process(proc.pid).children(recursive=True)
        started = time.monotonic()
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=5)
        elapsed = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
    # exit 0: no abort from a thread left inside DuckDB's C++ at exit
    assert code == 0 and elapsed <= 2.0, (code, elapsed, proc.stderr.read())
    assert "stopped" in proc.stdout.read()
    assert not [c for c in children if c.is_running()]
    with pytest.raises(OSError):  # the port is closed
        urllib.request.urlopen(url, timeout=2)


def test_the_page_is_self_contained():
    """The page fetches nothing from the network: no http(s) URL in its assets."""
    from importlib import resources

    folder = resources.files("embedlake.tasks").joinpath("explore_static")
    for name in ("index.html", "app.js", "style.css"):
        text = folder.joinpath(name).read_text()
        assert "http://" not in text and "https://" not in text and "//cdn" not in text, name
        assert ".innerHTML" not in text and "insertAdjacentHTML" not in text, name
