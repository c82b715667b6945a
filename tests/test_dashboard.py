"""The dashboard in a real browser: Debian's headless Chromium driven by Selenium through
chromedriver (``apt-get install chromium chromium-driver``; CI installs them). Log in, see
the counts, requeue a failed job, see it pending. Plus the cookie and CSRF rules, over
plain HTTP.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from hybridstore import JobStatus, JobStore
from tests.conftest import new_job
from tests.http_support import ADMIN_TOKEN, WORKER_TOKEN, ServerProcess

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("dashboard")
    started = ServerProcess(str(root / "data"), root / "server.log")
    started.data_dir = root / "data"  # type: ignore[attr-defined]
    yield started
    started.stop()


@pytest.fixture
def direct(server: ServerProcess) -> Iterator[JobStore]:
    with JobStore(server.data_dir, durable=False) as store:  # type: ignore[attr-defined]
        for job in store.find():
            store.delete(job.id)
        yield store


@pytest.fixture
def browser() -> Iterator[Any]:
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        reason = "needs Debian's chromium and chromium-driver (apt-get install ...)"
        if os.environ.get("HYBRIDSTORE_REQUIRE_BROWSER") == "1":  # set by CI: never skip
            pytest.fail(reason)
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="hybridstore-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _login(browser: Any, server: ServerProcess, token: str, *, refused: bool = False) -> None:
    from selenium.webdriver.common.by import By

    browser.get(server.url + "/")
    assert browser.current_url.endswith("/login")
    browser.find_element(By.ID, "token").send_keys(token)
    browser.find_element(By.ID, "login").click()
    # click() returns before the login's navigation ends; a get() now could cut it short.
    if not refused:
        _wait(browser, lambda b: not b.current_url.endswith("/login"))


def _wait(browser: Any, condition: Any, timeout: float = 10) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser, timeout, poll_frequency=0.2).until(condition)


def _count(browser: Any, status: str) -> str:
    from selenium.webdriver.common.by import By

    cell = browser.find_element(By.CSS_SELECTOR, f'td.count[data-status="{status}"]')
    return str(cell.text)


def test_log_in_and_see_the_counts_refresh_without_a_reload(
    server: ServerProcess, direct: JobStore, browser: Any
) -> None:
    from selenium.webdriver.common.by import By

    for content_type in ("audio", "audio", "video"):
        direct.add(new_job(content_type=content_type))
    direct.add(new_job(status=JobStatus.FAILED, content_type="<b>pdf</b>"))
    _login(browser, server, "not-the-token-at-all", refused=True)
    error = _wait(browser, lambda b: b.find_elements(By.ID, "login-error"))
    assert "not an admin token" in error[0].text
    _login(browser, server, WORKER_TOKEN, refused=True)  # a worker token does not open it
    _wait(browser, lambda b: b.find_elements(By.ID, "login-error"))
    assert not browser.get_cookies()
    _login(browser, server, ADMIN_TOKEN)
    _wait(browser, lambda b: b.find_elements(By.ID, "status-counts"))
    assert _count(browser, "pending") == "3" and _count(browser, "failed") == "1"
    types = browser.find_element(By.ID, "type-counts").text
    assert "audio 2" in types and "video 1" in types
    assert "<b>pdf</b> 1" in types, "markup in a job is shown as text, never rendered"
    assert {c["name"]: c for c in browser.get_cookies()}["hybridstore_session"]["httpOnly"]
    assert ADMIN_TOKEN not in str(browser.get_cookies())
    # A job added behind the browser's back shows up without a reload.
    marker = browser.find_element(By.ID, "total")
    direct.add(new_job(content_type="audio"))
    _wait(browser, lambda b: _count(b, "pending") == "4")
    assert marker.is_displayed()  # the same page, not a reloaded one


def test_requeue_a_failed_job_and_see_it_pending(
    server: ServerProcess, direct: JobStore, browser: Any
) -> None:
    from selenium.webdriver.common.by import By

    failed = direct.add(new_job(status=JobStatus.FAILED, error_message="boom"))
    _login(browser, server, ADMIN_TOKEN)
    browser.get(f"{server.url}/?status=failed&job={failed.id}")
    assert browser.find_element(By.ID, "job-status").text == "failed"
    assert failed.id in browser.find_element(By.ID, "jobs").text
    browser.find_element(By.ID, "requeue").click()
    _wait(browser, lambda b: b.find_element(By.ID, "job-status").text == "pending")
    _wait(browser, lambda b: _count(b, "pending") == "1" and _count(b, "failed") == "0")
    assert direct.get(failed.id).status is JobStatus.PENDING  # type: ignore[union-attr]


def test_cancel_a_pending_job_from_the_browser(
    server: ServerProcess, direct: JobStore, browser: Any
) -> None:
    from selenium.webdriver.common.by import By

    job = direct.add(new_job())
    _login(browser, server, ADMIN_TOKEN)
    browser.get(f"{server.url}/?status=pending&job={job.id}")
    browser.find_element(By.ID, "cancel").click()
    _wait(browser, lambda b: b.find_element(By.ID, "job-status").text == "cancelled")
    _wait(browser, lambda b: _count(b, "cancelled") == "1")
    assert direct.get(job.id).status is JobStatus.CANCELLED  # type: ignore[union-attr]


def _session(server: ServerProcess) -> tuple[str, str]:
    """Log in over HTTP: the session cookie and the page's CSRF token."""
    response = httpx.post(server.url + "/login", data={"token": ADMIN_TOKEN}, timeout=10)
    assert response.status_code == 303
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    session = response.cookies["hybridstore_session"]
    assert session != ADMIN_TOKEN
    page = httpx.get(server.url + "/", cookies={"hybridstore_session": session}, timeout=10)
    csrf = page.text.split('name="csrf-token" content="', 1)[1].split('"', 1)[0]
    return session, csrf


def test_the_buttons_refuse_cross_site_requests(server: ServerProcess, direct: JobStore) -> None:
    job = direct.add(new_job())
    session, csrf = _session(server)
    cookies = {"hybridstore_session": session}
    url = f"{server.url}/ui/jobs/{job.id}/cancel"
    refused = [
        httpx.post(url, cookies=cookies, timeout=10),  # no CSRF token: a forged form
        httpx.post(url, cookies=cookies, headers={"X-CSRF-Token": "0" * 64}, timeout=10),
        httpx.post(url, cookies=cookies, timeout=10,
                   headers={"X-CSRF-Token": csrf, "Origin": "https://evil.example"}),
        httpx.post(url, headers={"X-CSRF-Token": csrf}, timeout=10),  # no cookie
        httpx.post(url, timeout=10, cookies={"hybridstore_session": ADMIN_TOKEN},
                   headers={"X-CSRF-Token": csrf}),  # the raw token is not a session
    ]
    assert [r.status_code for r in refused] == [403, 403, 403, 401, 401]
    assert direct.get(job.id).status is JobStatus.PENDING  # type: ignore[union-attr]
    done = httpx.post(url, cookies=cookies, timeout=10,
                      headers={"X-CSRF-Token": csrf, "Origin": server.url})
    assert done.status_code == 200 and done.json()["status"] == "cancelled"
    # The cookie opens the dashboard only, not the API.
    assert httpx.get(server.url + "/stats", cookies=cookies, timeout=10).status_code == 401


def test_the_page_escapes_what_jobs_hold(server: ServerProcess, direct: JobStore) -> None:
    evil = "<script>alert(1)</script>"
    job = direct.add(new_job(content_type=evil, error_message=evil, worker_id=evil))
    session, _ = _session(server)
    page = httpx.get(f"{server.url}/?job={job.id}", cookies={"hybridstore_session": session},
                     timeout=10)
    assert evil not in page.text and "&lt;script&gt;" in page.text
