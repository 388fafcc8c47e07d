"""The real thing: uvicorn on a free port, headless Chromium through selenium. Type a query,
open a result, see highlighted tokens and scores; hostile corpus text stays text."""

from __future__ import annotations

import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.serve.builder import IMG, SAE_NAME, SCRIPT

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1280,1000"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def live(served: dict[str, Any]) -> Iterator[str]:
    """The served app on a real uvicorn server; yields its base URL."""
    import uvicorn  # the server autolabel serve runs

    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(served["client"].app, host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def browser() -> Iterator[Any]:
    """Headless Chromium driven by chromedriver, with a fresh profile."""
    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        pytest.skip("chromium / chromium-driver not installed")
    from selenium import webdriver  # the browser tests' driver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="autolabel-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in [*FLAGS, f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.mark.slow
def test_search_open_result_see_tokens_and_scores(live: str, browser: Any) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    browser.get(live + "/")
    box = browser.find_element(By.ID, "q")
    box.send_keys("months of the year")
    browser.find_element(By.ID, "go").click()
    first = browser.find_element(By.CSS_SELECTOR, "#results tr.hit")
    assert first.find_element(By.CSS_SELECTOR, "a.feature-link").text == f"{SAE_NAME}:1"
    assert first.find_element(By.CSS_SELECTOR, ".verdict").text == "trusted"
    assert first.find_element(By.CSS_SELECTOR, "td.score").text == "0.620 (floor 0.050)"

    first.find_element(By.CSS_SELECTOR, "a.feature-link").click()
    assert browser.title == f"{SAE_NAME}:1 · autolabel"
    strongest = browser.find_elements(By.CSS_SELECTOR, "#ctx-top + .ctx .tok.a9")
    assert [t.text for t in strongest] == ["January"]
    assert strongest[0].get_attribute("title") == "activation 4.000"
    ActionChains(browser).move_to_element(strongest[0]).perform()
    shown = browser.execute_script(
        "return getComputedStyle(arguments[0], '::after').content", strongest[0])
    assert shown == '"4.000"'  # the activation appears on hover
    assert "0.620 (floor 0.050)" in browser.find_element(By.ID, "label-score").text
    assert browser.find_elements(By.CSS_SELECTOR, "svg.hist rect")


@pytest.mark.slow
def test_hostile_document_stays_text(live: str, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    for path in (f"/feature/{SAE_NAME}/5", "/?q=markup&mode=keyword"):
        browser.get(live + path)
        time.sleep(0.5)  # give an injected script or onerror handler time to run
        assert "PWNED" not in browser.title
        assert browser.title.endswith("· autolabel")
        body = browser.find_element(By.TAG_NAME, "body").text
        assert SCRIPT in body and IMG in body  # rendered as visible text
        assert browser.find_elements(By.CSS_SELECTOR, "main script, main img") == []
