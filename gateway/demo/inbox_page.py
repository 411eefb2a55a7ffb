"""The inbox's page for a person: e-mails and webhook posts, newest first, readable and safe.

render_page(mails, requests, ...)
├── an e-mail       subject, from, to, time; its text, and its HTML in a sandboxed iframe
├── a Slack post    its `text` and blocks as the lines Slack would show (mrkdwn as HTML)
└── other webhooks  JSON pretty-printed, anything else as received

Nothing from a message runs: Jinja escapes every value (the HTML goes in as an escaped `srcdoc`
attribute), the iframe's empty `sandbox` forbids scripts, forms and navigation, and the page
itself carries no script (a meta refresh keeps it current).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Any

from jinja2 import Environment, Template
from markupsafe import Markup, escape

from gateway.demo.inbox_store import HookRequest, Json, Mail

# Newest first; older ones stay in the API.
PAGE_LIMIT = 200

# Slack's link markup: <https://example|label> or <https://example>.
_SLACK_LINK = re.compile(r"<([^|<>]+)\|([^<>]+)>|<([^|<>]+)>")

_EMPHASIS = (
    (re.compile(r"(?<![\w*])\*([^*\n]+)\*(?![\w*])"), "strong"),
    (re.compile(r"(?<![\w_])_([^_\n]+)_(?![\w_])"), "em"),
    (re.compile(r"`([^`\n]+)`"), "code"),
)

_TEMPLATE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="refresh" content="{{ refresh }}">
<title>Gatehouse demo inbox</title>
<style>
body { font: 15px/1.45 system-ui, sans-serif; margin: 0 auto; max-width: 60rem; padding: 1rem;
       color: #1d2330; background: #f5f6f8; }
header p { color: #5b6475; margin: .2rem 0; }
code { background: #e8eaef; padding: 0 .25rem; border-radius: 3px; }
article { background: #fff; border: 1px solid #d8dce3; border-radius: 6px; margin: 1rem 0;
          padding: .8rem 1rem; }
article h2 { font-size: 1.05rem; margin: 0 0 .3rem; }
.kind { font-size: .75rem; text-transform: uppercase; letter-spacing: .05em; color: #fff;
        border-radius: 3px; padding: .05rem .4rem; margin-right: .4rem; }
.mail .kind { background: #3367d6; } .hook .kind { background: #1b8a5a; }
.failed .kind { background: #c5221f; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: 0 .8rem; margin: 0 0 .5rem;
     color: #5b6475; font-size: .9rem; }
dd { margin: 0; overflow-wrap: anywhere; }
pre { white-space: pre-wrap; overflow-wrap: anywhere; background: #f7f8fa; margin: .4rem 0;
      padding: .6rem; border-radius: 4px; font: 13px/1.4 ui-monospace, monospace; }
.slack p { margin: .3rem 0; white-space: pre-wrap; }
iframe { width: 100%; height: 22rem; border: 1px solid #d8dce3; border-radius: 4px;
         background: #fff; }
details summary { cursor: pointer; color: #5b6475; font-size: .9rem; }
.empty { color: #5b6475; font-style: italic; }
</style>
</head>
<body>
<header>
<h1>Gatehouse demo inbox</h1>
<p>E-mail: SMTP on <code>{{ smtp }}</code>. Webhooks: <code>POST {{ hooks_url }}/NAME</code>.
This page refreshes every {{ refresh }} s.</p>
</header>
{% for entry in entries %}
{% if entry.mail %}{% set mail = entry.mail %}
<article class="mail">
<h2><span class="kind">e-mail</span>{{ mail.subject or "(no subject)" }}</h2>
<dl>
<dt>From</dt><dd>{{ mail["from"] }}</dd>
<dt>To</dt><dd>{{ mail.to or mail.envelope_to | join(", ") }}</dd>
<dt>Received</dt><dd>{{ mail.received_at | when }}{% if mail.tls %} over TLS{% endif %}\
{% if mail.login %}, signed in as {{ mail.login }}{% endif %}</dd>
</dl>
{% if mail.html is not none %}
<iframe sandbox srcdoc="{{ mail.html }}" title="{{ mail.subject }}"></iframe>
{% endif %}
{% if mail.text is not none %}
{% if mail.html is not none %}<details><summary>Plain text</summary>{% endif %}
<pre>{{ mail.text }}</pre>
{% if mail.html is not none %}</details>{% endif %}
{% endif %}
</article>
{% else %}{% set hook = entry.hook %}
<article class="hook{% if hook.status >= 400 %} failed{% endif %}">
<h2><span class="kind">webhook</span>{{ hook.name }}</h2>
<dl>
<dt>Request</dt><dd>{{ hook.method }} /hooks/{{ hook.name }}{% if hook.query %}?{{ hook.query }}\
{% endif %}</dd>
<dt>Received</dt><dd>{{ hook.received_at | when }}, answered {{ hook.status }}</dd>
</dl>
{% if entry.slack %}
<div class="slack">{% for line in entry.slack %}<p>{{ line | mrkdwn }}</p>{% endfor %}</div>
<details><summary>JSON</summary><pre>{{ entry.body }}</pre></details>
{% else %}
<pre>{{ entry.body }}</pre>
{% endif %}
<details><summary>Headers</summary><pre>{% for name, value in hook.headers.items() %}\
{{ name }}: {{ value }}
{% endfor %}</pre></details>
</article>
{% endif %}
{% else %}
<p class="empty">Nothing yet.</p>
{% endfor %}
</body>
</html>
"""


@dataclass(frozen=True)
class _Entry:
    """One item of the page: an e-mail, or a webhook request with its body made readable."""

    received_at: str
    mail: Json | None = None
    hook: Json | None = None
    body: str = ""
    slack: list[str] | None = None


def render_page(
    mails: list[Mail], requests: list[HookRequest], *, smtp: str, hooks_url: str, refresh: int
) -> str:
    """The page: the newest PAGE_LIMIT e-mails and webhook requests, newest first."""
    entries = [_Entry(mail.received_at, mail=mail.to_json()) for mail in mails[-PAGE_LIMIT:]]
    entries += [_hook_entry(request.to_json()) for request in requests[-PAGE_LIMIT:]]
    entries.sort(key=lambda entry: entry.received_at, reverse=True)
    return _page().render(
        entries=entries[:PAGE_LIMIT], smtp=smtp, hooks_url=hooks_url, refresh=refresh
    )


@cache
def _page() -> Template:
    environment = Environment(autoescape=True, trim_blocks=True, lstrip_blocks=True)
    environment.filters.update(mrkdwn=mrkdwn, when=when)
    return environment.from_string(_TEMPLATE)


def _hook_entry(hook: Json) -> _Entry:
    data = hook["json"]
    body = json.dumps(data, indent=2, ensure_ascii=False) if data is not None else hook["body"]
    return _Entry(hook["received_at"], hook=hook, body=body, slack=slack_lines(data))


def slack_lines(data: Any) -> list[str] | None:
    """The mrkdwn lines Slack would show for an incoming-webhook body; None if it is not one."""
    if not isinstance(data, dict) or not ({"text", "blocks"} & data.keys()):
        return None
    lines = [data["text"]] if isinstance(data.get("text"), str) else []
    blocks = data.get("blocks")
    for block in blocks if isinstance(blocks, list) else []:
        lines += _block_lines(block)
    return [line for line in lines if line]


def _block_lines(block: Any) -> list[str]:
    """The lines of one Block Kit block (section, header, context, actions, divider)."""
    if not isinstance(block, dict):
        return []
    if block.get("type") == "divider":
        return ["―――"]
    texts = [block.get("text"), *_list(block.get("fields")), *_list(block.get("elements"))]
    return [text for text in map(_text_of, texts) if text]


def _text_of(item: Any) -> str:
    """A text object's text; a button as a mrkdwn link to its URL; "" for anything else."""
    if not isinstance(item, dict):
        return ""
    text = item.get("text")
    if isinstance(text, dict):  # a button: {"type": "button", "text": {...}, "url": ...}
        label, url = _text_of(text), item.get("url")
        return f"<{url}|{label}>" if isinstance(url, str) else f"[{label}]"
    return text if isinstance(text, str) else ""


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def mrkdwn(text: str) -> Markup:
    """Slack's mrkdwn as safe HTML: links (http and https only), *bold*, _italic_, `code`."""
    parts: list[Markup] = []
    position = 0
    for link in _SLACK_LINK.finditer(text):
        parts += [_emphasis(text[position : link.start()]), _link(link)]
        position = link.end()
    return Markup("").join([*parts, _emphasis(text[position:])])


def _link(match: re.Match[str]) -> Markup:
    url = match[1] or match[3]
    label = match[2] or url
    if not url.startswith(("http://", "https://")):  # a mention, a channel, or javascript:
        return escape(label)
    return Markup('<a href="{}" rel="noreferrer" target="_blank">{}</a>').format(url, label)


def _emphasis(text: str) -> Markup:
    # Escaped first, so the groups the patterns wrap are already safe.
    html = str(escape(text))
    for pattern, tag in _EMPHASIS:
        html = pattern.sub(rf"<{tag}>\1</{tag}>", html)
    return Markup(html)  # noqa: S704


def when(received_at: str) -> str:
    """An ISO timestamp as a person reads it: 2026-11-30 21:20:03 UTC."""
    moment = datetime.fromisoformat(received_at).astimezone(UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")
