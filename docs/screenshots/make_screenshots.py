"""The README's screenshots of `embedlake explore`: the map, an image page and a review queue.

    python docs/screenshots/make_screenshots.py [--lake DIR]

Without --lake it builds the demo's sample collection (scikit-image's photos, their resized
copies, a labelled sidecar) and runs `embedlake run` on it (two small MobileNets, random weights,
--label-column label), then serves the lake with the explorer and drives Debian's chromium
(headless, Playwright) through the three pages, writing map.png, image.png and queue.png here.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def build_lake(target: Path) -> Path:
    from embedlake.data.sample import build_sample_collection

    source = build_sample_collection()
    lake = target / "lake"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "DO_NOT_TRACK": "1"}
    subprocess.run(
        [
            *(sys.executable, "-m", "embedlake.flows.cli", "run", str(source / "images")),
            *("--lake", str(lake), "--metadata", str(source / "metadata.csv")),
            *("--backbone", "mobilenet_v1_0.25_128", "--backbone", "mobilenet_v1_0.5_160"),
            *("--weights", "random", "--workers", "0", "--label-column", "label"),
            "--no-report",
        ],
        check=True,
        env=env,
    )
    return lake


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lake", help="a lake `embedlake run` made (default: build one)")
    parser.add_argument("--out", default=str(HERE))
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    from embedlake.tasks.explore import Explorer, make_server

    work = Path(tempfile.mkdtemp(prefix="explore-shots-"))
    try:
        lake = Path(args.lake) if args.lake else build_lake(work)
        explorer = Explorer(lake)
        server, url = make_server(explorer, "127.0.0.1", 0)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        out = Path(args.out)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path=shutil.which("chromium") or "/usr/bin/chromium",
                headless=True,
                args=["--use-angle=swiftshader", "--enable-unsafe-swiftshader"],
            )
            page = browser.new_page(viewport={"width": 1280, "height": 860}, bypass_csp=True)
            page.goto(url)
            page.wait_for_function("() => window.explorer && window.explorer.ready")
            # a box selection in the middle of the map fills the thumbnail grid
            box = page.locator("#map").bounding_box()
            page.keyboard.down("Shift")
            page.mouse.move(box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.25)
            page.mouse.down()
            page.mouse.move(box["x"] + box["width"] * 0.7, box["y"] + box["height"] * 0.75, steps=8)
            page.mouse.up()
            page.keyboard.up("Shift")
            page.wait_for_selector("#grid .card img")
            time.sleep(1.0)
            page.screenshot(path=str(out / "map.png"), full_page=True)
            # an image page: the first point with a label issue
            page.goto(url + "#queue/label_issues/0")
            page.wait_for_selector("#case-images .card img")
            time.sleep(1.0)
            page.screenshot(path=str(out / "queue.png"))
            image_id = page.evaluate("() => window.explorer.focused()[0]")
            page.goto(url + "#image/" + image_id)
            page.wait_for_selector("#neighbors .item img")
            time.sleep(1.0)
            page.screenshot(path=str(out / "image.png"), full_page=True)
            browser.close()
        explorer.close()
        server.shutdown()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(
        "wrote", ", ".join(str(Path(args.out) / n) for n in ("map.png", "image.png", "queue.png"))
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
