"""Deployment lifecycle: the state machine, and (Automation API) stack operations behind it."""
