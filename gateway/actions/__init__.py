"""The gateway's record of governed actions (`store`): what was asked, decided and done.

What an action is and how it runs on a system of record is the estate's, behind the
contract in `sources.actions`; the configured ones are in `gateway.catalog`.
"""
