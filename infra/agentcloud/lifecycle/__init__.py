"""Stack operations through the Pulumi Automation API (the control plane's `StackOps` in production)."""
