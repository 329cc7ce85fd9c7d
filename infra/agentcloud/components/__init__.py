"""Pulumi ComponentResources: they only wire planned values into DigitalOcean resources."""
