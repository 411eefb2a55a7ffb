"""The GraphQL front door: typed context, entity types, queries and extensions."""
