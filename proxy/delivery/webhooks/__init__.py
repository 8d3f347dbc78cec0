"""Signed webhook deliveries: signing (Standard Webhooks), their Redis state, the HTTP sender, the worker loop."""
