"""A bare ASGI app answering with the id of the process that served the request
(tests/core/test_serving.py: which worker holds which connection)."""

import os
from typing import Any

PID = str(os.getpid()).encode()


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "websocket":  # refused: uvicorn answers 403
        await receive()
        await send({"type": "websocket.close"})
        return
    if scope["type"] != "http":
        return
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-length", str(len(PID)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": PID})
