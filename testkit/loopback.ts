/**
 * How every server of the test tooling listens and stops: on 127.0.0.1 only (tests reach nothing
 * but loopback), on a free port unless a restart must come back on the one it had, and closed
 * together with its open keep-alive connections, so a test's `close()` never waits for an idle
 * socket to time out.
 */
import type { Server } from 'node:http';
import { createServer as createTcpServer, type AddressInfo } from 'node:net';

/** Listens on 127.0.0.1 (`port` 0: any free port) and resolves with the port, or rejects on a bind error. */
export function listenOnLoopback(server: Server, port = 0): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => {
      server.off('error', reject);
      resolve((server.address() as AddressInfo).port);
    });
  });
}

/** Stops accepting, drops the open connections and resolves once the server has closed. */
export function closeServer(server: Server): Promise<void> {
  const closed = new Promise<void>((resolve) => server.close(() => resolve()));
  server.closeAllConnections();
  return closed;
}

/**
 * A free loopback port for a server that is not ours to bind (nginx, Prometheus): bound, read and
 * released. Another process could take it in between; on a test machine none does.
 */
export function reserveLoopbackPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createTcpServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as AddressInfo;
      server.close(() => resolve(port));
    });
  });
}
