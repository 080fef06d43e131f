"""The tools ivr ships: appointment bookings and read-only lookups on the project database,
each acting for the verified caller only (`ivr.tools.phone.own_number`).

`availability` (hours, free times: anyone may ask), `bookings` (book, cancel, reschedule,
find), `lookups` (orders, the account). They build on `ivr.tools.base` and
`ivr.tools.phone`; `ivr.tools.registry.default_registry` registers them.
"""
