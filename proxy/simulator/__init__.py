"""The simulated upstream: an OpenAI-shaped fake provider (chat, flex, files, batches, ledger)."""
