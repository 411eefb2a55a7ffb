"""Gatehouse: one governed GraphQL and MCP gateway over the systems of record."""
