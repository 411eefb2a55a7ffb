"""The web console for approvers and compliance, served by the gateway at `/console`.

    /console/login            sign in with an API key (people only) -> session cookie
    /console/login/sso        or with the company's OpenID provider, when [auth.oidc] is set
    /console/approvals        the queue of pending actions: counts, deadlines, filters,
                              headlines, the change; approve or reject       approvers
    /console/actions/{id}     the whole life of one action and its audit events; a pending
                              one's record read again before anyone decides
    /console/audit            the audit trail: filters, paging, chain status, download  compliance
    /console/sources          systems of record: health; entities: contracts and SLAs
    /console/logout           sign out (POST)

Server-rendered Jinja2 pages and plain HTML forms: no JavaScript is needed. Every form
carries a CSRF token; a page that policy does not grant is a 403. Any other address,
or a failure, answers a console page with its status, never JSON. Every page fits a phone.
"""

from gateway.console.router import console_router

__all__ = ["console_router"]
