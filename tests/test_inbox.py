"""The demo inbox: a real child process, real SMTP (STARTTLS, AUTH) and real HTTP on loopback."""

from __future__ import annotations

import asyncio
import os
import smtplib
import sqlite3
import ssl
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib
import httpx
import pytest
from playwright.sync_api import Browser, expect, sync_playwright

from gateway.demo.inbox_page import mrkdwn, slack_lines
from gateway.demo.inbox_process import InboxProcess
from gateway.demo.inbox_store import InboxStore

CHROMIUM = Path("/usr/bin/chromium")
USER = "gatehouse"
PASSWORD = "inbox-test-password"


@pytest.fixture(scope="module")
def shared_inbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InboxProcess]:
    """One inbox requiring STARTTLS and a login, for the tests that do not restart it."""
    state_dir = tmp_path_factory.mktemp("inbox")
    with InboxProcess.start(state_dir, smtp_user=USER, smtp_password=PASSWORD) as process:
        yield process


@pytest.fixture
def inbox(shared_inbox: InboxProcess) -> InboxProcess:
    """The shared inbox, emptied."""
    shared_inbox.clear()
    return shared_inbox


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Headless Chromium (Debian's); skipped without it, except under CI."""
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail("the inbox's browser test needs Debian's chromium at /usr/bin/chromium")
        pytest.skip("Debian's chromium is not installed at /usr/bin/chromium (and CI is not set)")
    with sync_playwright() as playwright:
        args = ["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run"]
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=args)
        yield launched
        launched.close()


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    """A loopback HTTP client that ignores any proxy configured for the outside world."""
    with httpx.Client(trust_env=False) as client:
        yield client


def message(subject: str = "Order O-1 waits for you", html: str | None = None) -> EmailMessage:
    """A plain-text e-mail, with an HTML alternative if `html` is given."""
    mail = EmailMessage()
    mail["From"] = "Gatehouse <gatehouse@example.test>"
    mail["To"] = "finn@example.test"
    mail["Subject"] = subject
    mail.set_content("Approve or reject in the console.")
    if html is not None:
        mail.add_alternative(html, subtype="html")
    return mail


async def send(
    inbox: InboxProcess,
    mail: EmailMessage,
    *,
    start_tls: bool = True,
    password: str | None = PASSWORD,
) -> None:
    """Deliver `mail` as a notifier would: STARTTLS trusting the inbox's certificate, then login."""
    await aiosmtplib.send(
        mail,
        hostname=inbox.smtp_host,
        port=inbox.smtp_port,
        start_tls=start_tls,
        tls_context=ssl.create_default_context(cafile=inbox.cert_file),
        username=USER if password is not None else None,
        password=password,
        timeout=10,
    )


async def test_inbox_starttls_login_mail_appears_with_text_and_html(inbox: InboxProcess) -> None:
    await send(inbox, message(html="<p>Approve <b>O-1</b></p>"))

    [mail] = inbox.wait_for_messages(1)
    assert (mail["subject"], mail["from"], mail["to"]) == (
        "Order O-1 waits for you",
        "Gatehouse <gatehouse@example.test>",
        "finn@example.test",
    )
    assert mail["text"] == "Approve or reject in the console.\n"
    assert mail["html"] == "<p>Approve <b>O-1</b></p>\n"
    assert (mail["tls"], mail["login"], mail["envelope_to"]) == (True, USER, ["finn@example.test"])
    assert mail["headers"]["subject"] == "Order O-1 waits for you"
    assert mail["size"] > 0


async def test_inbox_mail_without_starttls_is_refused(inbox: InboxProcess) -> None:
    with pytest.raises(aiosmtplib.SMTPException):
        await send(inbox, message(), start_tls=False, password=None)

    assert inbox.messages() == []


async def test_inbox_login_without_starttls_is_not_offered(inbox: InboxProcess) -> None:
    with pytest.raises(aiosmtplib.SMTPException, match="AUTH"):
        await send(inbox, message(), start_tls=False)


async def test_inbox_wrong_password_is_refused(inbox: InboxProcess) -> None:
    with pytest.raises(aiosmtplib.SMTPAuthenticationError):
        await send(inbox, message(), password="not-the-password")

    assert inbox.messages() == []


async def test_inbox_starttls_without_login_is_refused(inbox: InboxProcess) -> None:
    with pytest.raises(aiosmtplib.SMTPException):
        await send(inbox, message(), password=None)

    assert inbox.messages() == []


async def test_inbox_without_user_accepts_plain_mail(tmp_path: Path) -> None:
    with InboxProcess.start(tmp_path) as open_inbox:
        await send(open_inbox, message(), start_tls=False, password=None)

        [mail] = open_inbox.wait_for_messages(1)
    assert (mail["tls"], mail["login"]) == (False, None)


def test_inbox_port_taken_raises_with_the_childs_error(inbox: InboxProcess, tmp_path: Path) -> None:
    with pytest.raises(
        RuntimeError, match=r"(?s)exited before listening.*cannot listen on .*in use"
    ):
        InboxProcess.start(tmp_path, port=inbox.port)


async def test_inbox_arrived_waits_without_blocking_the_loop(inbox: InboxProcess) -> None:
    # The mail is sent on this loop while the wait polls on it: a blocking wait would starve it.
    sent = asyncio.create_task(send(inbox, message("Sent while waiting")))

    [mail] = await inbox.arrived_messages(1)
    await sent

    assert mail["subject"] == "Sent while waiting"
    async with httpx.AsyncClient(trust_env=False) as http:
        await http.post(inbox.hook_url("ops"), json={"n": 1})
    assert [hook["json"] for hook in await inbox.arrived_hooks("ops", 1)] == [{"n": 1}]
    with pytest.raises(TimeoutError, match=r"^1 requests to ops after 0\.2 s, expected 2$"):
        await inbox.arrived_hooks("ops", 2, within=0.2)


def test_inbox_password_goes_through_the_environment_not_argv(inbox: InboxProcess) -> None:
    command_lines = [path.read_bytes() for path in Path("/proc").glob("[0-9]*/cmdline")]
    ours = [line for line in command_lines if b"gateway.demo.inbox" in line]

    assert ours
    assert not [line for line in ours if PASSWORD.encode() in line]


def test_inbox_webhook_records_method_headers_and_body(
    inbox: InboxProcess, http: httpx.Client
) -> None:
    body = b'{"event": "action.pending", "id": "A-1"}'
    headers = {"Content-Type": "application/json", "X-Gatehouse-Signature": "v1=abc"}

    response = http.post(inbox.hook_url("ops"), content=body, headers=headers, params={"x": "1"})

    assert (response.status_code, response.text) == (200, "ok")
    [request] = inbox.hooks("ops")
    assert (request["method"], request["query"], request["status"]) == ("POST", "x=1", 200)
    assert request["headers"]["x-gatehouse-signature"] == "v1=abc"
    assert request["body"] == body.decode()
    assert request["json"] == {"event": "action.pending", "id": "A-1"}
    assert inbox.hooks("other") == []


def test_inbox_webhook_non_json_body_is_kept_as_text(
    inbox: InboxProcess, http: httpx.Client
) -> None:
    http.post(inbox.hook_url("ops"), content=b"payload=not-json")

    [request] = inbox.hooks("ops")
    assert (request["body"], request["json"]) == ("payload=not-json", None)


def test_inbox_behaviour_answers_statuses_in_order_then_200(
    inbox: InboxProcess, http: httpx.Client
) -> None:
    inbox.behave("ops", [500, 500, 410])

    statuses = [http.post(inbox.hook_url("ops"), json={"n": n}).status_code for n in range(5)]

    assert statuses == [500, 500, 410, 200, 200]
    assert [request["status"] for request in inbox.hooks("ops")] == statuses
    assert http.post(inbox.hook_url("elsewhere"), json={}).status_code == 200


def test_inbox_behaviour_delay_times_out_a_short_client(
    inbox: InboxProcess, http: httpx.Client
) -> None:
    inbox.behave("slow", [], delay=2.0)

    with pytest.raises(httpx.TimeoutException):
        http.post(inbox.hook_url("slow"), json={"n": 1}, timeout=0.3)

    # The request arrived before the client gave up, and is recorded as such.
    assert [request["json"] for request in inbox.wait_for_hooks("slow", 1)] == [{"n": 1}]


def test_inbox_behaviour_out_of_range_status_is_refused(inbox: InboxProcess) -> None:
    with pytest.raises(httpx.HTTPStatusError) as refused:
        inbox.behave("ops", [99])

    assert refused.value.response.status_code == 422


async def test_inbox_clear_forgets_mail_requests_and_behaviours(inbox: InboxProcess) -> None:
    await send(inbox, message())
    inbox.behave("ops", [500])
    inbox.wait_for_messages(1)

    inbox.clear()

    assert (inbox.messages(), inbox.hooks("ops")) == ([], [])
    async with httpx.AsyncClient(trust_env=False) as http:
        assert (await http.post(inbox.hook_url("ops"), json={})).status_code == 200


async def test_inbox_restart_keeps_messages_ports_and_certificate(tmp_path: Path) -> None:
    with InboxProcess.start(tmp_path, smtp_user=USER, smtp_password=PASSWORD) as inbox:
        await send(inbox, message("Before the restart"))
        inbox.wait_for_messages(1)
        before = (inbox.url, inbox.smtp_port, inbox.cert_file.read_bytes())

        inbox.restart()

        assert (inbox.url, inbox.smtp_port, inbox.cert_file.read_bytes()) == before
        await send(inbox, message("After the restart"))
        subjects = [mail["subject"] for mail in inbox.wait_for_messages(2)]
        assert subjects == ["Before the restart", "After the restart"]
        inbox.stop()
        assert not inbox.running


async def test_inbox_page_shows_mail_escaped_and_webhooks(inbox: InboxProcess) -> None:
    html = '<p>Approve</p><script>alert("owned")</script>'
    slack = {"text": "Order *O-9* waits <http://c/a/9|open>"}
    await send(inbox, message("Refund R-7 <needs> you", html=html))
    inbox.wait_for_messages(1)
    async with httpx.AsyncClient(trust_env=False) as http:
        await http.post(inbox.hook_url("slack"), json=slack)

        page = await http.get(inbox.url)

    assert page.status_code == 200
    assert "Refund R-7 &lt;needs&gt; you" in page.text
    assert "<script>" not in page.text  # the message's script is only in an escaped srcdoc
    assert "&lt;script&gt;alert(&#34;owned&#34;)&lt;/script&gt;" in page.text
    assert '<iframe sandbox srcdoc="' in page.text
    link = '<a href="http://c/a/9" rel="noreferrer" target="_blank">open</a>'
    assert f"Order <strong>O-9</strong> waits {link}" in page.text
    assert "script-src 'none'" in page.headers["content-security-policy"]


def test_inbox_page_in_a_browser_shows_mail_html_without_running_its_script(
    inbox: InboxProcess, browser: Browser
) -> None:
    script = 'document.getElementById("h").textContent = "owned"; parent.document.title = "owned"'
    html = f'<h2 id="h">Order O-1042</h2><p>Amount <b>12,400</b></p><script>{script}</script>'
    # smtplib, not aiosmtplib: Playwright's sync API already runs an event loop in this thread.
    with smtplib.SMTP(inbox.smtp_host, inbox.smtp_port, timeout=10) as smtp:
        smtp.starttls(context=ssl.create_default_context(cafile=inbox.cert_file))
        smtp.login(USER, PASSWORD)
        smtp.send_message(message(html=html))
    inbox.wait_for_messages(1)
    page = browser.new_page()

    page.goto(inbox.url)

    expect(page.frame_locator("iframe").locator("h2")).to_have_text("Order O-1042")
    expect(page).to_have_title("Gatehouse demo inbox")
    page.close()


def test_slack_lines_reads_text_sections_fields_context_and_buttons() -> None:
    body = {
        "text": "fallback",
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": "Approval needed"}},
            {"type": "section", "fields": [{"type": "mrkdwn", "text": "*Amount*\n€ 1,200"}]},
            {"type": "divider"},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": "rule orders.large"}]},
            {
                "type": "actions",
                "elements": [
                    {
                        "type": "button",
                        "text": {"type": "plain_text", "text": "Open"},
                        "url": "http://c/a/1",
                    }
                ],
            },
        ],
    }

    assert slack_lines(body) == [
        "fallback",
        "Approval needed",
        "*Amount*\n€ 1,200",
        "―――",
        "rule orders.large",
        "<http://c/a/1|Open>",
    ]
    assert slack_lines({"event": "order.placed"}) is None


def test_mrkdwn_renders_links_and_emphasis_and_escapes_the_rest() -> None:
    text = "*Order* _O-9_ `placeOrder` <https://c/a/9|open> <javascript:alert(1)|x> <!here> 1 < 2"

    assert str(mrkdwn(text)) == (
        "<strong>Order</strong> <em>O-9</em> <code>placeOrder</code>"
        ' <a href="https://c/a/9" rel="noreferrer" target="_blank">open</a> x !here 1 &lt; 2'
    )


def test_an_inbox_kept_from_before_connections_were_noted_still_takes_mail(
    tmp_path: Path,
) -> None:
    path = tmp_path / "inbox.db"
    with sqlite3.connect(path) as old:  # the mails table as an earlier inbox made it
        old.execute(
            "CREATE TABLE mails (id INTEGER PRIMARY KEY AUTOINCREMENT, received_at TEXT NOT NULL,"
            " envelope_from TEXT NOT NULL, envelope_to TEXT NOT NULL, tls INTEGER NOT NULL,"
            " login TEXT, raw BLOB NOT NULL)"
        )
    store = InboxStore(path)
    try:
        store.add_mail(
            b"Subject: hi\r\n\r\nhello",
            envelope_from="a@b.c",
            envelope_to=["d@e.f"],
            tls=True,
            login=None,
            peer="127.0.0.1:40000",
        )
        (mail,) = store.mails()
        assert mail.peer == "127.0.0.1:40000"
    finally:
        store.close()
