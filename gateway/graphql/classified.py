"""Which masked and audited values a response holds, worked out once it is complete.

Records are projected onto nodes once, masked fields as null (types.py). The paths of those
nulls, for `extensions.masked`, and the pii and financial fields an agent was shown, for the
audit trail, come from one walk of the response along the fields its document selected:

    1. only when the request served a record with masked or audited fields (`Context.inspect`)
    2. through fields, inline fragments and fragment spreads, honouring @skip and @include
    3. at each field of a record type: null and masked -> its path; audited -> "Entity.field"

A walk over the response rather than a resolver per field keeps the cost where it is due:
a principal granted everything, reading unclassified fields, pays nothing.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import strawberry
from graphql import (
    BooleanValueNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLObjectType,
    InlineFragmentNode,
    NamedTypeNode,
    OperationDefinitionNode,
    SelectionNode,
    SelectionSetNode,
    VariableNode,
    get_named_type,
)

from gateway.graphql.context import Context, View
from gateway.graphql.types import RecordNode, record_fields


@dataclass(frozen=True, slots=True)
class _RecordType:
    """A GraphQL type holding a record's fields: its view, and contract name by field name."""

    view: View
    fields: Mapping[str, str]


@dataclass
class _Walk:
    types: Mapping[str, GraphQLObjectType]  # the schema's object types, by name
    records: Mapping[str, _RecordType]  # those whose entity has masked or audited fields
    fragments: Mapping[str, FragmentDefinitionNode]
    variables: Mapping[str, Any]
    masked: set[str] = field(default_factory=set)
    audited: set[str] = field(default_factory=set)

    def selections(
        self, selection_set: SelectionSetNode, parent: GraphQLObjectType, data: Any, path: str
    ) -> None:
        for selection in selection_set.selections:
            if not self._included(selection):
                continue
            if isinstance(selection, FieldNode):
                self._field(selection, parent, data, path)
            elif (fragment := self._fragment(selection)) is not None and self._applies(
                fragment.type_condition, parent
            ):
                self.selections(fragment.selection_set, parent, data, path)

    def _field(self, node: FieldNode, parent: GraphQLObjectType, data: Any, path: str) -> None:
        key = node.alias.value if node.alias else node.name.value
        definition = parent.fields.get(node.name.value)
        if definition is None or key not in data:
            return  # __typename, or not in the response (an error nulled its parent)
        value, here = data[key], f"{path}.{key}" if path else key
        record = self.records.get(parent.name)
        name = None if record is None else record.fields.get(node.name.value)
        if record is not None and name is not None:
            if value is None and name in record.view.masked:
                self.masked.add(here)
            elif name in record.view.audited:
                self.audited.add(f"{record.view.entity}.{name}")
        child = get_named_type(definition.type)
        if node.selection_set is None or not isinstance(child, GraphQLObjectType):
            return  # a leaf; or an abstract type, which holds no records in this schema
        for item, item_path in _items(value, here):
            self.selections(node.selection_set, child, item, item_path)

    def _fragment(
        self, selection: SelectionNode
    ) -> InlineFragmentNode | FragmentDefinitionNode | None:
        if isinstance(selection, FragmentSpreadNode):
            return self.fragments.get(selection.name.value)
        return selection if isinstance(selection, InlineFragmentNode) else None

    def _applies(self, condition: NamedTypeNode | None, parent: GraphQLObjectType) -> bool:
        return (
            condition is None
            or condition.name.value == parent.name
            or (any(i.name == condition.name.value for i in parent.interfaces))
        )

    def _included(self, selection: SelectionNode) -> bool:
        for directive in selection.directives or ():
            skip = directive.name.value == "skip"
            if skip or directive.name.value == "include":
                # `if`, their only argument, is there: the document passed validation.
                value = next(iter(directive.arguments or ())).value
                if isinstance(value, VariableNode):
                    flag = bool(self.variables.get(value.name.value))
                else:
                    flag = isinstance(value, BooleanValueNode) and value.value
                if flag == skip:
                    return False
        return True


def _items(value: Any, path: str) -> Iterator[tuple[Any, str]]:
    """The objects in a field's value (a list's, at any depth), with their paths."""
    if isinstance(value, list):
        for index, item in enumerate(value):
            yield from _items(item, f"{path}.{index}")
    elif value is not None:
        yield value, path


def inspect_response(
    schema: strawberry.Schema,
    context: Context,
    operation: OperationDefinitionNode,
    fragments: Mapping[str, FragmentDefinitionNode],
    variables: Mapping[str, Any],
    data: Mapping[str, Any] | None,
) -> None:
    """Record in `context` the paths of masked values in `data` and the fields an agent read."""
    if not context.inspect or data is None:
        return
    graphql_schema = schema._schema  # graphql-core's schema, under Strawberry's
    root = graphql_schema.get_root_type(operation.operation)
    if root is None:
        return
    records = {
        name: _RecordType(view, fields)
        for name, (entity, fields) in _record_types(schema).items()
        if (view := context.view(entity)).inspected
    }
    defaults = {
        d.variable.name.value: d.default_value.value
        for d in operation.variable_definitions or ()
        if isinstance(d.default_value, BooleanValueNode)
    }
    walk = _Walk(graphql_schema.type_map, records, fragments, {**defaults, **variables})  # type: ignore[arg-type]
    walk.selections(operation.selection_set, root, data, "")
    context.masked.extend(sorted(walk.masked - set(context.masked)))
    context.classified_reads |= walk.audited


_RECORD_TYPES: weakref.WeakKeyDictionary[
    strawberry.Schema, dict[str, tuple[str, dict[str, str]]]
] = weakref.WeakKeyDictionary()


def _record_types(schema: strawberry.Schema) -> dict[str, tuple[str, dict[str, str]]]:
    """Per GraphQL type holding a record's fields: its entity, and by GraphQL field name the
    contract's name of each field served from the record (a schema is built once)."""
    if schema not in _RECORD_TYPES:
        found: dict[str, tuple[str, dict[str, str]]] = {}
        names = schema.config.name_converter
        for name in schema._schema.type_map:
            definition = schema.get_type_by_name(name)
            origin = getattr(definition, "origin", None)
            if isinstance(origin, type) and issubclass(origin, RecordNode):
                served = {name: contract for name, contract, _ in record_fields(origin)}
                fields = {
                    names.get_graphql_name(f): served[f.python_name]
                    for f in definition.fields  # type: ignore[union-attr]
                    if f.python_name in served
                }
                found[name] = (origin.entity, fields)
        _RECORD_TYPES[schema] = found
    return _RECORD_TYPES[schema]
