"""The tools ivr ships: appointment bookings and read-only lookups on the project database.

They import only `ivr.tools.base` and `ivr.tools.phone`; `ivr.tools.registry.default_registry`
registers them.
"""
