/**
 * How an agent reaches its relay: a {@link ConnectRelay} gives it a fresh
 * connection whenever it needs one. That means trusting the relay first
 * (`trust.ts`: its CA over TCP, pinned or trusted on first use), then the
 * handshake by the chosen transport ({@link relayConnector}): QUIC, TCP
 * (`transport/tcp.ts`, through an HTTP proxy when the environment names
 * one), or `auto`: QUIC, and TCP when QUIC does not answer within
 * {@link AUTO_QUIC_TIMEOUT_MS}, and long-polling when TCP cannot be set up
 * or is cut soon after opening, again and again ({@link TcpHold}). A relay
 * whose TCP port answers but whose UDP port stays silent is named as such.
 *
 * @example
 * ```ts
 * import { parseServerUrl } from "./trust.ts";
 * const relay = parseServerUrl("quic://tunnel.example.com:4433");
 * const connect = relayConnector({ relay, knownRelaysFile: "known_relays", transport: "auto" });
 * const link = await connect(); // { conn, relay: "tunnel.example.com:4433", fingerprint }
 * ```
 * @module
 */
import { ALPN, CloseCode, PROTOCOL_VERSION } from "../wire/protocol.ts";
import { dialQuic } from "../transport/quic.ts";
import { dialTcp, tunnelOver } from "../transport/tcp.ts";
import { dialLongPoll, LongPollRefused } from "../transport/longpoll_client.ts";
import { proxyFor as longPollProxy } from "../transport/proxy_env.ts";
import type { Duplex } from "node:stream";
import { proxyFor } from "../transport/proxy.ts";
import type { TunnelConnection } from "../transport/types.ts";
import { delay, TimeoutError, withTimeout } from "../shared/async.ts";
import { hostPort } from "../shared/host_port.ts";
import { getLogger } from "../shared/log.ts";
import { type RelayAddress, type TrustedRelay, TrustError, trustRelay } from "./trust.ts";
import { AgentError } from "./errors.ts";

const log = getLogger(["reverprox", "client"]);

/** A connection to the relay, and what to call it. */
export interface RelayLink {
  conn: TunnelConnection;
  /** The relay's address, for people. */
  relay: string;
  /** The relay CA's fingerprint, for people. */
  fingerprint: string;
  /**
   * Set when a better transport may answer later (`auto` fell back to TCP): resolves with a link over
   * it once it does, probing now and then until `signal` aborts (then it never resolves).
   */
  better?: (signal: AbortSignal) => Promise<RelayLink>;
}

/** Opens a new connection to the relay; rejects with an {@link AgentError} when retrying cannot help. */
export type ConnectRelay = () => Promise<RelayLink>;

/** Longest a QUIC handshake may take before the agent says UDP looks blocked (`--transport quic`). */
const QUIC_HANDSHAKE_TIMEOUT_MS = 5_000;
/** With `auto`: longest QUIC may take before the agent goes over TCP instead. */
export const AUTO_QUIC_TIMEOUT_MS = 3_000;
/** Longest the TCP transport's connection, upgrade and TLS handshake may take. */
const TCP_TIMEOUT_MS = 10_000;
/** How often an agent that fell back to TCP tries QUIC again (±25 %); `REVERPROX_QUIC_PROBE_MS` overrides it (tests). */
const QUIC_PROBE_MS = 60_000;
/** With `auto`: a TCP connection lost sooner than this after opening counts as cut by the network. */
const TCP_HOLD_MS = 120_000;
/** With `auto`: this many TCP connections cut in a row, and the agent long-polls instead. */
const TCP_CUTS_TO_GIVE_UP = 2;

/** What carries the connection: `auto` tries QUIC, then TCP; `http` is long-polling. */
export const TRANSPORTS = ["auto", "quic", "tcp", "http"] as const;
export type TransportChoice = typeof TRANSPORTS[number];

export interface RelayConnectOptions {
  relay: RelayAddress;
  fingerprint?: string;
  knownRelaysFile: string;
  /** `auto` by default. */
  transport?: TransportChoice;
  /** The relay token, for long-polling's sign-in (`--transport http`); the hello carries it anyway. */
  token?: string;
  /** Where `HTTPS_PROXY`, `HTTP_PROXY` and `NO_PROXY` are read (the process's environment by default). */
  env?: Record<string, string | undefined>;
}

/** What a dial needs once the relay is trusted. */
interface DialTarget {
  hostname: string;
  port: number;
  serverName: string;
  caCert: string;
  alpn: string;
  label: string;
  /** TLS to a public HTTPS port first. */
  secure?: boolean;
}

/** Connects over QUIC only: the agent as it was before other transports. */
export function quicRelay(options: Omit<RelayConnectOptions, "transport">): ConnectRelay {
  return relayConnector({ ...options, transport: "quic" });
}

/** Connects by the chosen transport. Trust is kept between connections and checked again after a failed dial. */
export function relayConnector(options: RelayConnectOptions): ConnectRelay {
  if (options.relay.via && options.transport === "quic") {
    throw new TrustError("--transport quic needs the relay's quic:// address, not its public port");
  }
  const label = hostPort(options.relay.hostname, options.relay.port);
  const tcpHold = new TcpHold();
  let trusted: TrustedRelay | undefined;
  return async () => {
    trusted ??= await trust(options, label);
    checkProtocol(trusted, label);
    const target = {
      ...options.relay,
      serverName: trusted.domain,
      caCert: trusted.caCert,
      alpn: ALPN,
      label,
    };
    try {
      const conn = await dial(target, options, tcpHold.failing());
      const link: RelayLink = { conn, relay: label, fingerprint: trusted.fingerprint };
      const env = options.env ?? Deno.env.toObject();
      if (conn.transport === "tcp") tcpHold.watch(conn);
      if ((options.transport ?? "auto") === "auto" && conn.transport !== "quic" && !options.relay.via) {
        const intervalMs = Number(env.REVERPROX_QUIC_PROBE_MS) || QUIC_PROBE_MS;
        link.better = (signal) => probeQuic(target, link.fingerprint, intervalMs, signal);
      }
      return link;
    } catch (error) {
      trusted = undefined;
      throw error;
    }
  };
}

function checkProtocol(trusted: TrustedRelay, label: string) {
  if (trusted.protocol === PROTOCOL_VERSION) return;
  const upgrade = trusted.protocol < PROTOCOL_VERSION ? "the relay" : "reverprox";
  throw new AgentError(
    "bad_version",
    `relay ${label} speaks protocol ${trusted.protocol}, this reverprox ${PROTOCOL_VERSION}: upgrade ${upgrade}`,
  );
}

/**
 * Whether TCP connections to the relay last: a proxy that passes the upgrade but cuts the connection after
 * a while, or holds its bytes back until heartbeats are missed, loses every TCP session soon after it
 * opens. Connections the relay closed on purpose (a restart says so) do not count.
 */
class TcpHold {
  #cuts = 0;

  /** Why TCP should be skipped, once it was cut {@link TCP_CUTS_TO_GIVE_UP} times in a row; else undefined. */
  failing(): string | undefined {
    if (this.#cuts < TCP_CUTS_TO_GIVE_UP) return undefined;
    return `the TCP connection was cut ${this.#cuts} times in a row within ${TCP_HOLD_MS / 1000} s of ` +
      "opening (something on the way will not hold it open)";
  }

  watch(conn: TunnelConnection) {
    const opened = Date.now();
    conn.closed.then(({ code }) => {
      const cut = code === CloseCode.lost || code === CloseCode.heartbeatMissed;
      this.#cuts = cut && Date.now() - opened < TCP_HOLD_MS ? this.#cuts + 1 : 0;
    });
  }
}

function dial(
  target: DialTarget,
  options: RelayConnectOptions,
  /** Why `auto` skips TCP, when it does. */
  tcpFailing?: string,
): Promise<TunnelConnection> {
  const env = options.env ?? Deno.env.toObject();
  const transport = options.transport ?? "auto";
  // The relay's public port (`--server http(s)://…`) or its info port (the TCP twin of the QUIC port).
  const url = `${options.relay.via ?? "http"}://${hostPort(target.hostname, target.port)}`;
  const tcpTarget = { ...target, secure: options.relay.via === "https" };
  switch (transport) {
    case "quic":
      return dialQuicNamed(target, QUIC_HANDSHAKE_TIMEOUT_MS);
    case "tcp":
      return dialTcpNamed(tcpTarget, env);
    case "http":
      return dialLongPollNamed(target, url, options);
    default:
      return dialAuto(target, { ...tcpTarget, failing: tcpFailing }, url, options, env);
  }
}

/**
 * QUIC when it answers within {@link AUTO_QUIC_TIMEOUT_MS} (not tried on a public port), else TCP, else
 * long-polling (a proxy that will not pass the TCP transport's upgrade or holds it back); one line says which
 * and why. When all fail, each reason counts (the QUIC one may say UDP is blocked). TCP is skipped while
 * it is `failing` ({@link TcpHold}).
 */
async function dialAuto(
  target: DialTarget,
  tcpTarget: DialTarget & { failing?: string },
  url: string,
  options: RelayConnectOptions,
  env: Record<string, string | undefined>,
): Promise<TunnelConnection> {
  const failures: string[] = [];
  if (!options.relay.via) {
    try {
      const conn = await dialQuicNamed(target, AUTO_QUIC_TIMEOUT_MS);
      log.info("transport to {relay}: quic", { relay: target.label });
      return conn;
    } catch (error) {
      failures.push((error as Error).message);
    }
  }
  if (tcpTarget.failing) failures.push(tcpTarget.failing);
  else {
    try {
      const conn = await dialTcpNamed(tcpTarget, env);
      if (failures.length) {
        log.warn("transport to {relay}: tcp, since {why}", { relay: target.label, why: failures[0] });
      }
      return conn;
    } catch (error) {
      failures.push((error as Error).message);
    }
  }
  try {
    return await dialLongPollNamed(target, url, options, failures.join("; "));
  } catch (error) {
    if (error instanceof AgentError) throw error;
    throw new Error([...failures, (error as Error).message].join("; "));
  }
}

/** Tries QUIC every `intervalMs` (with jitter, so many agents do not probe together) until it answers. */
async function probeQuic(
  target: DialTarget,
  fingerprint: string,
  intervalMs: number,
  signal: AbortSignal,
): Promise<RelayLink> {
  for (;;) {
    await delay(intervalMs * (0.75 + Math.random() / 2), signal);
    if (signal.aborted) return never();
    try {
      const conn = await dialQuicNamed(target, AUTO_QUIC_TIMEOUT_MS);
      if (signal.aborted) return (conn.close({ code: CloseCode.normal, reason: "not needed" }), never());
      log.info("transport to {relay}: quic answers again; moving over from tcp", { relay: target.label });
      return { conn, relay: target.label, fingerprint };
    } catch (error) {
      log.debug("QUIC probe: {error}", { error: (error as Error).message });
    }
  }
}

/** A promise that never settles: the probe was called off. */
function never<T>(): Promise<T> {
  return new Promise(() => {});
}

async function dialQuicNamed(target: DialTarget, timeoutMs: number): Promise<TunnelConnection> {
  try {
    return await dialQuic({ ...target, timeoutMs });
  } catch (error) {
    // The relay answered over TCP a moment ago, so a silent UDP port points at a firewall.
    if (error instanceof TimeoutError) {
      throw new Error(
        `no QUIC answer from ${target.label} within ${timeoutMs / 1000} s, though its TCP port ` +
          "answers: UDP is probably blocked between here and the relay",
      );
    }
    throw new Error(`QUIC connection to ${target.label} failed: ${(error as Error).message}`);
  }
}

async function dialTcpNamed(
  target: DialTarget,
  env: Record<string, string | undefined>,
): Promise<TunnelConnection> {
  const proxy = proxyFor(target.hostname, target.port, env);
  try {
    return await dialTcp({ ...target, proxy, timeoutMs: TCP_TIMEOUT_MS });
  } catch (error) {
    const via = proxy ? ` through proxy ${hostPort(proxy.hostname, proxy.port)}` : "";
    throw new Error(`TCP connection to ${target.label}${via} failed: ${(error as Error).message}`);
  }
}

/**
 * Long-polling (`transport/longpoll_client.ts`) to `url` (the info port, or the public port the relay
 * was given by), then TLS and the multiplexer over it as over TCP.
 */
async function dialLongPollNamed(
  target: DialTarget,
  url: string,
  options: RelayConnectOptions,
  /** Why the faster transports were not used, when `auto` came down to this one. */
  why?: string,
): Promise<TunnelConnection> {
  const proxy = longPollProxy(new URL(url), options.env ?? Deno.env.toObject());
  let carrier: Duplex | undefined;
  try {
    carrier = await dialLongPoll({ url, token: options.token, proxy: proxy ?? null });
    const conn = await withTimeout(
      tunnelOver(carrier, { ...target, transport: "http" }),
      TCP_TIMEOUT_MS,
      "TLS handshake",
    );
    log.warn("transport to {relay}: http (long-polling){via}{why}", {
      relay: target.label,
      via: proxy ? ` through ${proxy.host}` : "",
      why: why ? `, since ${why}` : "",
    });
    return conn;
  } catch (error) {
    carrier?.destroy();
    const message = `long-polling to ${url} failed: ${(error as Error).message}`;
    // A bad or forbidden token will not get better by retrying: the agent stops, as on a hello refused.
    if (error instanceof LongPollRefused && (error.status === 401 || error.status === 403)) {
      throw new AgentError("unauthorized", message);
    }
    throw new Error(message);
  }
}

async function trust(
  options: RelayConnectOptions,
  label: string,
): Promise<TrustedRelay> {
  let trusted: TrustedRelay;
  try {
    trusted = await trustRelay(options.relay, {
      pinned: options.fingerprint,
      knownRelaysFile: options.knownRelaysFile,
    });
  } catch (error) {
    if (error instanceof TrustError && error.fatal) throw new AgentError("untrusted", error.message);
    throw error;
  }
  if (trusted.firstUse) {
    log.warn("trusting relay {relay} on first use; CA fingerprint {fingerprint}", {
      relay: label,
      fingerprint: trusted.fingerprint,
    });
  }
  return trusted;
}
