"""The query surface's limits and posture: aliases, tokens, mutation fields per document,
introspection and suggestions; each refusal names its limit, before any source is called."""

from __future__ import annotations

import time

from gateway.app import start
from gateway.config import GatewayConfig, GraphQLConfig
from gateway.services import Services
from tests.factories import run_query, services_for, source_calls

ADJUST = (
    'adjustInventory(input: {sku: "SKU-0003", location: "WH-MAD", delta: 1, '
    'reason: "cycle count"}, dryRun: true) { status }'
)


def _refusal(result: object, limit: str) -> str:
    errors = getattr(result, "errors", None)
    assert getattr(result, "data", None) is None
    assert errors is not None
    (error,) = errors
    assert error.extensions == {"code": "QUERY_REJECTED", "limit": limit}
    assert limit in error.message
    return str(error.message)


def _balances(count: int) -> str:
    return " ".join(
        f'b{i}: balance(customerId: "C-{i % 5 + 1:05d}") {{ customerId }}' for i in range(count)
    )


async def test_aliases_over_the_limit_are_refused_before_any_source_call(
    services: Services,
) -> None:
    over = services.config.limits.max_aliases + 1
    before = source_calls(services)
    result = await run_query(services, f"{{ {_balances(over)} }}")
    assert f"{over} aliases" in _refusal(result, "max_aliases")
    assert source_calls(services) == before


async def test_a_thousand_aliased_balances_run_nothing(services: Services) -> None:
    before = source_calls(services)
    result = await run_query(services, f"{{ {_balances(1000)} }}")
    # so long a document is stopped by the parser, before the aliases are counted
    _refusal(result, "max_tokens")
    assert source_calls(services) == before


def _typenames(count: int) -> str:
    return "{ " + " ".join(f"t{i}: __typename" for i in range(count)) + " }"


async def test_aliased_typenames_over_the_limit_are_refused(services: Services) -> None:
    limit = services.config.limits.max_aliases
    result = await run_query(services, _typenames(1000))
    _refusal(result, "max_aliases")
    within = await run_query(services, _typenames(limit))
    assert within.errors is None
    assert within.data is not None
    assert len(within.data) == limit


async def test_aliases_inside_fragments_count(services: Services) -> None:
    fragment = " ".join(f"t{i}: __typename" for i in range(20))
    result = await run_query(
        services, f"{{ ...A me {{ ...A }} }} fragment A on Query {{ {fragment} }}"
    )
    # the spread inside `me` does not match its type, but the count comes first
    assert result.errors is not None
    assert any((e.extensions or {}).get("limit") == "max_aliases" for e in result.errors)


async def test_tokens_over_the_limit_are_refused_at_the_cost_of_the_limit(
    services: Services,
) -> None:
    tokens = services.config.limits.max_tokens
    before = source_calls(services)
    result = await run_query(services, _typenames_plain(tokens * 20))
    assert f"more than {tokens} tokens" in _refusal(result, "max_tokens")
    assert source_calls(services) == before
    # The parser stops at the limit: twenty times the tokens cost about what one over does.
    just_over = await _fastest(services, _typenames_plain(tokens + 1))
    twenty_times = await _fastest(services, _typenames_plain(tokens * 20))
    assert twenty_times < 2 * just_over + 0.05


def _typenames_plain(count: int) -> str:
    return "{ " + "__typename " * count + "}"


async def _fastest(services: Services, document: str) -> float:
    timings = []
    for _ in range(3):
        started = time.perf_counter()
        await run_query(services, document)
        timings.append(time.perf_counter() - started)
    return min(timings)


async def test_comments_count_as_tokens(services: Services) -> None:
    tokens = services.config.limits.max_tokens
    result = await run_query(services, "{ __typename }" + "\n#" * (tokens + 1))
    _refusal(result, "max_tokens")


async def test_two_aliased_mutations_in_one_document_run_neither(services: Services) -> None:
    result = await run_query(services, f"mutation {{ a: {ADJUST} b: {ADJUST} }}")
    assert "2 mutation fields" in _refusal(result, "max_mutations")


async def test_one_mutation_runs(services: Services) -> None:
    result = await run_query(services, f"mutation {{ {ADJUST} }}")
    assert result.errors is None
    assert result.data == {"adjustInventory": {"status": "DRY_RUN"}}


async def test_more_mutations_run_where_the_configuration_allows(
    config: GatewayConfig, database_url: str
) -> None:
    limits = config.limits.model_copy(update={"max_mutations": 2})
    services = services_for(config.model_copy(update={"limits": limits}), database_url)
    try:
        await start(services)
        result = await run_query(services, f"mutation {{ a: {ADJUST} b: {ADJUST} }}")
        assert result.errors is None
        assert result.data is not None
        assert set(result.data) == {"a", "b"}
    finally:
        await services.close()


async def _production(config: GatewayConfig, database_url: str) -> Services:
    services = services_for(config.model_copy(update={"graphql": GraphQLConfig()}), database_url)
    await start(services)
    return services


async def test_introspection_is_refused_by_default(
    config: GatewayConfig, database_url: str
) -> None:
    services = await _production(config, database_url)
    try:
        for document in ("{ __schema { types { name } } }", '{ __type(name: "Query") { name } }'):
            result = await run_query(services, document)
            assert result.data is None
            assert result.errors is not None
            (error,) = result.errors
            assert error.extensions == {"code": "INTROSPECTION_DISABLED"}
        typename = await run_query(services, "{ __typename }")
        assert typename.data == {"__typename": "Query"}
    finally:
        await services.close()


async def test_suggestions_are_left_out_by_default(
    config: GatewayConfig, database_url: str
) -> None:
    services = await _production(config, database_url)
    try:
        for document in (
            '{ custmer(id: "C-00001") { id } }',  # a field
            '{ customer(idd: "C-00001") { id } }',  # an argument
            "{ actions(status: PENDNG_APPROVAL) { edges { cursor } } }",  # an enum value
        ):
            result = await run_query(services, document)
            assert result.errors is not None, document
            messages = " ".join(error.message for error in result.errors)
            assert "Did you mean" not in messages, document
    finally:
        await services.close()


async def test_introspection_and_suggestions_where_the_configuration_allows(
    services: Services,
) -> None:
    assert services.config.graphql.introspection  # the demo turns them on
    schema = await run_query(services, "{ __schema { queryType { name } } }")
    assert schema.data == {"__schema": {"queryType": {"name": "Query"}}}
    typo = await run_query(services, '{ custmer(id: "C-00001") { id } }')
    assert typo.errors is not None
    assert "Did you mean 'customer'" in typo.errors[0].message


NESTED_PAGES = "{ customers%s { edges { node { orders%s { edges { node { id } } } } } } }"


async def test_pages_asked_without_a_size_cost_the_default_page_size(
    config: GatewayConfig, database_url: str
) -> None:
    # 20 customers, each with 20 orders: what the pages return when `first` is left out.
    limits = config.limits.model_copy(update={"max_complexity": 300})
    services = services_for(config.model_copy(update={"limits": limits}), database_url)
    try:
        await start(services)
        unsized = await run_query(services, NESTED_PAGES % ("", ""))
        assert "max_complexity" in _refusal(unsized, "max_complexity")
        assert source_calls(services) == 0
        # The same through a fragment on the connection's type: the walk follows the types.
        spread = (
            "{ customers { ...page } } fragment page on CustomerConnection "
            "{ edges { node { orders { edges { node { id } } } } } }"
        )
        _refusal(await run_query(services, spread), "max_complexity")
        sized = await run_query(services, NESTED_PAGES % ("(first: 2)", "(first: 2)"))
        assert sized.errors is None
    finally:
        await services.close()
