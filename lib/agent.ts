/**
 * The client's side of a tunnel: connect to the relay over QUIC, register the
 * tunnels, answer each request stream from the local origin, and reconnect
 * with exponential backoff and jitter whenever the link drops.
 *
 * The story of one connection: trust the relay (pinned or known fingerprint) →
 * QUIC handshake → control stream → `hello` → `welcome` (public URLs) →
 * serve request streams and heartbeats until the connection ends → back off →
 * again. Refusals that retrying cannot fix (bad token, name taken, changed
 * fingerprint) end the loop with an {@link AgentError}.
 *
 * @example
 * ```ts
 * const agent = new Agent({ relay, clientId, knownRelaysFile, tunnels, ...handlers });
 * const stopping = new AbortController();
 * Deno.addSignalListener("SIGINT", () => stopping.abort());
 * await agent.run(stopping.signal);
 * ```
 * @module
 */
import type http from "node:http";
import { encodeFrame, FrameReader } from "./codec.ts";
import { answerRequest, type Origin, originAgent, type RequestOutcome } from "./http_bridge.ts";
import { answerWebSocket } from "./websocket_bridge.ts";
import { answerTcp } from "./tcp_bridge.ts";
import {
  ALPN,
  type ErrorCode,
  type FrameOf,
  PROTOCOL_VERSION,
  type TunnelAccess,
  type TunnelGrant,
} from "./protocol.ts";
import { type RelayAddress, type TrustedRelay, TrustError, trustRelay } from "./trust.ts";
import { delay, TimeoutError, withTimeout } from "./async.ts";
import { getLogger } from "./log.ts";

const log = getLogger(["reverprox", "client"]);

/** One tunnel the client asks for. */
export interface TunnelSpec {
  kind: "http" | "tcp";
  /** Subdomain, for http tunnels. */
  name?: string;
  /** Public port to ask for, for tcp tunnels; kept across reconnects once granted. */
  remotePort?: number;
  /** Who may use an http tunnel; the relay checks it. */
  access?: TunnelAccess;
  origin: Origin;
}

export interface AgentOptions {
  relay: RelayAddress;
  token?: string;
  /** Pinned CA fingerprint; without it, known_relays decides (trust on first use). */
  fingerprint?: string;
  knownRelaysFile: string;
  clientId: string;
  tunnels: TunnelSpec[];
  /** How long the origin may take to start answering before the visitor gets 504. */
  originTimeoutMs?: number;
  /** Backoff bounds for reconnecting. */
  minBackoffMs?: number;
  maxBackoffMs?: number;
  /** The relay accepted the tunnels (first time and after each reconnect). */
  onOnline?(grants: TunnelGrant[], trusted: TrustedRelay): void;
  /** One request finished. */
  onRequest?(tunnel: string, outcome: RequestOutcome): void;
}

/** Refusals that retrying will not fix. */
const FATAL_CODES = new Set<ErrorCode>([
  "bad_frame",
  "port_unavailable",
  "not_permitted",
  "bad_version",
  "unauthorized",
  "name_invalid",
  "name_taken",
  "too_many_tunnels",
]);

/** The relay refused us for good, or cannot be trusted. */
export class AgentError extends Error {
  constructor(readonly code: ErrorCode | "untrusted", message: string) {
    super(message);
    this.name = "AgentError";
  }
}

const QUIC_HANDSHAKE_TIMEOUT_MS = 5_000;
const WELCOME_TIMEOUT_MS = 10_000;
const HEARTBEAT_MISSES = 3;

/** A client that keeps its tunnels online until stopped. */
export class Agent {
  #trusted?: TrustedRelay;
  #originAgents = new Map<TunnelSpec, http.Agent>();
  #originDown = new Set<TunnelSpec>();
  /** What the relay granted, by the public name it routes on (subdomain or port). */
  #routes = new Map<string, TunnelSpec>();

  constructor(readonly options: AgentOptions) {
    for (const tunnel of options.tunnels) {
      if (tunnel.kind === "http") this.#originAgents.set(tunnel, originAgent(tunnel.origin));
    }
  }

  /** Runs until `signal` aborts (then says goodbye) or the relay refuses for good (throws). */
  async run(signal: AbortSignal): Promise<void> {
    const minBackoff = this.options.minBackoffMs ?? 500;
    const maxBackoff = this.options.maxBackoffMs ?? 30_000;
    let attempt = 0;
    try {
      while (!signal.aborted) {
        const online = await this.#connectOnce(signal).catch((error) => {
          if (error instanceof AgentError) throw error;
          log.warn("{message}", {
            message: error instanceof Error ? error.message : String(error),
          });
          return false;
        });
        if (signal.aborted) break;
        attempt = online ? 0 : attempt + 1;
        const backoff = Math.min(maxBackoff, minBackoff * 2 ** attempt) * (0.5 + Math.random());
        log.info("reconnecting in {seconds} s", { seconds: (backoff / 1000).toFixed(1) });
        await delay(backoff, signal);
      }
    } finally {
      for (const agent of this.#originAgents.values()) agent.destroy();
    }
  }

  /** One connection's life; true when it got as far as `welcome`. */
  async #connectOnce(signal: AbortSignal): Promise<boolean> {
    const { relay } = this.options;
    const trusted = this.#trusted ?? await this.#trust();
    const endpoint = new Deno.QuicEndpoint();
    let conn: Deno.QuicConn | undefined;
    try {
      try {
        conn = await withTimeout(
          Deno.connectQuic({
            hostname: relay.hostname,
            port: relay.port,
            serverName: trusted.domain,
            alpnProtocols: [ALPN],
            caCerts: [trusted.caCert],
            endpoint,
            maxConcurrentBidirectionalStreams: 10_000,
            zeroRtt: false,
          }),
          QUIC_HANDSHAKE_TIMEOUT_MS,
          "QUIC handshake",
        );
      } catch (error) {
        // The relay answered over TCP a moment ago, so a silent UDP port points at a firewall.
        this.#trusted = undefined;
        if (error instanceof TimeoutError) {
          throw new Error(
            `no QUIC answer from ${relay.hostname}:${relay.port} within ${
              QUIC_HANDSHAKE_TIMEOUT_MS / 1000
            } s, ` +
              `though its TCP port answers: UDP is probably blocked between here and the relay`,
          );
        }
        throw new Error(
          `QUIC connection to ${relay.hostname}:${relay.port} failed: ${(error as Error).message}`,
        );
      }
      conn.closed.catch(() => {});
      return await this.#session(conn, trusted, signal);
    } finally {
      if (conn) await this.#hangUp(conn, signal.aborted ? "client exit" : "reconnecting");
      endpoint.close();
    }
  }

  async #trust(): Promise<TrustedRelay> {
    try {
      this.#trusted = await trustRelay(this.options.relay, {
        pinned: this.options.fingerprint,
        knownRelaysFile: this.options.knownRelaysFile,
      });
    } catch (error) {
      if (error instanceof TrustError && /fingerprint/.test(error.message)) {
        throw new AgentError("untrusted", error.message);
      }
      throw error;
    }
    if (this.#trusted.firstUse) {
      log.warn("trusting relay {relay} on first use; CA fingerprint {fingerprint}", {
        relay: `${this.options.relay.hostname}:${this.options.relay.port}`,
        fingerprint: this.#trusted.fingerprint,
      });
    }
    return this.#trusted;
  }

  async #session(
    conn: Deno.QuicConn,
    trusted: TrustedRelay,
    signal: AbortSignal,
  ): Promise<boolean> {
    const control = await conn.createBidirectionalStream();
    const writer = control.writable.getWriter();
    const reader = new FrameReader(control.readable);
    await writer.write(encodeFrame({
      type: "hello",
      version: PROTOCOL_VERSION,
      token: this.options.token,
      clientId: this.options.clientId,
      tunnels: this.options.tunnels.map(({ kind, name, remotePort, access }) => ({
        kind,
        name,
        remotePort,
        access,
      })),
    }));
    const answer = await withTimeout(reader.expect("welcome", "error"), WELCOME_TIMEOUT_MS, "welcome")
      .catch(async (error) => {
        // A relay that hangs up before answering says why in the close reason.
        const closed = await withTimeout(conn.closed, 500, "close").catch(() => null);
        throw closed?.reason ? new Error(`relay closed the connection: ${closed.reason}`) : error;
      });
    if (answer.type === "error") {
      const message = `relay refused: ${answer.message} (${answer.code})`;
      if (FATAL_CODES.has(answer.code)) throw new AgentError(answer.code, message);
      throw new Error(message);
    }
    this.#routes.clear();
    answer.tunnels.forEach((grant, i) => {
      const tunnel = this.options.tunnels[i];
      if (tunnel.kind === "tcp") tunnel.remotePort = grant.remotePort;
      this.#routes.set(`${grant.kind}:${grant.name}`, tunnel);
    });
    this.options.onOnline?.(answer.tunnels, trusted);
    this.#serveStreams(conn);

    let lastHeard = Date.now();
    let seq = 0;
    const lost = new AbortController();
    const heartbeat = setInterval(() => {
      if (Date.now() - lastHeard > answer.heartbeatMs * HEARTBEAT_MISSES) {
        log.warn("relay missed its heartbeats; reconnecting");
        lost.abort();
        return;
      }
      writer.write(encodeFrame({ type: "ping", seq: seq++ })).catch(() => lost.abort());
    }, answer.heartbeatMs);
    const stop = () => lost.abort();
    signal.addEventListener("abort", stop, { once: true });
    // Ctrl-C during the handshake fired before anyone listened.
    if (signal.aborted) stop();
    conn.closed.then((info) => {
      if (!signal.aborted) {
        log.warn("relay closed the connection: {reason}", { reason: info.reason || "no reason" });
      }
    }, () => {}).finally(stop);
    (async () => {
      while (!lost.signal.aborted) {
        const frame = await reader.read();
        if (!frame) break;
        lastHeard = Date.now();
        if (frame.type === "ping") {
          await writer.write(encodeFrame({ type: "pong", seq: frame.seq }));
        }
      }
    })().catch(() => {}).finally(stop);

    if (!lost.signal.aborted) {
      await new Promise((resolve) => lost.signal.addEventListener("abort", resolve, { once: true }));
    }
    clearInterval(heartbeat);
    signal.removeEventListener("abort", stop);
    if (signal.aborted) {
      await writer.write(encodeFrame({ type: "goodbye", reason: "client exit" })).catch(() => {});
      await writer.close().catch(() => {});
      // The relay hangs up once it has freed our names; closing first could drop the goodbye.
      await withTimeout(conn.closed, 1_000, "goodbye").catch(() => {});
    }
    return true;
  }

  async #serveStreams(conn: Deno.QuicConn) {
    try {
      for await (const stream of conn.incomingBidirectionalStreams) this.#serveStream(stream);
    } catch {
      // The connection ended; #session notices through conn.closed.
    }
  }

  async #serveStream(stream: Deno.QuicBidirectionalStream) {
    const reader = new FrameReader(stream.readable);
    const writer = stream.writable.getWriter();
    let head: FrameOf<"request" | "tcp-open">;
    try {
      head = await reader.expect("request", "tcp-open");
    } catch (error) {
      log.warn("bad stream from relay: {error}", { error: String(error) });
      return giveUp(reader, writer);
    }
    const tunnel = this.#routes.get(`${head.type === "request" ? "http" : "tcp"}:${head.tunnel}`);
    if (!tunnel) {
      // A TCP stream carries bodies, not frames: it just ends.
      const answer = { type: "error", code: "internal", message: `no tunnel "${head.tunnel}" here` } as const;
      return giveUp(reader, writer, head.type === "request" ? answer : undefined);
    }
    if (head.type === "tcp-open") {
      const reached = await answerTcp(head, reader, writer, tunnel.origin);
      this.#noteOrigin(tunnel, reached);
      return;
    }
    const originTimeoutMs = this.options.originTimeoutMs ?? 60_000;
    let outcome;
    try {
      outcome = head.upgrade === "websocket"
        ? await answerWebSocket(head, reader, writer, { origin: tunnel.origin, originTimeoutMs })
        : await answerRequest(head, reader, writer, {
          origin: tunnel.origin,
          originTimeoutMs,
          agent: this.#originAgents.get(tunnel)!,
        });
    } catch (error) {
      // node:http and ws throw at once on a request they cannot send (say, a control byte in a header).
      log.warn("cannot pass {method} {target} to the origin: {error}", { ...head, error: String(error) });
      return giveUp(reader, writer, { type: "error", code: "origin_error", message: String(error) });
    }
    this.#noteOrigin(tunnel, outcome.error?.code !== "origin_refused");
    this.options.onRequest?.(head.tunnel, outcome);
  }

  /** Says once that the origin is down, and once that it is back. */
  #noteOrigin(tunnel: TunnelSpec, reached: boolean) {
    const origin = `${tunnel.origin.hostname}:${tunnel.origin.port}`;
    if (!reached) {
      if (this.#originDown.has(tunnel)) return;
      this.#originDown.add(tunnel);
      log.error("nothing is listening on {origin}; visitors get {what} until it is back", {
        origin,
        what: tunnel.kind === "http" ? "502" : "closed connections",
      });
    } else if (this.#originDown.delete(tunnel)) {
      log.info("{origin} answers again", { origin });
    }
  }

  async #hangUp(conn: Deno.QuicConn, reason: string) {
    try {
      conn.close({ closeCode: 0, reason });
    } catch {
      // Already closed.
    }
    await withTimeout(conn.closed, 2_000, "close").catch(() => {});
  }
}

/**
 * Ends a relay stream this client cannot serve, with `answer` if given. A close, not a reset: Deno's
 * QUIC may never show a reset to the relay, while a stream that ends early is a 502 there at once.
 */
async function giveUp(
  reader: FrameReader,
  writer: WritableStreamDefaultWriter<Uint8Array>,
  answer?: FrameOf<"error">,
): Promise<void> {
  if (answer) await writer.write(encodeFrame(answer)).catch(() => {});
  await writer.close().catch(() => {});
  await reader.cancel();
}
