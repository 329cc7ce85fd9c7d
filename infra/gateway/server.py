"""Run a gateway process with uvicorn (uvloop event loop, httptools parser)."""

from __future__ import annotations

import logging
from typing import Any


def serve(app: Any, host: str, port: int) -> None:
    import uvicorn

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvicorn.run(
        app,
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        proxy_headers=False,
        log_level="warning",
        timeout_keep_alive=75,
        backlog=4096,
    )
