"""The routing gateway: one OpenAI- and Anthropic-compatible endpoint for every model.

A raw ASGI application (no framework on the hot path) run by uvicorn with uvloop and httptools; a lean
HTTP/1.1 client of its own (http_client.py) talks to upstreams. This package never imports pulumi or jinja.
"""
