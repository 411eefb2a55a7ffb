"""The TOML configuration: sources, entities with their data contracts, principals.

A typo is an error naming the file and the key; `${VAR}` in a string is taken from the
environment (secrets and URLs stay out of the file); one field has exactly one system of
record. Parsed once at start-up into frozen models.
"""

from __future__ import annotations

import base64
import os
import re
import tomllib
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from limits import parse_many
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    StringConstraints,
    ValidationError,
    model_validator,
)

from gateway.errors import ConfigError
from sources.records import FieldType

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_ENV_REF = re.compile(r"\$\{([A-Z0-9_]+)\}")


def parse_duration(value: object) -> float:
    """Seconds from `90`, `"30s"`, `"15m"`, `"1h"` or `"7d"`."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    match = _DURATION.match(str(value))
    if not match:
        raise ValueError(f"'{value}' is not a duration like 30s, 15m, 1h or 7d")
    return float(match.group(1)) * _UNITS[match.group(2)]


Seconds = Annotated[float, BeforeValidator(parse_duration), Field(ge=0)]


class Strict(BaseModel):
    """Unknown keys are typos: refuse them."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Classification(StrEnum):
    """How sensitive a field is; `pii` is masked unless granted."""

    PUBLIC = "public"
    INTERNAL = "internal"
    PII = "pii"
    FINANCIAL = "financial"


class FieldConfig(Strict):
    """One field: where it lives, its type, and its part of the data contract."""

    at: str | None = None  # column or JSON path; defaults to the field's name
    type: FieldType = "str"
    scale: int = Field(default=0, ge=0, le=12)
    classification: Classification = Classification.INTERNAL
    owner: str | None = None
    system: str | None = None  # defaults to the entity's source
    description: str = ""
    values: dict[str, str] = {}  # the system's value -> the contract's, where they differ
    # The contract's promises about the data: a record that breaks one is a data error.
    required: bool = False  # never null or absent
    min: Decimal | None = None  # int and decimal fields: the least and greatest values
    max: Decimal | None = None

    @model_validator(mode="after")
    def _check(self) -> FieldConfig:
        bounded = self.min is not None or self.max is not None
        if bounded and self.type not in ("int", "decimal"):
            raise ValueError("min and max bound int and decimal fields only")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError("min must not be greater than max")
        return self


class ChildConfig(Strict):
    """A list of sub-records read with the parent."""

    at: str
    parent_key: str = ""  # SQL: the child table's column pointing at the parent key
    order_by: list[str] = []
    fields: dict[str, FieldConfig]


class HttpEndpoints(Strict):
    """Where an HTTP source serves one entity."""

    one: str
    many: str
    list: str
    items: str = "data"
    many_param: str = "ids"
    max_batch: int = Field(default=100, ge=1, le=1000)
    search_param: str | None = "q"
    filter_params: dict[str, str] = {}


class TrytonModel(Strict):
    """Which Tryton model holds an entity, and which of its records are the entity's."""

    model: str = Field(pattern=r"^[a-z_][a-z0-9_.]*$")
    domain: list[Any] = []  # a Tryton domain, e.g. [["code", "!=", null]]


class CopyHttp(Strict):
    """Where an http source serves a copy: one record by key, and the whole copy in pages
    (`list`, asked with limit and offset, its records under `items`, `total` their count)."""

    one: str
    list: str
    items: str = "data"
    page_size: int = Field(default=500, ge=1, le=5000)


class CopyRepair(Strict):
    """The governed action a person may submit to set a drifting copy to the record's value:
    its kind, and the input fields taking the record's key and value."""

    action: str  # e.g. storefront.sync_stock
    key: str
    value: str


class CopyConfig(Strict):
    """A copy of one contract field held in another system (gateway/drift.py compares them).

    The system of record stays authoritative; a difference beyond `tolerance` that lasts
    longer than `delay` is drift.
    """

    source: str  # the configured source holding the copy (http or sql)
    field: str  # the contract's field: `email`, or a child's as `levels.available`
    where: dict[str, str | int | bool] = {}  # a child field: which child row (location = ...)
    key: str | None = None  # where the copy holds the record's key; the entity's key by default
    value: str | None = None  # where it holds the value; the field's own name by default
    updated_at: str | None = None  # where it holds its last-modified time, if it keeps one
    scale: int | None = Field(default=None, ge=0, le=12)  # the copy's scale, if not the field's
    http: CopyHttp | None = None  # an http source: the copy's endpoints
    table: str | None = None  # a sql source: the table or view holding the copy
    tolerance: Decimal = Field(default=Decimal(0), ge=0)  # numbers: the difference allowed
    delay: Seconds = 0.0  # how long a difference may last before it is drift
    # A datetime field of the contract saying when the record last changed: a difference older
    # than `delay` since then is drift at once. The entity's updated_at for a plain field.
    record_updated_at: str | None = None
    repair: CopyRepair | None = None  # offered on the console's drift page, never run by itself
    description: str = ""


class EntityConfig(Strict):
    """An entity, its system of record, mapping and data contract."""

    source: str
    key: str
    owner: str
    # Where the owner hears of alerts: channel names; else the address in `owner`, by e-mail.
    owner_contact: list[str] = []
    warn_after: Seconds
    error_after: Seconds
    description: str = ""
    cache_ttl: Seconds | None = None  # how long a read is served from cache; warn_after if unset
    keep_stale_for: Seconds = 86400.0  # how long a last good value may stand in for a failure
    cache_size: int = Field(default=10_000, ge=1)
    updated_at: str | None = None
    version: str | None = None
    table: str | None = None
    searchable: list[str] = []
    http: HttpEndpoints | None = None
    tryton: TrytonModel | None = None
    fields: dict[str, FieldConfig]
    children: dict[str, ChildConfig] = {}
    copies: dict[str, CopyConfig] = {}  # copies of its fields held in other systems

    @model_validator(mode="after")
    def _check(self) -> EntityConfig:
        if self.error_after < self.warn_after:
            raise ValueError("error_after must not be shorter than warn_after")
        for name in (self.key, self.updated_at, self.version, *self.searchable):
            if name is not None and name not in self.fields:
                raise ValueError(f"'{name}' is not one of this entity's fields")
        return self

    @property
    def ttl(self) -> float:
        """Seconds a read is served from cache without going back to the source."""
        return self.warn_after if self.cache_ttl is None else self.cache_ttl

    def all_fields(self) -> list[tuple[str, FieldConfig]]:
        """Every field of the contract, in order; a child's named `child.field`."""
        fields = list(self.fields.items())
        for child_name, child in self.children.items():
            fields += [(f"{child_name}.{name}", field) for name, field in child.fields.items()]
        return fields


class DriftConfig(Strict):
    """The periodic drift sweep over every declared copy (gateway/drift.py); off unless set."""

    every: Seconds | None = None


def check_copies(entity_name: str, entity: EntityConfig, sources: dict[str, SourceConfig]) -> None:
    """Each copy names a readable source, one of the contract's fields, and for a child's
    field the one child row it copies; raise ValueError naming the key otherwise."""
    fields = dict(entity.all_fields())
    for name, copy in entity.copies.items():
        at = f"entities.{entity_name}.copies.{name}"
        _check_copy_source(at, copy, sources)
        if copy.field not in fields:
            raise ValueError(f"{at}.field: '{copy.field}' is not one of {entity_name}'s fields")
        _check_copy_row(at, copy, entity)
        if copy.tolerance and fields[copy.field].type not in ("int", "decimal"):
            raise ValueError(f"{at}.tolerance: only an int or decimal field allows a difference")
        stamp = copy.record_updated_at
        if stamp is not None and (stamp not in fields or fields[stamp].type != "datetime"):
            raise ValueError(f"{at}.record_updated_at: '{stamp}' is not a datetime field")


def _check_copy_source(at: str, copy: CopyConfig, sources: dict[str, SourceConfig]) -> None:
    if copy.source not in sources:
        raise ValueError(f"{at}.source: no source named '{copy.source}'")
    kind = sources[copy.source].kind
    if kind == "tryton":
        raise ValueError(f"{at}.source: a copy is read from an http or sql source")
    if kind == "http" and copy.http is None:
        raise ValueError(f"{at}.http: required for a copy held by an http source")
    if kind == "sql" and not copy.table:
        raise ValueError(f"{at}.table: required for a copy held by a sql source")


def _check_copy_row(at: str, copy: CopyConfig, entity: EntityConfig) -> None:
    child, _, _ = copy.field.rpartition(".")
    if not child:
        if copy.where:
            raise ValueError(f"{at}.where: only a child's field is picked by its row")
        return
    if not copy.where:
        raise ValueError(f"{at}.where: required for a child's field (which {child} row?)")
    for name in copy.where:
        if name not in entity.children[child].fields:
            raise ValueError(f"{at}.where: '{name}' is not a field of {child}")


class BreakerConfig(Strict):
    """When a failing source stops being called: after `failures` transport failures in a
    row, calls fail fast for `reset`, then one probe decides."""

    failures: int = Field(default=5, ge=1)
    reset: Seconds = 30.0


class ReadRetryConfig(Strict):
    """How often a read is tried on a transport failure or timeout, with jittered backoff
    growing from `backoff` (writes keep their own rules)."""

    attempts: int = Field(default=3, ge=1, le=10)
    backoff: Seconds = 0.1


class SourceConfig(Strict):
    """A system of record and how to reach it."""

    kind: Literal["sql", "http", "tryton"]
    url: str
    timeout: Seconds = 5.0
    headers: dict[str, str] = {}
    db_schema: str | None = Field(default=None, alias="schema")
    description: str = ""
    # tryton: the database, the user, and the environment variable holding its password;
    # the TOML never holds a password.
    database: str | None = None
    user: str | None = None
    password_env: str | None = Field(default=None, pattern=r"^[A-Z_][A-Z0-9_]*$")
    breaker: BreakerConfig = BreakerConfig()
    read_retry: ReadRetryConfig = ReadRetryConfig()

    @model_validator(mode="after")
    def _check(self) -> SourceConfig:
        if self.kind == "tryton":
            for name in ("database", "user", "password_env"):
                if not getattr(self, name):
                    raise ValueError(f"{name}: required for a tryton source")
        return self


class ActionConfig(Strict):
    """One governed action the estate offers: its implementation and the source it writes."""

    implementation: str = Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")  # package.module:Class
    source: str
    description: str = ""


class PrincipalKind(StrEnum):
    """Who is calling."""

    HUMAN = "human"
    SERVICE = "service"
    AGENT = "agent"


class PrincipalConfig(Strict):
    """A caller: its kind, roles, attributes and hashed API keys."""

    kind: PrincipalKind
    display_name: str
    roles: list[str] = []
    on_behalf_of: str | None = None
    attributes: dict[str, str | int | float | bool] = {}
    api_key_sha256: list[str] = []
    # Where notifications for this principal go: its e-mail (with [notify.smtp]), channels.
    email: str | None = Field(default=None, pattern=r"^[^@\s<>]+@[^@\s<>]+$")
    notify: list[str] = []

    @model_validator(mode="after")
    def _check(self) -> PrincipalConfig:
        if self.kind is PrincipalKind.AGENT and not self.on_behalf_of:
            raise ValueError("an agent needs on_behalf_of: the human accountable for it")
        for digest in self.api_key_sha256:
            if not re.fullmatch(r"[0-9a-f]{64}", digest):
                raise ValueError("api_key_sha256 holds hex SHA-256 digests of keys, not keys")
        return self


def _http_url(value: str) -> str:
    if not re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?", value):
        raise ValueError(f"'{value}' is not an http(s) URL without query or fragment")
    return value


HttpUrl = Annotated[str, AfterValidator(_http_url)]


class OAuthConfig(Strict):
    """An OAuth 2.1 resource server (gateway/oauth.py): bearer JWTs from these authorization
    servers, for this resource, mapped to configured principals."""

    resource: HttpUrl  # this gateway's resource URI, the tokens' audience: https://host/mcp
    authorization_servers: list[HttpUrl] = Field(min_length=1)  # their issuer identifiers
    # An issuer's JWKS URL, where it is not found by RFC 8414 discovery.
    jwks_uris: dict[str, HttpUrl] = {}
    # A token's `sub`, or else its `client_id`, -> the configured principal it acts as.
    principals: dict[str, str] = Field(min_length=1)
    algorithms: list[str] = ["RS256", "PS256", "ES256", "EdDSA"]
    leeway: Seconds = 30.0  # clock skew allowed on exp, nbf and iat
    # A token naming a key not held fetches the JWKS again, at most this often.
    jwks_min_refresh: Seconds = 10.0
    jwks_max_age: Seconds = 3600.0  # keys are fetched again once this old
    resource_name: str = "Gatehouse"

    @model_validator(mode="after")
    def _check(self) -> OAuthConfig:
        for issuer in self.jwks_uris:
            if issuer not in self.authorization_servers:
                raise ValueError(f"jwks_uris: '{issuer}' is not one of authorization_servers")
        for url in [*self.authorization_servers, *self.jwks_uris.values()]:
            # Keys fetched over plain HTTP could be anyone's; loopback is for tests and demos.
            if not re.match(r"https://|http://(localhost|127\.0\.0\.1|\[::1\])[:/]", url + "/"):
                raise ValueError(f"'{url}': authorization servers and keys are fetched over https")
        if "none" in {a.lower() for a in self.algorithms} or any(
            a.startswith("HS") for a in self.algorithms
        ):
            raise ValueError("algorithms: only asymmetric ones; the keys are public")
        return self


def _fetched_safely(url: str) -> str:
    # Keys fetched over plain HTTP could be anyone's; loopback is for tests and demos.
    if not re.match(r"https://|http://(localhost|127\.0\.0\.1|\[::1\])[:/]", url + "/"):
        raise ValueError(f"'{url}': an issuer is reached over https (http only on loopback)")
    return url


class OidcConfig(Strict):
    """Console sign-in through an OpenID provider (gateway/console/sso.py): the authorization
    code flow with PKCE; the ID token's `claim` maps to a configured human principal."""

    issuer: Annotated[HttpUrl, AfterValidator(_fetched_safely)]  # discovery: /.well-known/...
    name: str = "single sign-on"  # on the button: "Sign in with <name>"
    client_id: str = Field(min_length=1)
    client_secret: SecretStr | None = None  # None: a public client (PKCE alone)
    scopes: list[str] = ["openid", "email"]
    claim: str = "email"  # the ID token claim naming the person
    # The claim's value -> the configured principal (a human) it signs in as.
    principals: dict[str, str] = Field(min_length=1)
    # With claim = "email": only an address the provider says it verified maps to anyone.
    require_verified_email: bool = True
    # A second factor, as the provider states it in the ID token's `amr` (RFC 8176): a sign-in
    # naming none of these methods is refused, e.g. ["mfa"] or ["mfa", "otp", "hwk"]. Empty
    # (the default): the provider's own policy decides.
    require_amr: list[Annotated[str, StringConstraints(min_length=1)]] = []
    # The callback as registered at the provider; by default from the request's own URL.
    redirect_uri: HttpUrl | None = None
    algorithms: list[str] = ["RS256", "PS256", "ES256", "EdDSA"]
    leeway: Seconds = 30.0  # clock skew allowed on exp and iat
    timeout: Seconds = Field(default=10.0, gt=0)  # per request to the provider

    @model_validator(mode="after")
    def _check(self) -> OidcConfig:
        if "openid" not in self.scopes:
            raise ValueError("scopes: OpenID Connect needs the 'openid' scope")
        if "none" in {a.lower() for a in self.algorithms} or any(
            a.startswith("HS") for a in self.algorithms
        ):
            raise ValueError("algorithms: only asymmetric ones, checked against the JWKS")
        return self


def _check_oidc(auth: AuthConfig, principals: dict[str, PrincipalConfig]) -> None:
    """Single sign-on maps only to configured people: agents and services use keys."""
    for value, name in (auth.oidc.principals if auth.oidc else {}).items():
        at = f"auth.oidc.principals.{value}"
        if name not in principals:
            raise ValueError(f"{at}: no principal named '{name}'")
        kind = principals[name].kind
        if kind is not PrincipalKind.HUMAN:
            article = "an" if kind is PrincipalKind.AGENT else "a"
            raise ValueError(f"{at}: '{name}' is {article} {kind.value}; only people sign in")


class AuthConfig(Strict):
    """Optional JWT verification (the secret comes from GATEHOUSE_JWT_SECRET), OAuth, and
    the console's single sign-on."""

    jwt_algorithms: list[str] = ["HS256"]
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    oauth: OAuthConfig | None = None
    oidc: OidcConfig | None = None


class PolicyConfig(Strict):
    """Where the Casbin model and policy live (relative to the config file)."""

    model: Path = Path("model.conf")
    policy: Path = Path("policy.csv")
    dir: Path = Path("policies")


def _rate(value: object) -> str:
    try:
        parse_many(str(value))
    except ValueError as exc:
        raise ValueError(
            f"'{value}' is not a rate like 600/minute or 10/second;300/minute"
        ) from exc
    return str(value)


Rate = Annotated[str, AfterValidator(_rate)]


class RateLimits(Strict):
    """GraphQL operations (not HTTP requests) one principal may run, per principal kind.

    A moving window; several limits separated by `;` all apply (a burst and a sustained rate).
    """

    human: Rate = "600/minute"
    service: Rate = "6000/minute"
    agent: Rate = "300/minute"


def _counters(value: str) -> str:
    if value != "memory://" and not value.startswith(("redis://", "rediss://")):
        raise ValueError('"memory://", or a Redis URL: redis://host:port/db, rediss://...')
    if value.startswith("redis") and not urlsplit(value).hostname:
        raise ValueError("a Redis URL names its host: redis://host:port/db")
    return value


Counters = Annotated[str, AfterValidator(_counters)]


class LimitsConfig(Strict):
    """Bounds on what one request may ask."""

    max_page_size: int = Field(default=500, ge=1)
    default_page_size: int = Field(default=20, ge=1)
    max_depth: int = Field(default=10, ge=1)
    max_complexity: int = Field(default=50_000, ge=1)
    max_operations: int = Field(default=20, ge=1)
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    # How deep a request's JSON (GraphQL variables, MCP arguments) may nest.
    max_json_depth: int = Field(default=64, ge=4)
    # Aliases and lexical tokens in one document; both refused before anything runs.
    max_aliases: int = Field(default=30, ge=0)
    max_tokens: int = Field(default=5000, ge=100)
    # Mutation fields one request (a document, or every operation of a batch) may run.
    max_mutations: int = Field(default=1, ge=1)
    rate: RateLimits = RateLimits()
    # Where rate windows (principals' limits, channels' pacing) are counted: "memory://",
    # each process its own, or a Redis URL ("redis://host:6379/0", "rediss://" for TLS)
    # whose count every replica and worker shares, under `counters_prefix`.
    # Console sign-ins per remote address: failures allowed, single sign-ons started.
    sign_in_failures: Rate = "10/minute"
    sso_starts: Rate = "30/minute"
    counters: Counters = "memory://"
    counters_prefix: str = Field(default="gatehouse", pattern=r"^[A-Za-z0-9_.:-]{1,64}$")


class WritesConfig(Strict):
    """How long pending approvals and idempotency keys live."""

    approval_ttl: Seconds = 86400.0
    idempotency_ttl: Seconds = 7 * 86400.0
    # How long an in-flight action is held by the process working on it without a renewal;
    # after a crash, recovery takes it over once this has passed.
    lease: Seconds = Field(default=10.0, gt=0)


class GraphQLConfig(Strict):
    """What the GraphQL endpoint shows about itself: off unless the estate opts in."""

    # Introspection (`__schema`, `__type`) and the "Did you mean ...?" suggestions in errors,
    # which leak the schema just as introspection does.
    introspection: bool = False
    # The GraphiQL IDE on GET /graphql, its assets served by the gateway itself.
    graphiql: bool = False


class ChannelKind(StrEnum):
    """How a notification travels."""

    WEBHOOK = "webhook"  # signed JSON for systems (Standard Webhooks headers)
    SLACK = "slack"  # a Slack-compatible incoming webhook: a readable message
    EMAIL = "email"  # e-mail to fixed addresses, through [notify.smtp]


def _webhook_secret(value: str) -> str:
    # Standard Webhooks secrets: "whsec_" and base64 of at least 24 random bytes.
    try:
        key = base64.b64decode(value.removeprefix("whsec_"), validate=True)
    except ValueError:
        key = b""
    if not value.startswith("whsec_") or len(key) < 24:
        raise ValueError("a webhook secret is whsec_ followed by base64 of 24 or more bytes")
    return value


class ChannelConfig(Strict):
    """A place notifications are delivered to; named in principals, owners, subscriptions."""

    kind: ChannelKind
    url: HttpUrl | None = None  # webhook and slack
    secret: Annotated[str, AfterValidator(_webhook_secret)] | None = None  # webhook
    to: list[Annotated[str, Field(pattern=r"^[^@\s<>]+@[^@\s<>]+$")]] = []  # email
    # At most this many deliveries to this channel, so a storm is paced, never dropped.
    rate: Annotated[str, BeforeValidator(_rate)] = "120/minute"
    description: str = ""

    @model_validator(mode="after")
    def _check(self) -> ChannelConfig:
        if self.kind is ChannelKind.EMAIL:
            if not self.to:
                raise ValueError("to: an email channel needs at least one address")
        elif self.url is None:
            raise ValueError(f"url: required for a {self.kind.value} channel")
        if self.kind is ChannelKind.WEBHOOK and self.secret is None:
            raise ValueError("secret: a webhook is signed; set one (from ${...})")
        return self


class SmtpConfig(Strict):
    """The mail server e-mail notifications go through; credentials from the environment."""

    host: str
    port: int = Field(default=587, ge=1, le=65535)
    sender: Annotated[str, Field(pattern=r"^[^@\s<>]+@[^@\s<>]+$")]
    starttls: bool = True  # upgrade to TLS before AUTH; off only for a loopback test server
    username: str | None = None
    password: str | None = None
    # A private CA to trust, besides the system's ("" from an unset variable: none).
    ca_file: Annotated[Path | None, BeforeValidator(lambda v: v or None)] = None

    @model_validator(mode="after")
    def _check(self) -> SmtpConfig:
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password go together")
        loopback = self.host in ("localhost", "127.0.0.1", "::1")
        if self.password is not None and not (self.starttls or loopback):
            raise ValueError("starttls: credentials are never sent in clear")
        return self


# The statuses an action's audit events end in that a subscriber may ask for.
Outcome = Literal[
    "APPLIED",
    "PENDING_APPROVAL",
    "REJECTED",
    "DENIED",
    "EXPIRED",
    "FAILED",
    "IN_DOUBT",
    "INVALID",
    "CONFLICT",
]


class SubscriptionConfig(Strict):
    """A system that hears of governed changes: every action of these kinds and outcomes."""

    channel: str  # a webhook channel
    actions: list[str] = Field(min_length=1)  # mutation names, e.g. placeOrder
    outcomes: list[Outcome] = ["APPLIED"]


class NotifyConfig(Strict):
    """Who hears of what, and how the sender paces and retries."""

    console_url: HttpUrl = "http://127.0.0.1:8000/console"  # every message links here
    smtp: SmtpConfig | None = None
    # Channels for alerts with no owner to tell (a failing channel, a source without entities).
    operators: list[str] = []
    expiring_within: Seconds = 2 * 3600.0  # approvers hear once when this is left to decide
    reminder_after: Seconds = 4 * 3600.0  # an alert still open is repeated this often
    attempts: int = Field(default=8, ge=1)  # deliveries tried before a notification FAILED
    backoff: Seconds = 5.0  # the wait after the first failure; doubles per attempt
    backoff_max: Seconds = 3600.0
    timeout: Seconds = Field(default=10.0, gt=0)  # per delivery
    every: Seconds = Field(default=1.0, gt=0)  # how often the sender looks for work


class GatewayConfig(Strict):
    """The whole configuration file."""

    sources: dict[str, SourceConfig]
    entities: dict[str, EntityConfig]
    actions: dict[str, ActionConfig] = {}
    drift: DriftConfig = DriftConfig()
    principals: dict[str, PrincipalConfig] = {}
    auth: AuthConfig = AuthConfig()
    policy: PolicyConfig = PolicyConfig()
    limits: LimitsConfig = LimitsConfig()
    writes: WritesConfig = WritesConfig()
    graphql: GraphQLConfig = GraphQLConfig()
    channels: dict[str, ChannelConfig] = {}
    subscriptions: dict[str, SubscriptionConfig] = {}
    notify: NotifyConfig = NotifyConfig()
    base_dir: Path = Path()

    @model_validator(mode="after")
    def _check_references(self) -> GatewayConfig:
        for name, entity in self.entities.items():
            _check_entity(name, entity, self.sources)
        for name, principal in self.principals.items():
            _check_principal(name, principal, self.principals)
        for claim, name in (self.auth.oauth.principals if self.auth.oauth else {}).items():
            if name not in self.principals:
                raise ValueError(f"auth.oauth.principals.{claim}: no principal named '{name}'")
        _check_oidc(self.auth, self.principals)
        for name, action in self.actions.items():
            if action.source not in self.sources:
                raise ValueError(f"actions.{name}.source: no source named '{action.source}'")
        _check_channels(self)
        return self

    def policy_path(self, which: Literal["model", "policy"]) -> Path:
        """The absolute path of the Casbin model or policy file."""
        file = self.policy.model if which == "model" else self.policy.policy
        return (self.base_dir / self.policy.dir / file).resolve()


def _check_entity(name: str, entity: EntityConfig, sources: dict[str, SourceConfig]) -> None:
    if entity.source not in sources:
        raise ValueError(f"entities.{name}.source: no source named '{entity.source}'")
    kind = sources[entity.source].kind
    if kind == "sql" and not entity.table:
        raise ValueError(f"entities.{name}.table: required for a sql source")
    if kind == "http" and entity.http is None:
        raise ValueError(f"entities.{name}.http: required for an http source")
    if kind == "tryton" and entity.tryton is None:
        raise ValueError(f"entities.{name}.tryton: required for a tryton source")
    for field_name, field in entity.all_fields():
        if field.system is not None and field.system != entity.source:
            raise ValueError(
                f"entities.{name}.fields.{field_name}.system: two systems of record for one "
                f"field ('{entity.source}' serves this entity, the field names "
                f"'{field.system}'); a field has exactly one system of record"
            )
    check_copies(name, entity, sources)


def _check_principal(
    name: str, principal: PrincipalConfig, principals: dict[str, PrincipalConfig]
) -> None:
    owner = principal.on_behalf_of
    if owner is None:
        return
    if owner not in principals or principals[owner].kind is not PrincipalKind.HUMAN:
        raise ValueError(f"principals.{name}.on_behalf_of: '{owner}' is not a human principal")


def _check_channels(config: GatewayConfig) -> None:
    """Every channel named exists; e-mail needs a mail server; subscriptions are signed."""
    named = [
        *((f"principals.{n}.notify", c) for n, p in config.principals.items() for c in p.notify),
        *(
            (f"entities.{n}.owner_contact", c)
            for n, e in config.entities.items()
            for c in e.owner_contact
        ),
        *((f"subscriptions.{n}.channel", s.channel) for n, s in config.subscriptions.items()),
        *(("notify.operators", c) for c in config.notify.operators),
    ]
    if "email" in config.channels:
        raise ValueError("channels.email: the name is taken by people's own addresses")
    for key, name in named:
        if name not in config.channels:
            raise ValueError(f"{key}: no channel named '{name}'")
    for name, subscription in config.subscriptions.items():
        if config.channels[subscription.channel].kind is not ChannelKind.WEBHOOK:
            raise ValueError(f"subscriptions.{name}.channel: systems subscribe through a webhook")
    if config.notify.smtp is None:
        for name, channel in config.channels.items():
            if channel.kind is ChannelKind.EMAIL:
                raise ValueError(f"channels.{name}: e-mail needs [notify.smtp]")


def load_config(path: Path, environ: dict[str, str] | None = None) -> GatewayConfig:
    """Read, expand and validate the configuration file, or raise ConfigError naming the key."""
    env = dict(os.environ if environ is None else environ)
    raw = _read(path)
    if isinstance(extends := raw.pop("extends", None), str):
        # Another estate's file as the base: each table this file names replaces the base's
        # (sources, entities and actions, say), the rest (principals, policy) is shared.
        base = _read((path.parent / extends).resolve())
        if "extends" in base:
            raise ConfigError(f"{path}: extends: '{extends}' extends another file; one level only")
        raw = {**base, **raw}
    expanded = _expand(raw, env, path, ())
    try:
        return GatewayConfig.model_validate({**expanded, "base_dir": path.parent.resolve()})
    except ValidationError as exc:
        raise ConfigError(_describe(path, exc)) from exc


def _read(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc


def _expand(value: Any, env: dict[str, str], path: Path, at: tuple[str, ...]) -> Any:
    if isinstance(value, dict):
        return {key: _expand(item, env, path, (*at, key)) for key, item in value.items()}
    if isinstance(value, list):
        return [_expand(item, env, path, (*at, str(i))) for i, item in enumerate(value)]
    if isinstance(value, str):
        return _ENV_REF.sub(lambda match: _env_value(match.group(1), env, path, at), value)
    return value


def _env_value(name: str, env: dict[str, str], path: Path, at: tuple[str, ...]) -> str:
    if name not in env:
        raise ConfigError(f"{path}: {'.'.join(at)}: environment variable {name} is not set")
    return env[name]


def _describe(path: Path, exc: ValidationError) -> str:
    problems = []
    for error in exc.errors():
        key = ".".join(str(part) for part in error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown key (a typo?)"
        problems.append(f"{path}: {key}: {message}" if key else f"{path}: {message}")
    return "\n".join(problems)
