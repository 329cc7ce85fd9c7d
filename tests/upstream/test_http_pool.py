"""The upstream connection pool against a real keep-alive server on 127.0.0.1: connections are reused, and
idle ones are closed after a while instead of staying open forever (issue 10)."""

from __future__ import annotations

import asyncio
import time

from agentcloud.upstream.http_client import HttpPool


async def _serve() -> tuple[asyncio.Server, list[int], int]:
    open_now: list[int] = [0]

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        open_now[0] += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    (
                        int(line.split(b":")[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length")
                    ),
                    0,
                )
                await reader.readexactly(length)
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: application/json\r\n\r\n{}"
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            open_now[0] -= 1
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, open_now, server.sockets[0].getsockname()[1]


def test_idle_connections_are_reused_then_closed() -> None:
    async def scenario() -> None:
        server, open_now, port = await _serve()
        pool = HttpPool()
        url = f"http://127.0.0.1:{port}/v1/x"
        for _ in range(3):
            response = await pool.request(url, b"{}", {})
            assert await response.read() == b"{}"
            response.release()
        assert pool.connections_opened == 1 and open_now[0] == 1, "one keep-alive connection, reused"
        assert pool.sweep() == 0, "a connection idle for less than the limit stays"
        assert pool.sweep(now=time.monotonic() + 3600) == 1
        for _ in range(50):
            if open_now[0] == 0:
                break
            await asyncio.sleep(0.01)
        assert open_now[0] == 0, "the server saw the idle connection closed"
        response = await pool.request(url, b"{}", {})
        await response.read()
        response.release()
        assert pool.connections_opened == 2
        pool.close()
        server.close()
        await server.wait_closed()

    asyncio.run(scenario())
