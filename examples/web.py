"""A tiny HTTP server for the examples: answers GET / with $GREETING on 127.0.0.1:$PORT."""

from __future__ import annotations

import asyncio
import os
import signal


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    request = await reader.readline()
    while (await reader.readline()).strip():
        pass  # skip the headers
    body = (os.environ.get("GREETING", "hello") + "\n").encode()
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    await writer.drain()
    writer.close()
    print(f"served {request.decode().split(' ')[1] if request else '?'}", flush=True)


async def main() -> None:
    port = int(os.environ.get("PORT", "8000"))
    server = await asyncio.start_server(handle, "127.0.0.1", port)
    print(f"listening on http://127.0.0.1:{server.sockets[0].getsockname()[1]}/", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    print("web: SIGTERM, closing", flush=True)
    server.close()
    await server.wait_closed()


if __name__ == "__main__":
    asyncio.run(main())
