// A tiny Node.js HTTP server for scripts/programs.sh (the node recipes in docs/programs.md).
//
// Systemd socket activation by hand: it serves on every descriptor from 3 to 3 + LISTEN_FDS - 1
// (`tableroll run` passes the shared HTTP listener and the instance's private health socket)
// and answers `gen=3 pid=12345` with an `X-Generation` header, the generation being
// TABLEROLL_GENERATION, which `tableroll run` sets.
//
// On SIGTERM it stops accepting and exits once every connection has ended:
//   - by default, connections stay open: a request on a kept-alive connection is still
//     answered, with `Connection: close`, and an idle one ends at keepAliveTimeout (5 s);
//   - with --close-idle, it calls server.close() as most Node.js servers do, which since
//     Node.js 19 also closes every idle kept-alive connection at once: a client whose next
//     request is already on its way sees the connection close without an answer.
'use strict';
const http = require('http');
const net = require('net');

const closeIdle = process.argv.includes('--close-idle');
const generation = process.env.TABLEROLL_GENERATION || '?';
const count = process.env.LISTEN_PID === String(process.pid) ? Number(process.env.LISTEN_FDS) : 0;
if (!(count > 0)) {
  console.error('server.js: no sockets passed (LISTEN_FDS, LISTEN_PID)');
  process.exit(1);
}

let draining = false;

function answer(req, res) {
  const body = `gen=${generation} pid=${process.pid}\n`;
  const headers = {
    'Content-Type': 'text/plain',
    'Content-Length': Buffer.byteLength(body),
    'X-Generation': generation,
  };
  if (draining) {
    headers.Connection = 'close'; // Node.js closes the connection after this response
  }
  res.writeHead(200, headers);
  res.end(body);
}

const servers = [];
for (let fd = 3; fd < 3 + count; fd++) {
  servers.push(http.createServer(answer).listen({ fd }));
}

process.on('SIGTERM', () => {
  draining = true;
  for (const server of servers) {
    if (closeIdle) {
      server.close();
    } else {
      // net.Server's close: stops accepting, leaves the open connections alone.
      net.Server.prototype.close.call(server);
    }
  }
});
