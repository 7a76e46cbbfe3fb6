/**
 * The relay: accepts client connections over QUIC, registers their tunnels,
 * keeps them alive with heartbeats, and serves the public HTTP side.
 *
 * The story of one client: QUIC handshake → the client's control stream →
 * `hello` (version, token, tunnels) → `welcome` with public URLs, or `error`
 * → heartbeats both ways → `goodbye` (names freed now) or a lost connection
 * (names held for the grace period, then recycled).
 *
 * @example
 * ```ts
 * const relay = await Relay.start({ ...DEFAULT_RELAY_OPTIONS, identity });
 * console.log(relay.httpPort, relay.quicPort);
 * await relay.shutdown();
 * ```
 * @module
 */
import { encodeFrame, FrameError, FrameReader } from "./codec.ts";
import { forwardRequest } from "./http_bridge.ts";
import { forwardWebSocket } from "./websocket_bridge.ts";
import { forwardTcp, TcpTunnelListener } from "./tcp_bridge.ts";
import { isValidName } from "./names.ts";
import {
  ALPN,
  type ErrorCode,
  type Frame,
  type FrameOf,
  PROTOCOL_VERSION,
  ProtocolError,
  type TunnelGrant,
} from "./protocol.ts";
import { createPublicApp, type PublicLimits, type TunnelSession } from "./public_http.ts";
import { type AcceptWebSocket, type PublicServer, servePublic } from "./public_server.ts";
import { LoopLag } from "./fair_gate.ts";
import { TunnelRegistry } from "./registry.ts";
import { type AccessGuard, accessGuard } from "./access.ts";
import { accountApi } from "./account_api.ts";
import type { RelayIdentity } from "./cert.ts";
import { getLogger } from "./log.ts";
import { sha256Hex } from "./tokens.ts";
import { matchesPattern, type TokenRecord, type TokenStore } from "./token_store.ts";
import { TimeoutError, withTimeout } from "./async.ts";

const log = getLogger(["reverprox", "relay"]);

/** QUIC close codes the relay uses; the reason string says more. */
export const CloseCode = {
  normal: 0,
  refused: 1,
  heartbeatMissed: 2,
  replaced: 3,
  shuttingDown: 4,
  protocolError: 5,
} as const;

export interface RelayOptions extends PublicLimits {
  /** Tunnels live at `<name>.<domain>`. */
  domain: string;
  /** Address both listeners bind. */
  hostname: string;
  /** Public HTTP port; 0 picks a free one. */
  httpPort: number;
  /** QUIC (UDP) port for clients; the same TCP port serves the CA for pinning. 0 picks a free one. */
  quicPort: number;
  identity: RelayIdentity;
  /** SHA-256 hashes of tokens given by flag or file; `null` = none. */
  tokenHashes: Set<string> | null;
  /** Tokens managed with `reverprox-server token`; with neither these nor `tokenHashes`, the relay is open. */
  tokenStore?: TokenStore;
  /** Serve the sign-up API (`POST /api/register`, `/api/auth`) on the bare domain. */
  registration: boolean;
  /** How long a dropped client's names stay reserved for it. */
  graceMs: number;
  heartbeatMs: number;
  /** QUIC connections (client processes, or handshakes under way) one address may have open. */
  maxConnectionsPerIp: number;
  /** Time a new connection has to send its `hello`. */
  handshakeTimeoutMs: number;
  /** Time a visitor has to send a whole request head before 408 (slow-loris headers). */
  headerTimeoutMs: number;
  /** Longest pause in a visitor's request body before 408. */
  bodyIdleTimeoutMs: number;
  /** Time the client has to send a response head before the visitor gets 504. */
  responseTimeoutMs: number;
  /** Public ports TCP tunnels may use; `null` = no TCP tunnels. */
  tcpPorts: { min: number; max: number } | null;
  /** Open connections per TCP tunnel before new ones are refused. */
  maxTcpConnections: number;
  /** How long shutdown waits for in-flight requests. */
  drainTimeoutMs: number;
  publicScheme: "http" | "https";
  /** Port shown in public URLs, when a proxy in front of the relay differs from `httpPort`. */
  publicPort?: number;
}

export const DEFAULT_RELAY_OPTIONS: Omit<RelayOptions, "identity"> = {
  domain: "localhost",
  hostname: "0.0.0.0",
  httpPort: 8080,
  quicPort: 4433,
  tokenHashes: null,
  graceMs: 60_000,
  heartbeatMs: 5_000,
  handshakeTimeoutMs: 10_000,
  maxConnectionsPerIp: 64,
  responseTimeoutMs: 120_000,
  headerTimeoutMs: 10_000,
  bodyIdleTimeoutMs: 30_000,
  drainTimeoutMs: 10_000,
  tcpPorts: { min: 20000, max: 20999 },
  maxTcpConnections: 256,
  maxHeaderBytes: 32 * 1024,
  maxHeaderCount: 128,
  maxUrlBytes: 8 * 1024,
  maxInFlight: 4096,
  maxInFlightPerTunnel: 1024,
  activePerTunnel: 1,
  ratePerTunnel: 0,
  ratePerIp: 0,
  registration: false,
  publicScheme: "http",
};

/** Event-loop lag (smoothed) past which the relay counts as overloaded and shares itself out fairly. */
const OVERLOAD_LAG_MS = 1.5;

/** Missed heartbeats before a client is dropped. */
const HEARTBEAT_MISSES = 3;

/** One connected client and the tunnels it holds. */
class ClientSession implements TunnelSession {
  readonly id = crypto.randomUUID();
  readonly names: string[] = [];
  readonly guards = new Map<string, AccessGuard>();
  leftOnPurpose = false;
  /** The store token this client used, for per-token limits. */
  tokenId?: number;
  lastHeard = Date.now();

  constructor(
    readonly conn: Deno.QuicConn,
    readonly ownerKey: string,
    readonly control: WritableStreamDefaultWriter<Uint8Array>,
    readonly timeouts: { responseTimeoutMs: number; bodyIdleTimeoutMs: number },
  ) {}

  forward(
    head: FrameOf<"request">,
    body: ReadableStream<Uint8Array> | null,
    onSettled: () => void,
    visitorGone: AbortSignal,
  ) {
    return forwardRequest(this.conn, head, body, { ...this.timeouts, onSettled, visitorGone });
  }

  guard(name: string) {
    return this.guards.get(name);
  }

  forwardTcp(port: string, tcp: Deno.TcpConn) {
    return forwardTcp(this.conn, port, tcp);
  }

  forwardWebSocket(head: FrameOf<"request">, accept: AcceptWebSocket, onSettled: () => void) {
    return forwardWebSocket(this.conn, head, accept, {
      responseTimeoutMs: this.timeouts.responseTimeoutMs,
      onSettled,
    });
  }

  send(frame: Frame): Promise<void> {
    return this.control.write(encodeFrame(frame));
  }

  close(code: number, reason: string): void {
    try {
      this.conn.close({ closeCode: code, reason });
    } catch {
      // Already closed.
    }
  }
}

/** A running relay; make one with {@link Relay.start}. */
export class Relay {
  readonly registry: TunnelRegistry<ClientSession>;
  /** TCP tunnels, keyed by public port number. */
  readonly tcpRegistry: TunnelRegistry<ClientSession>;
  #tcpListeners = new Map<number, TcpTunnelListener>();
  #connectionsByIp = new Map<string, number>();
  #sessions = new Set<ClientSession>();
  #endpoint: Deno.QuicEndpoint;
  #listener: Deno.QuicListener;
  #app: ReturnType<typeof createPublicApp>;
  #http!: PublicServer;
  #caServer: Deno.HttpServer<Deno.NetAddr>;
  #draining = false;
  #lag!: LoopLag;

  private constructor(readonly options: RelayOptions) {
    const store = options.tokenStore;
    this.registry = new TunnelRegistry(options.graceMs, {
      onClaim: (name, owner) => store?.reserve("http", name, owner),
      onRelease: (name) => store?.unreserve("http", name),
    });
    this.tcpRegistry = new TunnelRegistry(options.graceMs, {
      onClaim: (port, owner) => store?.reserve("tcp", port, owner),
      onRelease: (port) => {
        store?.unreserve("tcp", port);
        this.#closeTcpPort(Number(port));
      },
    });
    // The QUIC port number over TCP serves what a client needs before it can trust the relay.
    [this.#endpoint, this.#caServer] = bindQuicAndInfo(options, () => Response.json(this.info()));
    this.#listener = this.#endpoint.listen({
      alpnProtocols: [ALPN],
      cert: options.identity.certChain,
      key: options.identity.key,
      keepAliveInterval: options.heartbeatMs,
      maxIdleTimeout: options.heartbeatMs * HEARTBEAT_MISSES,
      // Clients open only their control stream.
      maxConcurrentBidirectionalStreams: 1,
      maxConcurrentUnidirectionalStreams: 0,
    });
    this.#app = createPublicApp({
      ...options,
      lookup: (name) => this.registry.lookup(name),
      info: () => this.info(),
      accounts: options.tokenStore && accountApi(options.tokenStore, { enabled: options.registration }),
      stats: () => ({
        clients: this.#sessions.size,
        httpTunnels: this.registry.size,
        tcpTunnels: this.tcpRegistry.size,
      }),
      draining: () => this.#draining,
      overloaded: () => this.#lag.ms > OVERLOAD_LAG_MS,
    });
  }

  /** Binds the listeners and starts accepting clients. */
  static async start(options: RelayOptions): Promise<Relay> {
    const relay = new Relay(options);
    relay.#lag = new LoopLag();
    try {
      relay.#http = await servePublic(relay.#app.fetch, {
        hostname: options.hostname,
        port: options.httpPort,
        headerTimeoutMs: options.headerTimeoutMs,
        // Room for the request line and a little over the header cap, so the app's own 414/431 pages answer first.
        maxHeadBytes: options.maxHeaderBytes + options.maxUrlBytes + 1024,
      });
    } catch (error) {
      relay.#endpoint.close();
      relay.#lag.stop();
      await relay.#caServer.shutdown();
      throw error;
    }
    relay.#restoreReservations();
    relay.#acceptLoop();
    return relay;
  }

  get httpPort(): number {
    return this.#http.port;
  }

  get quicPort(): number {
    return this.#endpoint.addr.port;
  }

  /** What clients fetch over TCP before their first QUIC handshake. */
  info() {
    return {
      relay: "reverprox",
      protocol: PROTOCOL_VERSION,
      domain: this.options.domain,
      fingerprint: this.options.identity.fingerprint,
      caCert: this.options.identity.caCert,
    };
  }

  /** Public URL of an http tunnel. */
  publicUrl(name: string): string {
    const { publicScheme, domain } = this.options;
    const port = this.options.publicPort ?? this.httpPort;
    const defaultPort = publicScheme === "https" ? 443 : 80;
    return `${publicScheme}://${name}.${domain}${port === defaultPort ? "" : `:${port}`}`;
  }

  /** Stops accepting, drains in-flight requests, closes every client with a reason. */
  async shutdown(reason = "relay shutting down"): Promise<void> {
    this.#draining = true;
    this.#listener.stop();
    await this.#http.shutdown(this.options.drainTimeoutMs);
    await this.#caServer.shutdown();
    const closing = [...this.#sessions].map((session) => {
      session.close(CloseCode.shuttingDown, reason);
      return session.conn.closed.catch(() => {});
    });
    await Promise.all(closing);
    this.registry.clear();
    this.tcpRegistry.clear();
    for (const port of [...this.#tcpListeners.keys()]) this.#closeTcpPort(port);
    this.#endpoint.close();
    this.#lag.stop();
  }

  /** Holds the names and ports clients had before a restart, for them only, through one grace period. */
  #restoreReservations() {
    const store = this.options.tokenStore;
    if (!store) return;
    for (const { name, ownerKey } of store.reservations("http")) this.registry.restore(name, ownerKey);
    for (const { name, ownerKey } of store.reservations("tcp")) {
      if (this.#bindTcpPort(Number(name))) this.tcpRegistry.restore(name, ownerKey);
      else store.unreserve("tcp", name);
    }
  }

  async #acceptLoop() {
    try {
      for await (const incoming of this.#listener) this.#accept(incoming);
    } catch (error) {
      if (!this.#draining) log.error("QUIC listener failed: {error}", { error });
    }
  }

  async #accept(incoming: Deno.QuicIncoming) {
    let conn: Deno.QuicConn;
    try {
      conn = await incoming.accept();
    } catch (error) {
      log.info("QUIC handshake failed: {error}", { error: String(error) });
      return;
    }
    conn.closed.catch(() => {});
    // Counted after the handshake: Deno invalidates a QuicIncoming once its address is read.
    const ip = conn.remoteAddr.hostname;
    const open = this.#connectionsByIp.get(ip) ?? 0;
    if (open >= this.options.maxConnectionsPerIp) {
      log.warn("refusing a QUIC connection from {ip}: {open} already open", { ip, open });
      conn.close({ closeCode: CloseCode.refused, reason: `too many connections from ${ip}` });
      return;
    }
    this.#connectionsByIp.set(ip, open + 1);
    conn.closed.catch(() => {}).finally(() => {
      const left = this.#connectionsByIp.get(ip)! - 1;
      if (left === 0) this.#connectionsByIp.delete(ip);
      else this.#connectionsByIp.set(ip, left);
    });
    const peer = `${conn.remoteAddr.hostname}:${conn.remoteAddr.port}`;
    let reader: FrameReader | undefined;
    let control: WritableStreamDefaultWriter<Uint8Array> | undefined;
    try {
      const stream = await withTimeout(
        conn.incomingBidirectionalStreams.getReader().read(),
        this.options.handshakeTimeoutMs,
      );
      if (stream.done) return;
      reader = new FrameReader(stream.value.readable);
      control = stream.value.writable.getWriter();
      const hello = await withTimeout(reader.expect("hello"), this.options.handshakeTimeoutMs);
      const session = await this.#register(conn, control, hello);
      log.info("client {peer} connected: {names}", { peer, names: session.names.join(", ") });
      await this.#serveControl(session, reader);
      session.close(CloseCode.normal, "control stream ended");
    } catch (error) {
      const refusal = asRefusal(error);
      log.info("client {peer} refused: {code} {message}", { peer, ...refusal });
      await this.#refuse(conn, control, refusal);
    } finally {
      await reader?.cancel();
    }
  }

  async #register(
    conn: Deno.QuicConn,
    control: WritableStreamDefaultWriter<Uint8Array>,
    hello: FrameOf<"hello">,
  ): Promise<ClientSession> {
    if (hello.version !== PROTOCOL_VERSION) {
      throw new ProtocolError(
        "bad_version",
        `relay speaks protocol ${PROTOCOL_VERSION}, client ${hello.version}`,
      );
    }
    const { tokenHashes, tokenStore } = this.options;
    const record = hello.token ? tokenStore?.verify(hello.token) ?? null : null;
    const closed = tokenHashes !== null || (tokenStore?.hasTokens() ?? false);
    if (closed && !record && !(hello.token && tokenHashes?.has(sha256Hex(hello.token)))) {
      throw new ProtocolError(
        "unauthorized",
        hello.token ? "the token is not valid" : "this relay needs a token",
      );
    }
    const ownerKey = sha256Hex(
      `${hello.token ?? ""}\n${hello.clientId ?? crypto.randomUUID()}`,
    );
    if (record) this.#checkTokenRule(record, hello, ownerKey);
    const guards = new Map<string, AccessGuard>();
    const names = hello.tunnels.filter((tunnel) => tunnel.kind === "http").map((tunnel) => {
      const name = tunnel.name ?? "";
      try {
        const guard = accessGuard(tunnel.access);
        if (guard) guards.set(name, guard);
      } catch (error) {
        throw new ProtocolError("bad_frame", `bad access rule for "${name}": ${(error as Error).message}`);
      }
      if (!isValidName(name)) {
        throw new ProtocolError(
          "name_invalid",
          `"${name}" is not a DNS label (a-z, 0-9, inner "-", up to 63)`,
        );
      }
      return name;
    });
    const duplicate = names.find((name, i) => names.indexOf(name) !== i);
    if (duplicate) throw new ProtocolError("name_invalid", `"${duplicate}" is asked for twice`);
    const taken = names.find((name) => !this.registry.available(name, ownerKey));
    if (taken) throw new ProtocolError("name_taken", `"${taken}" is in use by another client`);
    const ports = this.#reservePorts(
      hello.tunnels.filter((tunnel) => tunnel.kind === "tcp").map((tunnel) => tunnel.remotePort),
      ownerKey,
    );

    const session = new ClientSession(conn, ownerKey, control, this.options);
    session.tokenId = record?.id;
    for (const [name, guard] of guards) session.guards.set(name, guard);
    const replaced = new Set<ClientSession>();
    for (const name of names) {
      const claim = this.registry.claim(name, ownerKey, session);
      if (claim.ok && claim.replaced) replaced.add(claim.replaced);
    }
    for (const port of ports) {
      const claim = this.tcpRegistry.claim(String(port), ownerKey, session);
      if (claim.ok && claim.replaced) replaced.add(claim.replaced);
    }
    for (const old of replaced) {
      old.close(CloseCode.replaced, "replaced by a newer connection of the same client");
    }
    session.names.push(...names, ...ports.map((port) => `tcp:${port}`));
    this.#sessions.add(session);
    conn.closed.catch(() => {}).finally(() => this.#forget(session));
    const nextName = names.values(), nextPort = ports.values();
    const tunnels: TunnelGrant[] = hello.tunnels.map((tunnel) => {
      const granted: string | number = tunnel.kind === "http"
        ? nextName.next().value!
        : nextPort.next().value!;
      return typeof granted === "number"
        ? {
          kind: "tcp",
          name: String(granted),
          url: `tcp://${this.options.domain}:${granted}`,
          remotePort: granted,
        }
        : { kind: "http", name: granted, url: this.publicUrl(granted) };
    });
    await session.send({
      type: "welcome",
      sessionId: session.id,
      tunnels,
      heartbeatMs: this.options.heartbeatMs,
    });
    return session;
  }

  /** Holds a store token to its name pattern and tunnel count (counting its other clients' tunnels). */
  #checkTokenRule(record: TokenRecord, hello: FrameOf<"hello">, ownerKey: string) {
    const pattern = record.namePattern;
    const outside = pattern &&
      hello.tunnels.find((t) => t.kind === "http" && !matchesPattern(t.name ?? "", pattern));
    if (outside) {
      throw new ProtocolError(
        "not_permitted",
        `token "${record.label}" may only use names matching ${pattern}`,
      );
    }
    if (record.maxTunnels === null) return;
    let held = 0;
    for (const session of this.#sessions) {
      if (session.tokenId === record.id && session.ownerKey !== ownerKey) held += session.names.length;
    }
    if (held + hello.tunnels.length > record.maxTunnels) {
      throw new ProtocolError(
        "too_many_tunnels",
        `token "${record.label}" may hold ${record.maxTunnels} tunnels; ${held} are open elsewhere`,
      );
    }
  }

  /**
   * Binds a public port for each tcp tunnel: the one asked for (it must be in
   * the relay's range and not held by another client) or a free one from the
   * range. Throws `port_unavailable`, leaving nothing bound, when that fails.
   */
  #reservePorts(requested: (number | undefined)[], ownerKey: string): number[] {
    const range = this.options.tcpPorts;
    if (requested.length > 0 && !range) {
      throw new ProtocolError("port_unavailable", "this relay does not offer TCP tunnels");
    }
    const bound: number[] = [];
    const fail = (message: string): never => {
      for (const port of bound) this.#closeTcpPort(port, true);
      throw new ProtocolError("port_unavailable", message);
    };
    for (const want of requested) {
      const { min, max } = range!;
      if (want !== undefined && (want < min || want > max)) fail(`port ${want} is outside ${min}-${max}`);
      const candidates = want !== undefined ? [want] : shuffledRange(min, max);
      const port = candidates.find((port) =>
        !bound.includes(port) && this.tcpRegistry.available(String(port), ownerKey) && this.#bindTcpPort(port)
      );
      if (port === undefined) {
        fail(want !== undefined ? `port ${want} is in use` : `no free port left in ${min}-${max}`);
      }
      bound.push(port!);
    }
    return bound;
  }

  /** Makes sure a listener runs on `port`; false when the port cannot be bound. */
  #bindTcpPort(port: number): boolean {
    if (this.#tcpListeners.has(port)) return true;
    try {
      this.#tcpListeners.set(
        port,
        new TcpTunnelListener({
          hostname: this.options.hostname,
          port,
          maxConnections: this.options.maxTcpConnections,
          route: (tcp) => {
            const found = this.tcpRegistry.lookup(String(port));
            return found.state === "online" ? found.session.forwardTcp(String(port), tcp) : "offline";
          },
        }),
      );
      return true;
    } catch {
      return false;
    }
  }

  /** Stops a port's listener; with `unclaimedOnly`, only when no client holds the port. */
  #closeTcpPort(port: number, unclaimedOnly = false) {
    if (unclaimedOnly && this.tcpRegistry.lookup(String(port)).state !== "unknown") return;
    this.#tcpListeners.get(port)?.close();
    this.#tcpListeners.delete(port);
  }

  async #serveControl(session: ClientSession, reader: FrameReader) {
    let seq = 0;
    const heartbeat = setInterval(() => {
      if (Date.now() - session.lastHeard > this.options.heartbeatMs * HEARTBEAT_MISSES) {
        log.warn("client {id} missed its heartbeats; dropping it", { id: session.id });
        session.close(CloseCode.heartbeatMissed, "heartbeat missed");
        return;
      }
      session.send({ type: "ping", seq: seq++ }).catch(() => {});
    }, this.options.heartbeatMs);
    try {
      while (true) {
        const frame = await reader.read();
        if (!frame) break;
        session.lastHeard = Date.now();
        if (frame.type === "ping") await session.send({ type: "pong", seq: frame.seq });
        else if (frame.type === "goodbye") {
          session.leftOnPurpose = true;
          this.registry.release(session);
          this.tcpRegistry.release(session);
          log.info("client {id} left: {reason}", { id: session.id, reason: frame.reason });
          break;
        } else if (frame.type !== "pong") {
          throw new ProtocolError("bad_frame", `unexpected ${frame.type} on the control stream`);
        }
      }
    } catch (error) {
      if (!(error instanceof FrameError || error instanceof ProtocolError)) return;
      session.close(CloseCode.protocolError, error.message);
    } finally {
      clearInterval(heartbeat);
    }
  }

  #forget(session: ClientSession) {
    if (!this.#sessions.delete(session)) return;
    if (session.leftOnPurpose) {
      this.registry.release(session);
      this.tcpRegistry.release(session);
    } else {
      this.registry.hold(session);
      this.tcpRegistry.hold(session);
      log.info("client {id} lost; holding {names} for {grace} ms", {
        id: session.id,
        names: session.names.join(", "),
        grace: this.options.graceMs,
      });
    }
  }

  async #refuse(
    conn: Deno.QuicConn,
    control: WritableStreamDefaultWriter<Uint8Array> | undefined,
    refusal: { code: ErrorCode; message: string },
  ) {
    try {
      await control?.write(encodeFrame({ type: "error", ...refusal }));
      await control?.close();
      // Let the client read the error and hang up first, so the frame is not lost to our close.
      await withTimeout(conn.closed, 1_000);
    } catch {
      // Timed out or already gone.
    }
    try {
      conn.close({ closeCode: CloseCode.refused, reason: `${refusal.code}: ${refusal.message}` });
      await conn.closed;
    } catch {
      // Already closed.
    }
  }
}

function asRefusal(error: unknown): { code: ErrorCode; message: string } {
  if (error instanceof ProtocolError) return { code: error.code, message: error.message };
  if (error instanceof FrameError) return { code: "bad_frame", message: error.message };
  if (error instanceof TimeoutError) return { code: "bad_frame", message: "no hello in time" };
  return { code: "internal", message: error instanceof Error ? error.message : String(error) };
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

/**
 * Binds the QUIC endpoint (UDP) and the info server on the same port number
 * (TCP). With port 0 the UDP port is picked first; its TCP twin may be taken,
 * so that case tries again with another pick.
 */
function bindQuicAndInfo(
  options: RelayOptions,
  info: () => Response,
): [Deno.QuicEndpoint, Deno.HttpServer<Deno.NetAddr>] {
  for (let attempt = 1;; attempt++) {
    const endpoint = new Deno.QuicEndpoint({ hostname: options.hostname, port: options.quicPort });
    try {
      const server = Deno.serve(
        { hostname: options.hostname, port: endpoint.addr.port, onListen: () => {} },
        info,
      );
      return [endpoint, server];
    } catch (error) {
      endpoint.close();
      if (options.quicPort !== 0 || !(error instanceof Deno.errors.AddrInUse) || attempt === 20) throw error;
    }
  }
}
