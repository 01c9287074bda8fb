"""Times the web console in headless Chromium: navigation until the first full render
(every API answered and drawn) and until the shards table holds every shard, over
several loads. Used by scripts/console-load.sh."""

import argparse
import json
import os
import statistics
import tempfile
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

parser = argparse.ArgumentParser()
parser.add_argument("--url", required=True)
parser.add_argument("--shards", type=int, required=True)
parser.add_argument("--loads", type=int, default=5)
args = parser.parse_args()

# Chromium leaves a directory in TMPDIR behind per run: one that goes with this run.
scratch = tempfile.TemporaryDirectory()
os.environ["TMPDIR"] = scratch.name
options = webdriver.ChromeOptions()
options.binary_location = "/usr/bin/chromium"
for flag in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
             "--window-size=1400,1000", "--ignore-certificate-errors"]:
    options.add_argument(flag)
browser = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
rendered, tables = [], []
try:
    for _ in range(args.loads):
        browser.get("about:blank")
        started = time.monotonic()
        browser.get(args.url.replace("#token=", "#shards&token="))
        deadline = started + 60
        while time.monotonic() < deadline:
            rows = browser.execute_script(
                "return document.querySelectorAll('#shard-table tbody tr').length")
            if rows >= args.shards:
                break
            time.sleep(0.01)
        tables.append((time.monotonic() - started) * 1000)
        rendered.append(browser.execute_script("return window.hanseRendered"))
finally:
    browser.quit()
    scratch.cleanup()
print(json.dumps({
    "shards": args.shards,
    "first_render_ms_median": statistics.median(rendered),
    "shards_table_ms_median": statistics.median(tables),
    "first_render_ms": [round(r) for r in rendered],
}))
