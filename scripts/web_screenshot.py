"""The README's screenshot of `apollo web`: the bundled example restored by the default model.

Serves the page on a free local port, drives Debian's headless chromium through Selenium (the
same setup as tests/test_web.py), drops examples/example.mp3 on it, waits for the result and
saves the window.

  python scripts/web_screenshot.py --out docs/web-page.png
"""

from __future__ import annotations

import argparse
import socket
import threading
import time
from pathlib import Path

import uvicorn
from selenium import webdriver
from selenium.webdriver.chrome.service import Service as DriverService
from selenium.webdriver.common.by import By
from selenium.webdriver.support.wait import WebDriverWait

from apollo.web import Service, create_app

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "web-page.png"))
    parser.add_argument("--input", default=str(ROOT / "examples" / "example.mp3"))
    args = parser.parse_args()

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    service = Service()
    server = uvicorn.Server(uvicorn.Config(create_app(service), host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1040,680",
                 "--hide-scrollbars"):
        options.add_argument(flag)
    browser = webdriver.Chrome(service=DriverService("/usr/bin/chromedriver"), options=options)
    try:
        while not server.started:
            time.sleep(0.05)
        browser.get(f"http://127.0.0.1:{port}/")
        wait = WebDriverWait(browser, 300)
        wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#model option")) > 0)
        picker = browser.find_element(By.ID, "files")
        browser.execute_script("arguments[0].hidden = false", picker)
        picker.send_keys(args.input)
        browser.execute_script("arguments[0].hidden = true", picker)
        wait.until(lambda b: b.execute_script(
            "const i = document.querySelector('img.spec-restored'); return i && i.complete && i.naturalWidth > 0"))
        time.sleep(1.0)  # the players draw their durations
        browser.save_screenshot(args.out)
        print(f"wrote {args.out}")
    finally:
        browser.quit()
        server.should_exit = True
        service.close()


if __name__ == "__main__":
    main()
