/**
 * The platform's limit for the HTTP benchmark: node:http reading a POST body and answering a fixed
 * JSON body the size and shape of a decision, with the standalone host's server settings. Prints
 * `listening http://127.0.0.1:PORT` once bound (loopback, port 0).
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';

const body = JSON.stringify({
  decision: 'allow',
  status: 200,
  reason: 'allowed',
  message: 'The request is allowed.',
  decisionId: '00000000-0000-4000-8000-000000000000',
  principal: { issuer: 'http://127.0.0.1/tenant/v2.0', objectId: '00000000-0000-4000-8000-000000000001', scopes: ['user_impersonation'] },
  dataActions: ['read'],
});
const headers = {
  'content-type': 'application/json; charset=utf-8',
  'cache-control': 'no-store',
  'content-length': String(Buffer.byteLength(body)),
};

const server = createServer({ requestTimeout: 30_000, headersTimeout: 10_000 }, (req, res) => {
  req.resume();
  req.on('end', () => {
    res.writeHead(200, headers);
    res.end(body);
  });
});
server.keepAliveTimeout = 65_000;
server.listen(0, '127.0.0.1', () => {
  process.stdout.write(`listening http://127.0.0.1:${(server.address() as AddressInfo).port}\n`);
});
process.on('SIGTERM', () => {
  server.close(() => process.exit(0));
  server.closeAllConnections();
});
