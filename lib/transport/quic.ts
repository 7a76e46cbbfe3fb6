/**
 * The QUIC transport, on Deno's built-in QUIC (`--unstable-net`): the only
 * code that touches `Deno.Quic*`. The relay binds a {@link QuicServer} and
 * listens; the agent dials with {@link dialQuic}, trusting only the relay's CA.
 *
 * Facts it relies on (see DESIGN.md): Deno's QUIC trusts only `caCerts`; a
 * `QuicIncoming` must not have its address read before `accept()`; every
 * connection must be closed, and its `closed` awaited, before its endpoint is
 * closed, or the peer waits for its idle timeout.
 *
 * @example
 * ```ts
 * import { ALPN } from "../wire/protocol.ts";
 * declare const certChain: string, key: string, caCert: string; // PEM: leaf then CA, the leaf's key, the CA
 * const server = QuicServer.bind("127.0.0.1", 0);
 * const timeouts = { keepAliveMs: 5_000, idleTimeoutMs: 15_000 };
 * const listener = server.listen({ certChain, key, alpn: [ALPN], ...timeouts, maxIncomingStreams: 1 });
 * const relay = { hostname: "127.0.0.1", port: server.port, serverName: "localhost" };
 * const conn = await dialQuic({ ...relay, caCert, alpn: ALPN, timeoutMs: 3_000 });
 * ```
 * @module
 */
import { CloseCode } from "../wire/protocol.ts";
import { withTimeout } from "../shared/async.ts";
import { getLogger } from "../shared/log.ts";
import type { CloseInfo, TunnelConnection, TunnelListener, TunnelStream } from "./types.ts";

const log = getLogger(["reverprox", "quic"]);

/** Streams the relay may open on one agent connection at once (Deno's default is 100). */
const MAX_RELAY_STREAMS = 10_000;

/** A `Deno.QuicConn` behind the transport seam. */
class QuicConnection implements TunnelConnection {
  readonly transport = "quic";
  readonly peer: { hostname: string; port: number };
  readonly alpn: string | undefined;
  readonly incomingStreams: ReadableStream<TunnelStream>;
  readonly closed: Promise<CloseInfo>;

  constructor(private readonly conn: Deno.QuicConn) {
    this.peer = { hostname: conn.remoteAddr.hostname, port: conn.remoteAddr.port };
    this.alpn = conn.protocol;
    this.closed = conn.closed.then(
      (info) => ({ code: info.closeCode, reason: info.reason }),
      (error) => ({ code: CloseCode.lost, reason: error instanceof Error ? error.message : String(error) }),
    );
    const incoming = conn.incomingBidirectionalStreams.getReader();
    this.incomingStreams = new ReadableStream<TunnelStream>({
      async pull(controller) {
        // The connection's end shows here as a rejected read: for our readers, the streams simply end.
        const next = await incoming.read().catch(() => ({ done: true as const, value: undefined }));
        if (next.done) controller.close();
        else controller.enqueue(next.value);
      },
      // Fails only once the connection is gone, when there is nothing left to stop.
      cancel: () => incoming.cancel().catch(() => {}),
    }, { highWaterMark: 0 });
  }

  async openStream(): Promise<TunnelStream | null> {
    try {
      return await this.conn.createBidirectionalStream({ waitUntilAvailable: true });
    } catch {
      // The connection is closing or closed: the caller answers as for a tunnel gone offline.
      return null;
    }
  }

  close(info: CloseInfo): void {
    try {
      this.conn.close({ closeCode: info.code, reason: info.reason });
    } catch {
      // Closed already, by us or the peer: `closed` has the first reason.
    }
  }
}

export interface QuicListenOptions {
  /** PEM: the leaf certificate, then its CA. */
  certChain: string;
  key: string;
  /** ALPN ids accepted, the current one first; the connection tells which was agreed. */
  alpn: string[];
  keepAliveMs: number;
  idleTimeoutMs: number;
  /** Streams an agent may open (its control stream). */
  maxIncomingStreams: number;
}

/** The relay's UDP endpoint. */
export class QuicServer {
  private constructor(private readonly endpoint: Deno.QuicEndpoint) {}

  /** Binds `hostname:port` (UDP); port 0 picks a free one. */
  static bind(hostname: string, port: number): QuicServer {
    return new QuicServer(new Deno.QuicEndpoint({ hostname, port }));
  }

  get port(): number {
    return this.endpoint.addr.port;
  }

  /** Accepts agents' connections; a failed handshake is logged and skipped. */
  listen(options: QuicListenOptions): TunnelListener {
    const listener = this.endpoint.listen({
      alpnProtocols: options.alpn,
      cert: options.certChain,
      key: options.key,
      keepAliveInterval: options.keepAliveMs,
      maxIdleTimeout: options.idleTimeoutMs,
      maxConcurrentBidirectionalStreams: options.maxIncomingStreams,
      maxConcurrentUnidirectionalStreams: 0,
    });
    const accepted = new ReadableStream<TunnelConnection>({
      async start(controller) {
        try {
          // Handshakes run side by side: one slow peer must not hold up the others.
          for await (const incoming of listener) {
            accept(incoming).then((conn) => conn && controller.enqueue(conn));
          }
        } catch (error) {
          log.debug("QUIC listener ended: {error}", { error: String(error) });
        }
        controller.close();
      },
    });
    return {
      [Symbol.asyncIterator]: () => accepted.values(),
      stop: () => listener.stop(),
    };
  }

  /** Closes the endpoint; close every connection (and await `closed`) first. */
  close(): void {
    this.endpoint.close();
  }
}

async function accept(incoming: Deno.QuicIncoming): Promise<TunnelConnection | undefined> {
  try {
    return new QuicConnection(await incoming.accept());
  } catch (error) {
    log.info("QUIC handshake failed: {error}", { error: String(error) });
    return undefined;
  }
}

export interface QuicDialOptions {
  hostname: string;
  port: number;
  /** The name the relay's certificate is for. */
  serverName: string;
  /** PEM of the only CA trusted for this connection. */
  caCert: string;
  alpn: string;
  /** Longest the handshake may take. */
  timeoutMs: number;
}

/** Connects to a relay on its own endpoint, which is closed once the connection is. */
export async function dialQuic(options: QuicDialOptions): Promise<TunnelConnection> {
  const endpoint = new Deno.QuicEndpoint();
  try {
    const conn = await withTimeout(
      Deno.connectQuic({
        hostname: options.hostname,
        port: options.port,
        serverName: options.serverName,
        alpnProtocols: [options.alpn],
        caCerts: [options.caCert],
        endpoint,
        maxConcurrentBidirectionalStreams: MAX_RELAY_STREAMS,
        zeroRtt: false,
      }),
      options.timeoutMs,
      "QUIC handshake",
    );
    const connection = new QuicConnection(conn);
    connection.closed.then(() => endpoint.close());
    return connection;
  } catch (error) {
    endpoint.close();
    throw error;
  }
}
