"""A twin of DigitalOcean that runs on one machine (issue 9): its v2 API (api.py) today; droplets as real
hosts in network namespaces next."""
