"""What a notification says, once, and how each channel lays it out.

A `Message` is built when its cause is committed (notices.py, alerts.py) and stored in the
outbox as JSON; the sender lays it out per channel when it delivers:

    webhook   the document itself, JSON (schema in the README), signed by the sender
    slack     {"text": ..., "blocks": [...]}: headline, facts, a button to the console
    email     plain text and HTML alternatives of the same words

Messages carry identifiers, kinds, amounts, rules and people's names, never a value
classified `pii`: inputs and diffs reach them only as the audit trail holds them (masked),
and only the fields named here are copied.
"""

from __future__ import annotations

import html
import json
from dataclasses import asdict, dataclass, field
from email.message import EmailMessage
from typing import Any

# Topics: what happened, as receivers filter on it.
APPROVAL_REQUESTED = "approval.requested"
APPROVAL_EXPIRING = "approval.expiring"
ACTION_DECIDED = "action.decided"
ACTION_EVENT = "action.event"  # a subscribed system hears of a governed change
ALERT_OPENED = "alert.opened"
ALERT_REMINDER = "alert.reminder"
ALERT_RESOLVED = "alert.resolved"


@dataclass(frozen=True, slots=True)
class Message:
    """One notification's content, the same on every channel."""

    topic: str
    subject: str  # one line: what happened and to what
    summary: str  # a sentence or two for a person
    link: str  # the console page that shows it
    facts: list[tuple[str, str]] = field(default_factory=list)  # label, value; shown in order
    data: dict[str, Any] = field(default_factory=dict)  # identifiers for systems (webhook)

    def to_json(self) -> str:
        """The stored form."""
        return json.dumps(asdict(self), sort_keys=True, ensure_ascii=False, default=str)

    @classmethod
    def from_json(cls, stored: str) -> Message:
        """The message as the outbox holds it."""
        raw = json.loads(stored)
        return cls(
            topic=raw["topic"],
            subject=raw["subject"],
            summary=raw["summary"],
            link=raw["link"],
            facts=[(label, value) for label, value in raw["facts"]],
            data=raw["data"],
        )


def webhook_body(message: Message, *, notification_id: str, created_at: str) -> str:
    """The JSON a generic webhook receives (its schema is in the README)."""
    document = {
        "id": notification_id,
        "type": message.topic,
        "created_at": created_at,
        "subject": message.subject,
        "summary": message.summary,
        "link": message.link,
        "facts": dict(message.facts),
        **message.data,
    }
    return json.dumps(document, sort_keys=True, ensure_ascii=False, default=str)


def slack_body(message: Message) -> str:
    """A Slack-compatible incoming-webhook payload: `text` for notifications and clients
    without blocks, blocks for a readable card with a button to the console."""
    facts = [{"type": "mrkdwn", "text": f"*{_mrkdwn(k)}*\n{_mrkdwn(v)}"} for k, v in message.facts]
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": f"*{_mrkdwn(message.subject)}*"}},
        {"type": "section", "text": {"type": "mrkdwn", "text": _mrkdwn(message.summary)}},
    ]
    for start in range(0, len(facts), 10):  # Slack takes at most 10 fields per section
        blocks.append({"type": "section", "fields": facts[start : start + 10]})
    blocks.append(
        {
            "type": "actions",
            "elements": [
                {
                    "type": "button",
                    "text": {"type": "plain_text", "text": "Open in the console"},
                    "url": message.link,
                }
            ],
        }
    )
    text = f"{message.subject}: <{message.link}|open in the console>"
    return json.dumps({"text": text, "blocks": blocks}, ensure_ascii=False)


def _mrkdwn(text: str) -> str:
    # Slack's three control characters; anything else is shown as written.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def email(message: Message, *, sender: str, to: str, notification_id: str) -> EmailMessage:
    """The e-mail: plain text first, HTML as the alternative mail readers prefer."""
    mail = EmailMessage()
    mail["From"] = sender
    mail["To"] = to
    mail["Subject"] = message.subject
    # Lets a mail reader (or a person) tell a redelivery from a new message.
    mail["Message-ID"] = f"<{notification_id}@gatehouse>"
    mail["X-Gatehouse-Topic"] = message.topic
    width = max((len(label) for label, _ in message.facts), default=0)
    lines = [message.summary, "", *(f"{k.ljust(width)}  {v}" for k, v in message.facts)]
    mail.set_content("\n".join([*lines, "", f"Open in the console: {message.link}", ""]))
    mail.add_alternative(_email_html(message), subtype="html")
    return mail


def _email_html(message: Message) -> str:
    rows = "".join(
        f'<tr><th align="left" style="padding:2px 12px 2px 0">{html.escape(k)}</th>'
        f"<td>{html.escape(v)}</td></tr>"
        for k, v in message.facts
    )
    return (
        '<!doctype html><html><body style="font-family:system-ui,sans-serif">'
        f'<h2 style="font-size:18px">{html.escape(message.subject)}</h2>'
        f"<p>{html.escape(message.summary)}</p><table>{rows}</table>"
        f'<p><a href="{html.escape(message.link, quote=True)}">Open in the console</a></p>'
        "</body></html>"
    )
