"""batchgate: an OpenAI-compatible proxy that pays batch prices for calls that can wait."""
