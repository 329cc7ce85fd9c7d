"""The routing gateway: one OpenAI- and Anthropic-compatible endpoint for every model.

A raw ASGI application (no framework on the hot path) run by uvicorn with uvloop and httptools; aiohttp talks to
upstreams. This package never imports pulumi or jinja.
"""
