"""Policies: a YAML model and a pure decide(facts) -> Decision, with no I/O."""
