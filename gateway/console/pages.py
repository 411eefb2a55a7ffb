"""Rendering console pages: Jinja2 templates (autoescaped), refusals as pages, safe headers.

A console route raises `SignInRequired` (-> 303 to the sign-in page, remembering where the
person was going) or `Refused` (-> a plain page saying why, with its status); `ConsoleRoute`
turns both into responses and adds the headers every console response carries.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from functools import cache
from http import HTTPStatus
from typing import Any
from urllib.parse import urlencode, urlsplit

from fastapi import HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from jinja2 import Environment, PackageLoader, StrictUndefined

from gateway.console import drafts, wording
from gateway.console.access import Page, Viewer

log = logging.getLogger("gatehouse.console")

ROOT = "/console"  # where `console_router` is mounted; the session cookie's Path
HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


class SignInRequired(Exception):
    """Nobody is signed in: send them to sign in, then back to `next`. `ended`: a session
    was, and has ended (the sign-in page says so); `draft`: the cookie of what they had
    typed (drafts.py)."""

    def __init__(self, next_path: str, *, ended: bool = False, draft: str | None = None) -> None:
        super().__init__(next_path)
        self.next_path, self.ended, self.draft = next_path, ended, draft


class Refused(Exception):
    """A request the console will not serve, with the status and the reason in words."""

    def __init__(self, status: int, title: str, message: str, viewer: Viewer | None) -> None:
        super().__init__(message)
        self.status, self.title, self.message, self.viewer = status, title, message, viewer


@cache
def environment() -> Environment:
    """The templates, loaded once from the package, escaping every value."""
    env = Environment(
        loader=PackageLoader("gateway.console", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        status_words=wording.status_words,
        status_tone=wording.status_tone,
        decision_words=wording.decision_words,
        kind_title=wording.kind_title_filter,
        kind_summary=wording.kind_summary_filter,
        event_words=wording.event_words,
        when=wording.when,
        duration=wording.duration,
        shown=wording.shown,
        pretty=wording.pretty,
        diff_rows=wording.diff_rows,
        field_label=wording.field_label,
        target_words=wording.target_words,
    )
    env.globals.update(relative=wording.relative, principal_kinds=wording.PRINCIPAL_KINDS)
    env.globals.update(value_words=wording.value_words)
    return env


def render(
    template: str, *, viewer: Viewer | None, status: int = 200, **context: Any
) -> HTMLResponse:
    """A page from a template, with what the layout needs (who is signed in, the time)."""
    page = environment().get_template(template)
    defaults = {"notice": None, "error": None, "active": ""}
    html = page.render(
        {**defaults, **context}, viewer=viewer, now=datetime.now(UTC), Page=Page, root=ROOT
    )
    return HTMLResponse(html, status_code=status)


def redirect(location: str) -> RedirectResponse:
    """303 See Other: after a form post the browser GETs the next page."""
    return RedirectResponse(location, status_code=303)


def safe_next(value: str | None) -> str:
    """Where to go after signing in: a path inside the console, never another site."""
    if not value or "\\" in value or any(ord(c) < 32 for c in value):
        return f"{ROOT}/"
    parts = urlsplit(value)
    inside = parts.path == ROOT or parts.path.startswith(f"{ROOT}/")
    if parts.scheme or parts.netloc or not inside or value.startswith("//"):
        return f"{ROOT}/"
    return value


def sign_in_location(next_path: str, *, ended: bool = False) -> str:
    """The sign-in page, remembering where the person was going."""
    query = {"next": safe_next(next_path), **({"ended": "1"} if ended else {})}
    return f"{ROOT}/login?{urlencode(query)}"


def signing_in(signal: SignInRequired, request: Request) -> Response:
    """To the sign-in page; with the draft's cookie when something typed was kept."""
    response = redirect(sign_in_location(signal.next_path, ended=signal.ended))
    if signal.draft is not None:
        response.set_cookie(
            drafts.COOKIE,
            signal.draft,
            max_age=int(drafts.LIFETIME.total_seconds()),
            path=ROOT,
            secure=request.url.scheme == "https",
            httponly=True,
            samesite="strict",
        )
    return response


_MALFORMED = (
    "That address is not right",
    "Part of the address or the form is not what this page expects (too long, or not a "
    "value it knows). Nothing was changed.",
)
_BROKEN = (
    "Something went wrong",
    "The console could not show this page. Nothing was changed by it; try again, and tell "
    "the people who run Gatehouse if it keeps happening.",
)


def _failed(status: int) -> tuple[str, str]:
    if status == 404:
        return NOT_FOUND
    if status == 405:
        return ("Not something this page does", "This page cannot be used that way.")
    return (HTTPStatus(status).phrase, "The console could not answer this request.")


NOT_FOUND = (
    "No such page",
    "There is no console page at this address. It may have been mistyped, or the link may be old.",
)


def refused_page(refused: Refused) -> HTMLResponse:
    """The page that says why a request was not served, with its status."""
    return render(
        "refused.html",
        viewer=refused.viewer,
        status=refused.status,
        title=refused.title,
        message=refused.message,
    )


class ConsoleRoute(APIRoute):
    """Turns the console's signals into pages and adds the console's headers."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """The route's handler, wrapped."""
        handler = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            try:
                response = await handler(request)
            except SignInRequired as signal:
                response = signing_in(signal, request)
            except Refused as refused:
                response = refused_page(refused)
            except RequestValidationError:  # a URL or form no console page makes
                response = refused_page(Refused(400, *_MALFORMED, None))
            except HTTPException as exc:
                response = refused_page(Refused(exc.status_code, *_failed(exc.status_code), None))
            except Exception:  # never a traceback or raw JSON; the log has the details
                log.exception("console page failed", extra={"path": request.url.path})
                response = refused_page(Refused(500, *_BROKEN, None))
            for name, value in HEADERS.items():
                response.headers.setdefault(name, value)
            return response

        return guarded
