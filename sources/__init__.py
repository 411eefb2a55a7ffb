"""Connectors to systems of record. Stands alone: nothing here imports `gateway`."""
