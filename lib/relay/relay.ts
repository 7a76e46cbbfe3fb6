/**
 * The relay: accepts client connections (QUIC, or any transport handed to
 * {@link Relay.serveClient}), registers their tunnels, keeps them alive with
 * heartbeats, and serves the public HTTP side.
 *
 * The story of one client: its connection → its control stream → `hello`
 * (version, token, tunnels) → `welcome` with public URLs, or `error` →
 * heartbeats both ways → `goodbye` (names freed now) or a lost connection
 * (names held for the grace period, then recycled). The parts: `hello.ts`
 * (the opening), `tunnel_book.ts` (who holds what), `session.ts` (one
 * client), `public/` (visitors), `tcp_ports.ts`, `info_server.ts`.
 *
 * @example
 * ```ts
 * import { loadOrCreateIdentity } from "./identity.ts";
 * const identity = await loadOrCreateIdentity("/var/lib/reverprox", "tunnel.example.com");
 * const relay = await Relay.start({ ...DEFAULT_RELAY_OPTIONS, domain: "tunnel.example.com", identity });
 * console.log(relay.publicUrl("api")); // "http://api.tunnel.example.com:8080"
 * await relay.shutdown();
 * ```
 * @module
 */
import { ALPN, CloseCode, LEGACY_ALPNS, PROTOCOL_VERSION, type RelayInfo } from "../wire/protocol.ts";
import type { TunnelGrant } from "../wire/protocol.ts";
import { HEARTBEAT_MISSES } from "../wire/keepalive.ts";
import type { QuicServer } from "../transport/quic.ts";
import type { TunnelConnection, TunnelListener } from "../transport/types.ts";
import { acceptTcp } from "../transport/tcp.ts";
import { answerUpgrade } from "../transport/upgrade.ts";
import type { Duplex } from "node:stream";
import { ResumableConnection } from "../transport/resumable.ts";
import { getLogger } from "../shared/log.ts";
import { hostPort } from "../shared/host_port.ts";
import { createPublicApp, type PublicLimits } from "./public/app.ts";
import { hostName } from "./public/middleware.ts";
import type { PublicServer } from "./public/server.ts";
import { LoopLag } from "./public/fair_gate.ts";
import { accountApi } from "./state/account_api.ts";
import type { TokenStore } from "./state/token_store.ts";
import type { RelayIdentity } from "./identity.ts";
import { connectionBudget, ConnectionLimits } from "./conn_limits.ts";
import { asRefusal, authenticate, type Opening, readHello, refuse, refuseLegacy } from "./hello.ts";
import { ClientSession, type Forwarding, type TunnelChanges } from "./session.ts";
import { TcpPorts } from "./tcp_ports.ts";
import { TunnelBook } from "./tunnel_book.ts";
import { bindQuicAndInfo } from "./info_server.ts";
import { type LongPollOptions, LongPollServer } from "./longpoll.ts";
import { bindPublicFront, type PublicFront } from "./tls/front.ts";
import { DEFAULT_TLS_OPTIONS, tlsMode, type TlsOptions } from "./tls/options.ts";

const log = getLogger(["reverprox", "relay"]);

export interface RelayOptions extends PublicLimits, TlsOptions {
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
  /** Let tunnels and sign-up users take punycode names (`xn--…`, shown by browsers as Unicode look-alikes). */
  allowPunycode: boolean;
  /** How long a dropped client's names stay reserved for it. */
  graceMs: number;
  heartbeatMs: number;
  /** Client connections (one per client process) one address may have open. */
  maxClientsPerIp: number;
  /** Time a new connection has to send its `hello`. */
  helloTimeoutMs: number;
  /** Time a visitor has to send a whole request head before 408 (slow-loris headers). */
  headerTimeoutMs: number;
  /** Window over which a request body must keep `minBodyRate` (408); also how long the tunnel may take none of it (504). */
  bodyTimeoutMs: number;
  /** Time the client has to send a response head before the visitor gets 504. */
  responseTimeoutMs: number;
  /** Public ports TCP tunnels may use; `null` = no TCP tunnels. */
  tcpPorts: { min: number; max: number } | null;
  /** Open connections per TCP tunnel before new ones are refused. */
  maxTcpConns: number;
  /** TCP tunnels one client (client id) may hold, so no one takes the whole port range. */
  maxTcpTunnelsPerClient: number;
  /** How long shutdown waits for in-flight requests. */
  drainTimeoutMs: number;
  /** Scheme of public URLs and `X-Forwarded-Proto`; always `https` with TLS on. */
  publicScheme: "http" | "https";
  /** Port shown in public URLs, when a proxy in front of the relay differs from `httpPort` (`httpsPort` with TLS on). */
  publicPort?: number;
  /** TCP connections the relay keeps open in all (public, CA, TCP tunnels); by default what its open-file limit allows. */
  maxConns: number;
  /** TCP connections one visitor address may keep open. */
  maxConnsPerIp: number;
  /** Bytes per second a request body must keep up, measured over each `bodyTimeoutMs`. */
  minBodyRate: number;
  /**
   * Long-polling's tunables (`longpoll.ts`); `onCarrier` replaces what takes each virtual connection
   * (TLS and the multiplexer, then the client's session), for tests of the carrier alone.
   */
  longPoll?: Partial<Omit<LongPollOptions, "tokens">>;
}

export const DEFAULT_RELAY_OPTIONS: Omit<RelayOptions, "identity"> = {
  ...DEFAULT_TLS_OPTIONS,
  domain: "localhost",
  hostname: "0.0.0.0",
  httpPort: 8080,
  quicPort: 4433,
  tokenHashes: null,
  graceMs: 60_000,
  heartbeatMs: 5_000,
  helloTimeoutMs: 10_000,
  maxClientsPerIp: 64,
  responseTimeoutMs: 120_000,
  headerTimeoutMs: 10_000,
  bodyTimeoutMs: 30_000,
  drainTimeoutMs: 10_000,
  tcpPorts: { min: 20000, max: 20999 },
  maxTcpConns: 256,
  maxTcpTunnelsPerClient: 16,
  maxHeaderBytes: 32 * 1024,
  maxHeaderCount: 128,
  maxUrlBytes: 8 * 1024,
  maxInFlight: 4096,
  maxInFlightPerTunnel: 1024,
  activePerTunnel: 1,
  ratePerTunnel: 0,
  ratePerIp: 0,
  registration: false,
  allowPunycode: false,
  publicScheme: "http",
  maxConns: connectionBudget(),
  maxConnsPerIp: 256,
  minBodyRate: 256,
};

/** Event-loop lag (smoothed) past which the relay counts as overloaded and shares itself out fairly. */
const OVERLOAD_LAG_MS = 1.5;

/** A running relay; make one with {@link Relay.start}. */
export class Relay {
  #book: TunnelBook;
  /** TCP connections: public, info port, TCP tunnels. */
  #connections: ConnectionLimits;
  /** Client connections per address. */
  #clients: ConnectionLimits;
  #quic!: QuicServer;
  #listener!: TunnelListener;
  #public!: PublicFront;
  #infoServer!: PublicServer;
  #app: ReturnType<typeof createPublicApp>;
  #forwarding: Forwarding;
  #draining = false;
  /** How clients' changes to their tunnels are applied. */
  #changes: TunnelChanges = {
    update: (session, frame) => {
      const ack = this.#book.change(session, frame, (name) => this.publicUrl(name));
      if (ack.grant) this.#granted([ack.grant]);
      return Promise.resolve(ack);
    },
    health: (session, frame) => this.#book.health(session, frame),
  };
  #lag = new LoopLag();
  /** Sessions whose streams survive the link, by the resume token their client holds. */
  #resumable = new Map<string, ClientSession>();
  #longPoll: LongPollServer;

  private constructor(readonly options: RelayOptions) {
    this.#connections = new ConnectionLimits({ total: options.maxConns, perAddress: options.maxConnsPerIp });
    this.#clients = new ConnectionLimits({ total: Infinity, perAddress: options.maxClientsPerIp });
    this.#forwarding = {
      responseTimeoutMs: options.responseTimeoutMs,
      body: {
        windowMs: options.bodyTimeoutMs,
        minBytesPerSecond: options.minBodyRate,
        maxBytes: options.maxBodyBytes,
      },
    };
    const ports = new TcpPorts({
      hostname: options.hostname,
      range: options.tcpPorts,
      maxConnectionsPerPort: options.maxTcpConns,
      admit: (address) => this.#connections.admit(address),
      route: (port, tcp) => {
        const found = this.#book.tcp.lookup(String(port));
        if (found.state !== "online" || found.session.condition(`tcp:${port}`)) return "offline";
        return found.session.forwardTcp(String(port), tcp);
      },
    });
    this.#book = new TunnelBook(options, ports);
    this.#longPoll = new LongPollServer({
      onCarrier: (carrier, peer) => this.#acceptCarrier(carrier, peer),
      ...options.longPoll,
      tokens: options,
    });
    this.#app = createPublicApp({
      ...options,
      lookup: (name, debugId) => this.#book.route(name, debugId),
      info: () => this.info(),
      accounts: options.tokenStore &&
        accountApi(options.tokenStore, {
          enabled: options.registration,
          allowPunycode: options.allowPunycode,
        }),
      longPollRoutes: this.#longPoll.routes,
      stats: () => ({ ...this.#book.stats(), longPollConnections: this.#longPoll.connections }),
      draining: () => this.#draining,
      overloaded: () => this.#lag.ms > OVERLOAD_LAG_MS,
    });
  }

  /** Binds the listeners and starts accepting clients. */
  static async start(options: RelayOptions): Promise<Relay> {
    const relay = new Relay(tlsMode(options) === "off" ? options : { ...options, publicScheme: "https" });
    try {
      await relay.#bind();
    } catch (error) {
      await relay.#unbind();
      throw error;
    }
    relay.#book.restore();
    relay.#acceptLoop();
    return relay;
  }

  /** QUIC and its TCP twin (what a client needs before it can trust the relay), then the public side. */
  async #bind() {
    const { options } = this;
    const admit = (address: string) => this.#connections.admit(address);
    [this.#quic, this.#infoServer] = await bindQuicAndInfo(options.hostname, options.quicPort, {
      info: () => this.info(),
      headerTimeoutMs: options.headerTimeoutMs,
      admit,
      longPoll: this.#longPoll.routes,
      tunnel: (socket, head) => this.#acceptTcp(socket, head),
    });
    this.#listener = this.#quic.listen({
      certChain: options.identity.certChain,
      key: options.identity.key,
      alpn: [ALPN, ...LEGACY_ALPNS],
      keepAliveMs: options.heartbeatMs,
      idleTimeoutMs: options.heartbeatMs * HEARTBEAT_MISSES,
      // Clients open only their control stream.
      maxIncomingStreams: 1,
    });
    this.#public = await bindPublicFront(this.#app.fetch, {
      headerTimeoutMs: options.headerTimeoutMs,
      // Room for the request line and a little over the header cap, so the app's own 414/431 pages answer first.
      maxHeadBytes: options.maxHeaderBytes + options.maxUrlBytes + 1024,
      admit,
      // On the bare domain only: every other host is a tunnel, whose paths belong to its user.
      tunnel: (socket, head, incoming) =>
        hostName(incoming.headers.host ?? "") === options.domain
          ? this.#acceptTcp(socket, head)
          : socket.destroy(),
    }, { ...options, inUse: (name) => this.#book.lookup(name).state !== "unknown" });
  }

  /** Closes whatever #bind got as far as binding. */
  async #unbind() {
    this.#lag.stop();
    this.#longPoll.close();
    this.#quic?.close();
    await this.#infoServer?.shutdown(0);
  }

  get httpPort(): number {
    return this.#public.httpPort;
  }

  /** The HTTPS port, with TLS on. */
  get httpsPort(): number | undefined {
    return this.#public.httpsPort;
  }

  get quicPort(): number {
    return this.#quic.port;
  }

  /** What clients fetch over TCP before their first QUIC handshake. */
  info(): RelayInfo {
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
    const port = this.options.publicPort ?? this.httpsPort ?? this.httpPort;
    const defaultPort = publicScheme === "https" ? 443 : 80;
    return `${publicScheme}://${name}.${domain}${port === defaultPort ? "" : `:${port}`}`;
  }

  /** Stops accepting, drains in-flight requests, closes every client with a reason. */
  async shutdown(reason = "relay shutting down"): Promise<void> {
    this.#draining = true;
    this.#listener.stop();
    await this.#public.shutdown(this.options.drainTimeoutMs);
    await this.#infoServer.shutdown(0);
    await Promise.all([...this.#book.sessions].map((session) => {
      session.close(CloseCode.shuttingDown, reason);
      return session.conn.closed;
    }));
    this.#book.clear();
    await this.#unbind();
  }

  /** A client's TCP transport, upgraded on the QUIC port's TCP twin or the public port: TLS, then as any client. */
  #acceptTcp(socket: Duplex, head: Uint8Array) {
    if (this.#draining) return socket.destroy();
    answerUpgrade(socket, head);
    this.#secureClient(socket, { transport: "tcp" });
  }

  /** A long-polling virtual connection: TLS and the multiplexer over it, as over an upgraded TCP socket. */
  #acceptCarrier(carrier: Duplex, peer: { hostname: string; port: number }) {
    if (this.#draining) return carrier.destroy();
    this.#secureClient(carrier, { transport: "http", peer });
  }

  /** The relay's TLS handshake and multiplexer over a client's byte stream, then its session. */
  #secureClient(socket: Duplex, carried: { transport: string; peer?: { hostname: string; port: number } }) {
    const { identity } = this.options;
    acceptTcp(socket, {
      certChain: identity.certChain,
      key: identity.key,
      alpn: [ALPN, ...LEGACY_ALPNS],
      handshakeTimeoutMs: this.options.helloTimeoutMs,
      ...carried,
    }).then(
      (conn) => this.serveClient(conn),
      (error) =>
        log.info("{transport} transport handshake failed: {error}", { ...carried, error: String(error) }),
    );
  }

  async #acceptLoop() {
    for await (const conn of this.#listener) this.serveClient(conn);
  }

  /** Serves one client connection from its hello to its end, whatever transport carries it. */
  async serveClient(conn: TunnelConnection): Promise<void> {
    const peer = hostPort(conn.peer.hostname, conn.peer.port);
    const release = this.#clients.admit(conn.peer.hostname);
    if (!release) {
      return conn.close({
        code: CloseCode.refused,
        reason: `too many connections from ${conn.peer.hostname}`,
      });
    }
    conn.closed.then(release);
    if (conn.alpn && LEGACY_ALPNS.includes(conn.alpn)) return await refuseLegacy(conn, conn.alpn);
    let control: WritableStreamDefaultWriter<Uint8Array> | undefined;
    let opening: Opening | null = null;
    try {
      opening = await readHello(conn, this.options.helloTimeoutMs, (stream) => control = stream);
      if (!opening) return;
      const session = await this.#welcome(conn, opening);
      log.info("client {peer} connected: {names}", { peer, names: session.names.join(", ") });
      const end = await session.serveControl(opening.reader, this.options.heartbeatMs, this.#changes);
      if (end === "goodbye") {
        this.#book.release(session);
        session.close(CloseCode.normal, "goodbye");
      }
    } catch (error) {
      const refusal = asRefusal(error);
      log.info("client {peer} refused: {code} {message}", { peer, ...refusal });
      await refuse(conn, control, refusal);
    } finally {
      await opening?.reader.cancel();
    }
  }

  /** Admits the client's tunnels and answers `welcome`; throws the refusal when it cannot. */
  async #welcome(conn: TunnelConnection, { hello, control }: Opening): Promise<ClientSession> {
    const { record, ownerKey } = authenticate(hello, this.options);
    const resumed = this.#resumed(hello.resume?.token, ownerKey);
    if (resumed) {
      resumed.resume(conn, control);
      const { id: sessionId, resumeToken } = resumed;
      await resumed.send({
        type: "welcome",
        sessionId,
        tunnels: [],
        heartbeatMs: this.options.heartbeatMs,
        resumeToken,
        resumed: true,
      });
      return resumed;
    }
    const streams = hello.resume ? new ResumableConnection(conn, "relay", this.options.graceMs) : conn;
    const session = new ClientSession(streams, ownerKey, control, this.#forwarding);
    session.instance = hello.instance;
    const tunnels = this.#book.admit(session, hello.tunnels, record, (name) => this.publicUrl(name));
    streams.closed.then(() => this.#book.hold(session));
    if (hello.resume) {
      session.resumeToken = crypto.randomUUID();
      this.#resumable.set(session.resumeToken, session);
      streams.closed.then(() => this.#resumable.delete(session.resumeToken!));
    }
    this.#granted(tunnels);
    await session.send({
      type: "welcome",
      sessionId: session.id,
      tunnels,
      heartbeatMs: this.options.heartbeatMs,
      resumeToken: session.resumeToken,
    });
    return session;
  }

  /** The live session a resume token names, when it is this owner's; else a new session starts. */
  #resumed(token: string | undefined, ownerKey: string): ClientSession | undefined {
    const session = token === undefined ? undefined : this.#resumable.get(token);
    return session?.ownerKey === ownerKey ? session : undefined;
  }

  /** Http names just handed out get their certificates now (with ACME), before their first visitor. */
  #granted(grants: TunnelGrant[]) {
    for (const grant of grants) if (grant.kind === "http") this.#public.want(grant.name);
  }
}
