"""The OAuth check's cost per call, with the authorization server's keys cached.

    python -m tests.bench.bench_oauth [--calls N] [--rounds R]

Times `Authenticator.verify`, what BearerGate and GraphQL run for every request: the bearer
header parsed, the API-key lookup missed, an RS256 access token (as tests/authorization_server
issues them) checked for signature, issuer, audience and expiry, and mapped to its principal
with its scopes. Keys were fetched once beforehand (no I/O while timing). Timed separately: a
token's first call (fresh tokens, the full check) and its later calls (one token, as an agent
sends it on every call, answered from the verified tokens); an API key's check alongside.

    target: median first call under 200 us

Not part of the test run; exits 1 when the target is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from typing import Any

from gateway.config import AuthConfig, OAuthConfig, PrincipalConfig, PrincipalKind
from gateway.principals import Authenticator, hash_key
from tests.authorization_server import AuthorizationServer

TARGET_US = 200.0
ISSUER = "https://auth.example.com/realms/gatehouse"
RESOURCE = "https://gatehouse.example.com/mcp"
API_KEY = "gh_bench_api_key_0123456789abcdef"


def authenticator(server: AuthorizationServer) -> Authenticator:
    """An authenticator with one agent, reachable by API key or by an OAuth client."""
    oauth = OAuthConfig(
        resource=RESOURCE,
        authorization_servers=[ISSUER],
        jwks_uris={ISSUER: f"{ISSUER}/jwks"},
        principals={"bench-client": "bench-agent"},
    )
    principals = {
        "owner": PrincipalConfig(kind=PrincipalKind.HUMAN, display_name="Owner"),
        "bench-agent": PrincipalConfig(
            kind=PrincipalKind.AGENT,
            display_name="Bench agent",
            on_behalf_of="owner",
            api_key_sha256=[hash_key(API_KEY)],
        ),
    }
    built = Authenticator(principals, auth=AuthConfig(oauth=oauth), jwt_secret=None)

    async def keys(url: str) -> Any:
        return {"keys": [key.as_dict(private=False) for key in server.keys]}

    assert built.oauth is not None
    built.oauth._key_sets[ISSUER]._fetch = keys  # the keys from memory, not over HTTP
    return built


def access_token(server: AuthorizationServer, n: int = 0) -> str:
    """An access token as the authorization server issues one for the gateway."""
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "sub": "bench-client",
        "client_id": "bench-client",
        "aud": RESOURCE,
        "iat": now,
        "exp": now + 3600,
        "jti": f"bench-{n}",
        "scope": "gatehouse:read gatehouse:write",
    }
    return server.sign(claims)


async def timed(auth: Authenticator, headers: list[str]) -> list[float]:
    """Microseconds per `verify` call, one sample per header."""
    samples = []
    for header in headers:
        start = time.perf_counter()
        await auth.verify(header)
        samples.append((time.perf_counter() - start) * 1e6)
    return samples


async def main(calls: int, rounds: int) -> int:
    server = AuthorizationServer(clients={}, base_url="https://auth.example.com")
    auth = authenticator(server)
    bearer = f"Bearer {access_token(server)}"
    principal = await auth.verify(bearer)  # fetches the keys once
    assert (principal.id, principal.credential) == ("bench-agent", "oauth")
    first: list[float] = []
    again: list[float] = []
    api_key: list[float] = []
    for r in range(rounds):  # interleaved, so noise lands on all alike
        fresh = [f"Bearer {access_token(server, r * calls + n)}" for n in range(calls)]
        first += await timed(auth, fresh)
        again += await timed(auth, [bearer] * calls)
        api_key += await timed(auth, [f"Bearer {API_KEY}"] * calls)
    report("a token's first call (signature checked)", first)
    report("its later calls (verified token remembered)", again)
    report("an API key, for comparison", api_key)
    median = statistics.median(first)
    verdict = "met" if median < TARGET_US else "MISSED"
    print(f"target: a token's first call under {TARGET_US:.0f} us -> {verdict}")
    return 0 if median < TARGET_US else 1


def report(what: str, samples: list[float]) -> None:
    """One line: median and p95 in microseconds."""
    p95 = statistics.quantiles(samples, n=20)[-1]
    print(f"{what}: median {statistics.median(samples):.1f} us, p95 {p95:.1f} us")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    sys.exit(asyncio.run(main(args.calls, args.rounds)))
