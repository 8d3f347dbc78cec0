"""Durable state in Redis: every key in `keys.py`, the job store, batches, leases."""
