/**
 * The HTTP Upgrade that turns a TCP connection to the relay into a tunnel
 * carrier: `GET /.well-known/reverprox/tunnel` with `Upgrade: reverprox`,
 * answered `101`. Plain HTTP on purpose, so it passes wherever a WebSocket
 * would, the relay's public port and TLS proxies included; TLS starts right
 * after it (`tcp.ts`). Optionally through an HTTP `CONNECT` proxy first, and
 * inside TLS to a public HTTPS port (`secure`).
 *
 * @example
 * ```ts
 * const socket = await openUpgradedSocket({ hostname: "127.0.0.1", port: 4433 });
 * ```
 * @module
 */
import { connect, type Socket } from "node:net";
import { connect as tlsConnect } from "node:tls";
import { Buffer } from "node:buffer";
import type { Duplex } from "node:stream";

/** Where the relay takes tunnel upgrades, on its QUIC port's TCP twin and its public port. */
export const TUNNEL_PATH = "/.well-known/reverprox/tunnel";
/** The `Upgrade` protocol token. */
export const TUNNEL_UPGRADE = "reverprox";
/** Longest response head read before the peer counts as not speaking HTTP. */
const MAX_HEAD_BYTES = 16 * 1024;

/** An HTTP proxy that takes `CONNECT`. */
export interface ProxyRoute {
  hostname: string;
  port: number;
  /** `Proxy-Authorization` value, from credentials in the proxy URL. */
  authorization?: string;
}

/** A TCP connection to `hostname:port` (through `proxy` if given), upgraded; bytes read past the 101 are put back. */
export async function openUpgradedSocket(
  target: { hostname: string; port: number; proxy?: ProxyRoute; secure?: boolean },
): Promise<Socket> {
  const authority = target.hostname.includes(":")
    ? `[${target.hostname}]:${target.port}`
    : `${target.hostname}:${target.port}`;
  const tcp = target.proxy
    ? await throughProxy(target.proxy, authority)
    : await openSocket(target.hostname, target.port, `relay ${authority}`);
  const socket = target.secure ? await outerTls(tcp, target.hostname, authority) : tcp;
  socket.write(
    `GET ${TUNNEL_PATH} HTTP/1.1\r\nHost: ${authority}\r\nConnection: Upgrade\r\nUpgrade: ${TUNNEL_UPGRADE}\r\n\r\n`,
  );
  const status = await readHead(socket, `relay ${authority}`);
  if (status.code !== 101) {
    socket.destroy();
    throw new Error(
      `relay ${authority} refused the TCP tunnel: ${status.line} (a relay older than the TCP transport, or not a relay)`,
    );
  }
  return socket;
}

/**
 * TLS to a public HTTPS port (the relay's, or a proxy's in front of it), trusted like any website (or `ca`):
 * the relay's own TLS runs inside the upgraded connection all the same; long-polling's requests go over it.
 */
export function outerTls(
  socket: Socket,
  hostname: string,
  authority: string,
  ca?: string[],
): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const secured = tlsConnect({ socket, servername: hostname, ca });
    secured.once("secureConnect", () => (secured.off("error", reject), resolve(secured)));
    secured.once("error", (error) => reject(new Error(`TLS to ${authority} failed: ${error.message}`)));
  });
}

/** A TCP connection to `authority` through the HTTP `CONNECT` proxy `proxy`, answered 200. */
export async function throughProxy(proxy: ProxyRoute, authority: string): Promise<Socket> {
  const label = `proxy ${proxy.hostname}:${proxy.port}`;
  const socket = await openSocket(proxy.hostname, proxy.port, label);
  const auth = proxy.authorization ? `Proxy-Authorization: ${proxy.authorization}\r\n` : "";
  socket.write(`CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n${auth}\r\n`);
  const status = await readHead(socket, label);
  if (status.code !== 200) {
    socket.destroy();
    throw new Error(`${label} refused to connect to ${authority}: ${status.line}`);
  }
  return socket;
}

function openSocket(hostname: string, port: number, label: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    // The multiplexer writes whole frames; Nagle would hold a small one (an ack) for the peer's delayed ACK.
    const socket = connect({ host: hostname, port }).setNoDelay(true);
    socket.once("connect", () => (socket.off("error", reject), resolve(socket)));
    socket.once("error", (error) => reject(new Error(`cannot reach ${label}: ${error.message}`)));
  });
}

/** Reads an HTTP response head; what came after it is unshifted so the next reader sees it. */
function readHead(socket: Socket, label: string): Promise<{ code: number; line: string }> {
  return new Promise((resolve, reject) => {
    let received = Buffer.alloc(0);
    const fail = (message: string) => (stop(), socket.destroy(), reject(new Error(`${label}: ${message}`)));
    const onData = (data: Buffer) => {
      received = Buffer.concat([received, data]);
      const end = received.indexOf("\r\n\r\n");
      if (end === -1) return received.length > MAX_HEAD_BYTES ? fail("response head too large") : undefined;
      stop();
      socket.pause();
      if (received.length > end + 4) socket.unshift(received.subarray(end + 4));
      const line = received.subarray(0, received.indexOf("\r\n")).toString("latin1");
      const code = Number(/^HTTP\/1\.[01] (\d{3})/.exec(line)?.[1] ?? 0);
      resolve({ code, line });
    };
    const onError = (error: Error) => fail(error.message);
    const onClose = () => fail("closed the connection before answering");
    const stop =
      () => (socket.off("data", onData), socket.off("error", onError), socket.off("close", onClose));
    socket.on("data", onData);
    socket.on("error", onError);
    socket.on("close", onClose);
    // A head read before (the proxy's) left the socket paused, which a new `data` listener does not undo.
    socket.resume();
  });
}

/** The relay's answer to a tunnel upgrade; `head` (bytes the client sent past its request) is put back. */
export function answerUpgrade(socket: Duplex, head: Uint8Array): void {
  // As on the dialing side (`openSocket`): no Nagle under the multiplexer.
  (socket as Partial<Socket>).setNoDelay?.(true);
  socket.write(
    `HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: ${TUNNEL_UPGRADE}\r\n\r\n`,
  );
  if (head.length) socket.unshift(head);
}

/** Whether a request head asks for the tunnel upgrade. */
export function wantsTunnel(
  request: { url?: string; headers: Record<string, string | string[] | undefined> },
): boolean {
  const upgrade = request.headers.upgrade;
  return request.url === TUNNEL_PATH && typeof upgrade === "string" &&
    upgrade.toLowerCase() === TUNNEL_UPGRADE;
}
