"""A tiny WSGI app for scripts/third-party-demo.sh.

Every response says which generation of the deployment answered (the APP_GENERATION
environment variable, set per `tableroll run` instance) and which gunicorn worker (its pid),
e.g. `gen=3 pid=12345`.
"""

import os

GENERATION = os.environ.get("APP_GENERATION", "?")

if os.environ.get("APP_FAIL") == "1":
    # A broken release, for trying what an upgrade to one does: the import fails, so no
    # gunicorn worker ever boots (the arbiter exits with status 3).
    raise RuntimeError("APP_FAIL=1: this release is broken")


def app(environ, start_response):
    body = "gen={} pid={}\n".format(GENERATION, os.getpid()).encode()
    start_response("200 OK", [
        ("Content-Type", "text/plain"),
        ("Content-Length", str(len(body))),
        ("X-Generation", GENERATION),
    ])
    return [body]
