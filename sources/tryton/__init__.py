"""Tryton, an open-source ERP, reached over its JSON-RPC (`rpc.py`)."""

from sources.tryton.rpc import TrytonRpc

__all__ = ["TrytonRpc"]
