"""A twin of DigitalOcean that runs on one machine (issue 9): its v2 API (api.py), and droplets as real hosts
in network namespaces booted from their user-data (hosts.py, with docker_shim.py standing in for the engine
images)."""
