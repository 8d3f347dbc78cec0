"""The deferred-job service: accept, read, cancel and render jobs; the pure deadline arithmetic (timing.py).

Used by the HTTP routes, `delivery/` (the door and the webhook sender) and `worker/`; it imports only the store,
the provider protocols and plain values, never a route, the worker or the Runtime.
"""
