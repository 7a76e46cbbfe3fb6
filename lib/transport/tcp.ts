/**
 * The TCP transport, for networks that block UDP: one TCP connection to the
 * relay, turned into a tunnel by an HTTP Upgrade (`upgrade.ts`, so it also
 * passes the relay's public HTTP(S) port and a TLS proxy in front of it),
 * then TLS with the relay's own certificate and the same trust as QUIC (only
 * the relay's CA, the protocol's ALPN), then many streams over it (`mux.ts`).
 *
 * @example
 * ```ts
 * import { ALPN } from "../wire/protocol.ts";
 * declare const caCert: string;
 * const conn = await dialTcp({
 *   hostname: "127.0.0.1", port: 4433, serverName: "localhost", caCert, alpn: ALPN, timeoutMs: 5_000,
 * });
 * ```
 * @module
 */
import { connect as tlsConnect, type TLSSocket } from "node:tls";
import { TLSSocket as ServerTlsSocket } from "node:tls";
import { Duplex } from "node:stream";
import { Socket } from "node:net";
import { withTimeout } from "../shared/async.ts";
import { MuxConnection } from "./mux.ts";
import { openUpgradedSocket, type ProxyRoute } from "./upgrade.ts";
import type { TunnelConnection } from "./types.ts";
import type { QuicDialOptions } from "./quic.ts";

/** Where and how to dial, as for QUIC; `timeoutMs` covers the connection, upgrade and TLS handshake. */
export interface TcpDialOptions extends QuicDialOptions {
  /** An HTTP CONNECT proxy to go through (`proxy.ts`). */
  proxy?: ProxyRoute;
  /** The port is a public HTTPS one: TLS to it first, trusted like a website (`upgrade.ts`). */
  secure?: boolean;
}

/** Connects to a relay over TCP: upgrade, TLS trusting only `caCert`, then the multiplexer. */
export function dialTcp(options: TcpDialOptions): Promise<TunnelConnection> {
  let socket: Duplex | undefined;
  // Named in a timeout, so a hang says where it was.
  let stage = "connection and upgrade";
  const dial = async () => {
    socket = await openUpgradedSocket(options);
    stage = "TLS handshake";
    return await tunnelOver(socket, { ...options, transport: "tcp" });
  };
  return withTimeout(dial(), options.timeoutMs, () => `TCP ${stage}`).catch((error) => {
    socket?.destroy();
    throw error;
  });
}

/**
 * What TLS runs over: a native socket behind a plain JavaScript `Duplex`, other streams as they are. Given
 * a native socket, Deno's node:tls upgrades its TCP handle in place, which sometimes loses the first bytes
 * after a socket was read from (the upgrade's head): both handshakes then wait until they time out (seen
 * under load; denoland/deno#33344 is the same family). Over a JS stream it runs as over the long-polling
 * carrier, which has never lost one.
 */
function tlsCarrier(socket: Duplex): Duplex {
  if (!(socket instanceof Socket)) return socket;
  const stream = new Duplex({
    read: () => void socket.resume(),
    write: (chunk, _encoding, done) => void socket.write(chunk, done),
    final: (done) => void socket.end(done),
    destroy: (error, done) => (socket.destroy(error ?? undefined), done(error)),
  });
  socket.on("data", (chunk) => stream.push(chunk) || socket.pause());
  socket.on("end", () => stream.push(null));
  socket.on("error", (error) => stream.destroy(error));
  socket.on("close", () => stream.destroy());
  return stream;
}

/**
 * The dialer's TLS and multiplexer over any byte stream to the relay: an upgraded TCP socket, or the
 * long-polling carrier (`longpoll_client.ts`, `transport` "http").
 */
export async function tunnelOver(
  socket: Duplex,
  options: Pick<TcpDialOptions, "hostname" | "port" | "serverName" | "caCert" | "alpn"> & {
    transport: string;
  },
): Promise<TunnelConnection> {
  const secured = await secure(socket, options);
  return new MuxConnection(secured, {
    role: "dialer",
    transport: options.transport,
    peer: { hostname: options.hostname, port: options.port },
    alpn: secured.alpnProtocol || undefined,
  });
}

function secure(
  socket: Duplex,
  options: Pick<TcpDialOptions, "serverName" | "caCert" | "alpn">,
): Promise<TLSSocket> {
  return new Promise((resolve, reject) => {
    const secured = tlsConnect({
      socket: tlsCarrier(socket),
      servername: options.serverName,
      ca: [options.caCert],
      ALPNProtocols: [options.alpn],
    });
    secured.once("secureConnect", () => resolve(secured));
    secured.once("error", reject);
  });
}

/** The relay's side of an upgraded connection: its TLS handshake, with the relay's certificate. */
export function acceptTcp(
  socket: Duplex,
  options: {
    certChain: string;
    key: string;
    alpn: string[];
    handshakeTimeoutMs: number;
    /** What carries it: "tcp" by default, "http" for a long-polling carrier. */
    transport?: string;
    /** The client's address, where `socket` is not a socket that knows it (a long-polling carrier). */
    peer?: { hostname: string; port: number };
  },
): Promise<TunnelConnection> {
  const secured = new ServerTlsSocket(tlsCarrier(socket) as Socket, {
    isServer: true,
    cert: options.certChain,
    key: options.key,
    ALPNProtocols: options.alpn,
  });
  const remote = socket as Partial<Socket>;
  const handshake = new Promise<TunnelConnection>((resolve, reject) => {
    secured.once("secure", () =>
      resolve(
        new MuxConnection(secured, {
          role: "acceptor",
          transport: options.transport ?? "tcp",
          peer: options.peer ?? { hostname: remote.remoteAddress ?? "unknown", port: remote.remotePort ?? 0 },
          alpn: secured.alpnProtocol || undefined,
        }),
      ));
    secured.once("error", reject);
  });
  return withTimeout(handshake, options.handshakeTimeoutMs, "TLS handshake").catch((error) => {
    secured.destroy();
    socket.destroy();
    throw error;
  });
}
