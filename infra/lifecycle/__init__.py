"""Stack operations for deployments through the Pulumi Automation API (the control plane's real `StackOps`)."""
