/**
 * A small HTTP CONNECT proxy on loopback, as a corporate proxy would be:
 * it tunnels `CONNECT host:port` to the target and records each one; with
 * `refuse`, it answers 403 instead.
 * @module
 */
import { createServer, type IncomingMessage } from "node:http";
import { connect, type Socket } from "node:net";
import type { Duplex } from "node:stream";
import type { AddressInfo } from "node:net";

export interface ConnectProxy extends AsyncDisposable {
  url: string;
  /** The `host:port` of each CONNECT it was asked for. */
  connects: string[];
}

/** Starts the proxy on a free loopback port. */
export function startConnectProxy(options: { refuse?: boolean } = {}): Promise<ConnectProxy> {
  const connects: string[] = [];
  const sockets = new Set<Duplex>();
  const server = createServer((_request, response) => response.writeHead(405).end("CONNECT only\n"));
  server.on("connect", (request: IncomingMessage, client: Socket, head: Buffer) => {
    connects.push(request.url ?? "");
    sockets.add(client);
    client.on("error", () => client.destroy());
    if (options.refuse) return client.end("HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n");
    const [host, port] = (request.url ?? "").split(/:(?=\d+$)/);
    const upstream = connect({ host: host.replace(/^\[(.*)\]$/, "$1"), port: Number(port) }, () => {
      client.write("HTTP/1.1 200 Connection Established\r\n\r\n");
      if (head.length) upstream.write(head);
      upstream.pipe(client).pipe(upstream);
    });
    sockets.add(upstream);
    upstream.on("error", () => client.destroy());
    upstream.on("close", () => client.destroy());
  });
  return new Promise((resolve) => {
    server.listen(0, "127.0.0.1", () => {
      resolve({
        url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
        connects,
        [Symbol.asyncDispose]: async () => {
          for (const socket of sockets) socket.destroy();
          await new Promise((closed) => server.close(closed));
        },
      });
    });
  });
}
