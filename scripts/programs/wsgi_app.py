"""A tiny WSGI app for scripts/programs.sh (gunicorn and uwsgi recipes in docs/programs.md).

Every response names the generation that answered and the worker's pid, `gen=3 pid=12345`,
and carries the generation in an `X-Generation` header, which the wrk script counts.
The generation is TABLEROLL_GENERATION, which `tableroll run` sets (1 for the first instance
of a group, one more for each upgrade).
"""

import os

GENERATION = os.environ.get("TABLEROLL_GENERATION", "?")


def app(environ, start_response):
    body = "gen={} pid={}\n".format(GENERATION, os.getpid()).encode()
    start_response("200 OK", [
        ("Content-Type", "text/plain"),
        ("Content-Length", str(len(body))),
        ("X-Generation", GENERATION),
    ])
    return [body]


application = app  # uwsgi's default callable name
