"""The web console in a real headless Chromium (Debian's, driven by Selenium): run by
cli/tests/console.rs against a local cluster under load.

Checks that the overview lists every node, that the shards table holds the shards of
`hanse admin shards --json` (given as a file), and that the key heat map has lit cells in
the loaded key range and dark ones outside it; writes a screenshot of each page and the
time until the first full render into the output directory.
"""

import argparse
import json
import os
import pathlib
import sys
import tempfile
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By


def wait_for(what, check, seconds=60):
    """`check()`'s first truthy answer within `seconds`, else a failure naming `what`."""
    deadline = time.monotonic() + seconds
    last = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except Exception as e:  # the page may be between renders
            last = e
        time.sleep(0.5)
    raise AssertionError(f"{what}: not within {seconds} s (last: {last!r})")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True, help="the console, with #token=...")
    parser.add_argument("--shards", required=True, help="`hanse admin shards --json` output")
    parser.add_argument("--nodes", type=int, required=True)
    parser.add_argument("--loaded", required=True, help="the loaded range's first key")
    parser.add_argument("--dark", action="append", default=[],
                        help="the first key of a range that takes no load")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    # Chromium leaves a directory in TMPDIR behind per run: one that goes with this run.
    scratch = tempfile.TemporaryDirectory()
    os.environ["TMPDIR"] = scratch.name
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                 "--disable-gpu", "--window-size=1400,1000",
                 # The nodes' certificates are the test CA's, which this browser
                 # profile does not know; TLS itself is tested elsewhere.
                 "--ignore-certificate-errors"]:
        options.add_argument(flag)
    browser = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    try:
        browser.get(args.url)
        # Overview: every node, each live.
        nodes = wait_for("every node listed as live", lambda: (
            lambda found: found if len(found) == args.nodes else None
        )([n for n in browser.find_elements(By.CSS_SELECTOR, "#regions .node")
           if n.find_element(By.CSS_SELECTOR, ".live")]))
        rendered_ms = browser.execute_script("return window.hanseRendered")
        browser.save_screenshot(str(out / "overview.png"))
        print(f"overview: {len(nodes)} nodes; first full render {rendered_ms:.0f} ms after navigation")

        # Shards: the same shards, ranges, epochs and leaders as the CLI's table.
        expected = json.loads(pathlib.Path(args.shards).read_text())["shards"]
        browser.find_element(By.CSS_SELECTOR, "nav a[data-page=shards]").click()

        def shown_shards():
            rows = browser.find_elements(By.CSS_SELECTOR, "#shard-table tbody tr")
            table = {}
            for tr in rows:
                cell = lambda f: tr.find_element(By.CSS_SELECTOR, f"td[data-field={f}]").text
                table[int(tr.get_attribute("data-shard"))] = (
                    cell("start"), cell("end"), cell("epoch"), cell("leader").split("@")[0])
            return table if len(table) == len(expected) else None

        table = wait_for("the shards table", shown_shards)
        for shard in expected:
            start = shard["start"] or "−∞"
            end = shard["end"] or "+∞"
            epoch = f'{shard["epoch"]["version"]}/{shard["epoch"]["conf_ver"]}'
            want = (start, end, epoch, str(shard["leader_node"]))
            assert table[shard["id"]] == want, f"shard {shard['id']}: {table[shard['id']]} != {want}"
        browser.save_screenshot(str(out / "shards.png"))
        print(f"shards: {len(table)} rows match `hanse admin shards --json`")

        browser.find_element(By.CSS_SELECTOR, "nav a[data-page=planner]").click()
        wait_for("the planner page", lambda: browser.find_element(By.ID, "planner-summary").text)
        browser.save_screenshot(str(out / "planner.png"))

        # Heat map: rows of the loaded range lit in the newest column, the others dark,
        # as the data says and as the canvas shows.
        browser.find_element(By.CSS_SELECTOR, "nav a[data-page=heatmap]").click()

        def lit_and_dark():
            heat = browser.execute_script("return window.hanseHeat")
            if not heat or not heat["values"]:
                return None
            newest = heat["values"][-1]
            lit = [k for k, v in zip(heat["rows"], newest) if v > 0]
            dark = [k for k, v in zip(heat["rows"], newest) if v == 0]
            return (heat, lit, dark) if lit and dark else None

        heat, lit, dark = wait_for("lit and dark rows in the heat map", lit_and_dark)
        loaded = args.loaded
        assert loaded in lit, f"lit rows {lit}, the loaded range {loaded!r} not among them"
        for key in args.dark:
            assert key in dark, f"the unloaded range {key!r} is lit: lit {lit}, dark {dark}"
        pixel = browser.execute_script("""
            const canvas = document.getElementById("heat-canvas");
            const heat = window.hanseHeat;
            const rows = heat.rows.length, cols = heat.values.length;
            const g = canvas.getContext("2d");
            const at = (row) => Array.from(g.getImageData(
                Math.floor((cols - 0.5) * canvas.width / cols),
                Math.floor((row + 0.5) * canvas.height / rows), 1, 1).data);
            return { lit: at(heat.rows.indexOf(arguments[0])), dark: at(heat.rows.indexOf(arguments[1])) };
        """, loaded, args.dark[0])
        assert sum(pixel["lit"][:3]) > sum(pixel["dark"][:3]) + 100, f"canvas pixels {pixel}"
        browser.save_screenshot(str(out / "heatmap.png"))
        print(f"heat map: {len(heat['rows'])} rows x {len(heat['values'])} columns; lit {lit}")
        (out / "render.json").write_text(json.dumps({"first_render_ms": rendered_ms}))
    finally:
        browser.quit()
        scratch.cleanup()


if __name__ == "__main__":
    sys.exit(main())
