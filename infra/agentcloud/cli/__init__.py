"""The `agentcloud` command: thin; it parses, calls the modules that do the work, and prints."""

from agentcloud.cli.main import main

__all__ = ["main"]
