"""``npformer explain`` pages rendered in a real headless Chromium (Debian's ``chromium`` and
``chromium-driver``, driven by selenium): no console errors, the prediction shown, one attention
cell per layer and head, a click opens that head's view; and the server's page at ``GET /``.
Screenshots go to ``$NPFORMER_ARTIFACTS`` (default: pytest's tmp dir), not to git."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import make_checkpoint
from test_server import free_port, start, stop

import selenium.webdriver as webdriver
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
NER = {0: "O", 1: "B-PER", 2: "I-PER", 3: "B-LOC", 4: "I-LOC"}


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMEDRIVER).exists():
        pytest.fail("chromedriver is missing: .ci/run installs Debian's chromium and chromium-driver")
    options = webdriver.ChromeOptions()
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1200,1600"):
        options.add_argument(flag)
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> Path:
    path = Path(os.environ.get("NPFORMER_ARTIFACTS") or tmp_path_factory.mktemp("screenshots"))
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("explain")
    small = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=40)
    make_checkpoint(
        root / "ner", "bert", "token", vocab="bert-base-cased", id2label=NER, label2id={v: k for k, v in NER.items()}, **small
    )
    make_checkpoint(root / "qa", "bert", "qa", vocab="bert-base-uncased", **small)
    make_checkpoint(root / "mlm", "bert", "mlm", vocab="bert-base-uncased", **small)
    return root


def explain(tmp_path: Path, *args) -> Path:
    out = tmp_path / "page.html"
    proc = subprocess.run(
        [sys.executable, "-m", "npformer.cli", "explain", *args, "--output", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, HF_HUB_OFFLINE="1"),
    )
    assert proc.returncode == 0, proc.stderr
    return out


def errors(driver) -> list:
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def check_page(driver, url: str, layers: int, heads: int, shot: Path) -> None:
    driver.get(url)
    WebDriverWait(driver, 30).until(expected_conditions.presence_of_element_located((By.ID, "grid")))
    cells = driver.find_elements(By.CSS_SELECTOR, "canvas.cell")
    assert len(cells) == layers * heads
    cells[heads + 1].click()  # layer 2, head 2
    title = WebDriverWait(driver, 10).until(expected_conditions.presence_of_element_located((By.ID, "head-title")))
    assert title.text == "Layer 2, head 2"
    assert len(driver.find_elements(By.CSS_SELECTOR, "#head-view svg line")) > 0
    driver.save_screenshot(str(shot))
    assert errors(driver) == []


def test_sentiment_page(browser, tmp_path, artifacts):
    page = explain(tmp_path, "sentiment", "a gorgeous, witty film")
    check_page(browser, page.as_uri(), 6, 12, artifacts / "explain-sentiment.png")
    assert browser.find_element(By.ID, "top-label").text == "POSITIVE"
    tokens = [t.text for t in browser.find_elements(By.CSS_SELECTOR, "#tokens .token")]
    assert tokens == ["[CLS]", "a", "gorgeous", ",", "witty", "film", "[SEP]"]


def test_ner_page(browser, tmp_path, artifacts, checkpoints):
    text = "Ada Lovelace lived in London"
    page = explain(tmp_path, "ner", text, "--model", str(checkpoints / "ner"))
    data = json.loads(page.read_text().split('<script id="payload" type="application/json">')[1].split("</script>")[0])
    check_page(browser, page.as_uri(), 2, 4, artifacts / "explain-ner.png")
    marks = browser.find_elements(By.CSS_SELECTOR, "mark.entity")
    assert len(marks) == len(data["data"]["prediction"]["entities"])
    for mark, entity in zip(marks, data["data"]["prediction"]["entities"]):
        assert mark.text.startswith(text[entity["start"] : entity["end"]])


def test_qa_page(browser, tmp_path, artifacts, checkpoints):
    page = explain(
        tmp_path,
        "qa",
        "Who wrote it?",
        "--context",
        "It was written by Ada Lovelace in 1843.",
        "--model",
        str(checkpoints / "qa"),
    )
    data = json.loads(page.read_text().split('<script id="payload" type="application/json">')[1].split("</script>")[0])
    check_page(browser, page.as_uri(), 2, 4, artifacts / "explain-qa.png")
    best = data["data"]["prediction"]["answers"][0]["answer"]
    assert browser.find_element(By.CSS_SELECTOR, "mark.answer").text.startswith(best)


def test_fill_mask_page(browser, tmp_path, artifacts, checkpoints):
    page = explain(tmp_path, "fill-mask", "paris is the [MASK] of france.", "--model", str(checkpoints / "mlm"))
    check_page(browser, page.as_uri(), 2, 4, artifacts / "explain-fill-mask.png")
    assert len(browser.find_elements(By.CSS_SELECTOR, "td.pred-label")) == 3


def test_server_page(browser, artifacts):
    port = free_port()
    proc = start([], port)
    try:
        browser.get(f"http://127.0.0.1:{port}/")
        field = WebDriverWait(browser, 30).until(expected_conditions.visibility_of_element_located((By.ID, "text")))
        field.send_keys("a gorgeous, witty film")
        browser.find_element(By.CSS_SELECTOR, "#ask button").click()
        label = WebDriverWait(browser, 60).until(expected_conditions.presence_of_element_located((By.ID, "top-label")))
        assert label.text == "POSITIVE"
        assert len(browser.find_elements(By.CSS_SELECTOR, "canvas.cell")) == 6 * 12
        browser.save_screenshot(str(artifacts / "serve-page.png"))
        assert errors(browser) == []
    finally:
        assert stop(proc) == 0


def test_a_hostile_text_neither_blanks_the_page_nor_runs(browser, tmp_path):
    """ "<!--" then "<script>" inside the payload's <script> element once made the page blank; the
    payload's <, > and & are JSON escapes now, and the text shows as text."""
    text = "a gorgeous <!-- <script>window.pwned = 1</script> film & </script><img src=x onerror=alert(1)>"
    page = explain(tmp_path, "sentiment", text)
    html = page.read_text()
    payload = html.split('<script id="payload" type="application/json">')[1].split("</script>")[0]
    assert "<" not in payload and ">" not in payload and "&" not in payload
    assert json.loads(payload)["data"]["text"] == text
    browser.get(page.as_uri())
    WebDriverWait(browser, 30).until(expected_conditions.presence_of_element_located((By.ID, "grid")))
    assert browser.find_element(By.ID, "top-label").text in ("POSITIVE", "NEGATIVE")
    assert browser.execute_script("return window.pwned === undefined && document.images.length === 0")
    assert errors(browser) == []
