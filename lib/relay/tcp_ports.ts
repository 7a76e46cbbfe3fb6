/**
 * The relay's public TCP ports: one listener per TCP tunnel, each public
 * connection sent through a new stream to the owning client, up to a cap per
 * port and within the relay's connection limits.
 *
 * @example
 * ```ts
 * import type { TunnelConnection } from "../transport/types.ts";
 * import { ConnectionLimits } from "./conn_limits.ts";
 * declare const conn: TunnelConnection; // the client that holds the port
 * const limits = new ConnectionLimits({ total: 4096, perAddress: 256 });
 * const ports = new TcpPorts({
 *   hostname: "0.0.0.0",
 *   range: { min: 20000, max: 20999 },
 *   maxConnectionsPerPort: 256,
 *   admit: (address) => limits.admit(address),
 *   route: (port, tcp) => forwardTcp(conn, String(port), tcp),
 * });
 * const [port] = ports.reserve([undefined], () => true); // a free port of the range, now listening
 * ports.close(port);
 * ```
 * @module
 */
import { encodeFrame, FrameReader } from "../wire/codec.ts";
import { ProtocolError } from "../wire/protocol.ts";
import type { TunnelConnection } from "../transport/types.ts";
import { splice } from "../bridge/tcp.ts";
import { getLogger } from "../shared/log.ts";
import { delay } from "../shared/async.ts";

const log = getLogger(["reverprox", "tcp"]);

/** Sends a public TCP connection through a new stream on `conn`. */
export async function forwardTcp(conn: TunnelConnection, tunnel: string, tcp: Deno.TcpConn): Promise<void> {
  const stream = await conn.openStream();
  if (!stream) return tcp.close();
  const writer = stream.writable.getWriter();
  const remote = tcp.remoteAddr;
  await writer.write(encodeFrame({ type: "tcp-open", tunnel, remoteAddr: remote.hostname }));
  await splice(tcp, new FrameReader(stream.readable).body(), writer);
}

/** What a public TCP port asks the relay for each new connection. */
type TcpRoute = (tcp: Deno.TcpConn) => Promise<void> | "offline";

/** How long a public port waits before accepting again after the system refused it (out of descriptors). */
const ACCEPT_RETRY_MS = 250;

interface TcpTunnelListenerOptions {
  hostname: string;
  port: number;
  /** Open connections on this port before new ones are refused. */
  maxConnections: number;
  route: TcpRoute;
  /** Counts each new connection against the relay's limits; undefined closes it at once. */
  admit: (address: string) => (() => void) | undefined;
}

/** One public TCP port: accepts connections and hands them to the owning client, up to a cap. */
class TcpTunnelListener {
  #listener: Deno.TcpListener;
  #active = new Set<Deno.TcpConn>();
  #closed = false;

  constructor(readonly options: TcpTunnelListenerOptions) {
    this.#listener = Deno.listen({ hostname: options.hostname, port: options.port });
    this.#acceptLoop();
  }

  async #acceptLoop() {
    while (!this.#closed) {
      try {
        for await (const tcp of this.#listener) this.#take(tcp);
        return;
      } catch (error) {
        // close() ends the loop this way too.
        if (this.#closed) return;
        // Out of descriptors, typically: the port must keep accepting once some are free again.
        log.warn("port {port}: accepting failed ({error}); trying again", {
          port: this.options.port,
          error: String(error),
        });
        await delay(ACCEPT_RETRY_MS);
      }
    }
  }

  #take(tcp: Deno.TcpConn) {
    const release = this.options.admit(tcp.remoteAddr.hostname);
    if (!release) return closeQuietly(tcp);
    if (this.#active.size >= this.options.maxConnections) {
      log.warn("port {port}: {max} connections open; refusing a new one", {
        port: this.options.port,
        max: this.options.maxConnections,
      });
      release();
      return closeQuietly(tcp);
    }
    const routed = this.options.route(tcp);
    if (routed === "offline") {
      release();
      return closeQuietly(tcp);
    }
    this.#active.add(tcp);
    routed.catch((error) => log.debug("tcp connection failed: {error}", { error: String(error) }))
      .finally(() => {
        this.#active.delete(tcp);
        release();
      });
  }

  /** Stops listening and drops every open connection. */
  close() {
    this.#closed = true;
    closeQuietly(this.#listener);
    for (const tcp of this.#active) closeQuietly(tcp);
    this.#active.clear();
  }
}

/** Closes `resource`, which may be closed already (by its peer, or by the other direction of a splice). */
function closeQuietly(resource: { close(): void }) {
  try {
    resource.close();
  } catch {
    // Already closed: nothing left to release.
  }
}

export interface TcpPortsOptions {
  hostname: string;
  /** Public ports TCP tunnels may use; `null` = no TCP tunnels. */
  range: { min: number; max: number } | null;
  maxConnectionsPerPort: number;
  /** Counts each new connection against the relay's limits; undefined closes it at once. */
  admit: (address: string) => (() => void) | undefined;
  /** Where a connection to `port` goes. */
  route: (port: number, tcp: Deno.TcpConn) => Promise<void> | "offline";
}

/** The relay's public TCP ports: which are bound, and which a new tunnel may take. */
export class TcpPorts {
  #listeners = new Map<number, TcpTunnelListener>();

  constructor(private readonly options: TcpPortsOptions) {}

  /**
   * Binds a public port for each requested one: the one asked for (it must be in the range and
   * `available`) or a free one from the range. Throws `port_unavailable`, leaving nothing new bound,
   * when that fails.
   */
  reserve(requested: (number | undefined)[], available: (port: number) => boolean): number[] {
    const range = this.options.range;
    if (requested.length > 0 && !range) {
      throw new ProtocolError("port_unavailable", "this relay does not offer TCP tunnels");
    }
    const bound: number[] = [];
    const fail = (message: string): never => {
      for (const port of bound) this.close(port);
      throw new ProtocolError("port_unavailable", message);
    };
    for (const want of requested) {
      const { min, max } = range!;
      if (want !== undefined && (want < min || want > max)) fail(`port ${want} is outside ${min}-${max}`);
      const candidates = want !== undefined ? [want] : shuffledRange(min, max);
      const port = candidates.find((port) => !bound.includes(port) && available(port) && this.bind(port));
      if (port === undefined) {
        fail(want !== undefined ? `port ${want} is in use` : `no free port left in ${min}-${max}`);
      }
      bound.push(port!);
    }
    return bound;
  }

  /** Makes sure a listener runs on `port`; false when the port cannot be bound. */
  bind(port: number): boolean {
    if (this.#listeners.has(port)) return true;
    try {
      this.#listeners.set(
        port,
        new TcpTunnelListener({
          hostname: this.options.hostname,
          port,
          maxConnections: this.options.maxConnectionsPerPort,
          admit: this.options.admit,
          route: (tcp) => this.options.route(port, tcp),
        }),
      );
      return true;
    } catch (error) {
      log.debug("port {port} cannot be bound: {error}", { port, error: String(error) });
      return false;
    }
  }

  /** Stops a port's listener and drops its connections. */
  close(port: number): void {
    this.#listeners.get(port)?.close();
    this.#listeners.delete(port);
  }

  closeAll(): void {
    for (const port of [...this.#listeners.keys()]) this.close(port);
  }
}

/** The ports min..max in random order, so clients do not all race for the first. */
function shuffledRange(min: number, max: number): number[] {
  const ports = Array.from({ length: max - min + 1 }, (_, i) => min + i);
  for (let i = ports.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [ports[i], ports[j]] = [ports[j], ports[i]];
  }
  return ports;
}
