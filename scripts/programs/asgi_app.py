"""A tiny ASGI app for scripts/programs.sh (the uvicorn recipe in docs/programs.md).

Answers `gen=3 pid=12345` with an `X-Generation` header, like wsgi_app.py; the generation is
TABLEROLL_GENERATION, which `tableroll run` sets.
"""

import os

GENERATION = os.environ.get("TABLEROLL_GENERATION", "?")


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    body = "gen={} pid={}\n".format(GENERATION, os.getpid()).encode()
    await send({
        "type": "http.response.start",
        "status": 200,
        "headers": [
            (b"content-type", b"text/plain"),
            (b"content-length", str(len(body)).encode()),
            (b"x-generation", GENERATION.encode()),
        ],
    })
    await send({"type": "http.response.body", "body": body})
