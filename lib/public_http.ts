/**
 * The relay's public HTTP side: a Hono app that picks the tunnel from the Host
 * header (`<name>.<domain>`), applies the relay's caps and the tunnel's access
 * rules, and hands the request to its owner; or answers with a plain page and
 * the right status (400 bad Host, 401/403 access, 404 unknown, 413/414/431 too
 * large, 429 rate, 501 upgrade, 503 offline or overloaded).
 *
 * @example
 * ```ts
 * const app = createPublicApp({ domain: "localhost", ...limits, lookup: (name) => registry.lookup(name), info });
 * const server = await servePublic(app.fetch, { hostname: "0.0.0.0", port: 8080, headerTimeoutMs: 10_000, maxHeadBytes: 48_000 });
 * ```
 * @module
 */
import { Hono } from "hono";
import type { AccessGuard } from "./access.ts";
import type { AcceptWebSocket, PublicBindings } from "./public_server.ts";
import { HTTPException } from "hono/http-exception";
import { bodyLimit } from "hono/body-limit";
import { getConnInfo } from "@hono/node-server/conninfo";
import { errorPage, type PageCode } from "./pages.ts";
import { endToEndHeaders, headerBytes, type HeaderPairs, headerPairs, withForwarded } from "./headers.ts";
import type { Lookup } from "./registry.ts";
import type { FrameOf } from "./protocol.ts";
import { getLogger } from "./log.ts";
import { RateLimiter } from "./rate_limit.ts";
import { FairGate } from "./fair_gate.ts";

const log = getLogger(["reverprox", "http"]);

/** A tunnel owner as the public side sees it. */
export interface TunnelSession {
  /**
   * Sends the request through the tunnel; `onSettled` runs once the response body is done,
   * `visitorGone` aborts when the visitor leaves first.
   */
  forward(
    head: FrameOf<"request">,
    body: ReadableStream<Uint8Array> | null,
    onSettled: () => void,
    visitorGone: AbortSignal,
  ): Promise<Response>;
  /** Same, for a WebSocket handshake: `accept` completes the visitor's side once the origin accepts. */
  forwardWebSocket(
    head: FrameOf<"request">,
    accept: AcceptWebSocket,
    onSettled: () => void,
  ): Promise<Response>;
  /** The client's access rules for tunnel `name` (IP list, basic auth), if any. */
  guard(name: string): AccessGuard | undefined;
}

/** Caps on what a visitor may send; each is answered with its own status. */
export interface PublicLimits {
  /** Total request header bytes before 431. */
  maxHeaderBytes: number;
  /** Request headers (fields) before 431. */
  maxHeaderCount: number;
  /** Request target bytes before 414. */
  maxUrlBytes: number;
  /** Request body bytes before 413; `undefined` = no cap. */
  maxBodyBytes?: number;
  /** Requests in flight on the whole relay before 503. */
  maxInFlight: number;
  /** Requests in flight on one tunnel before 503, so one busy tunnel cannot take the whole relay. */
  maxInFlightPerTunnel: number;
  /** Requests one tunnel may have in progress while the relay is overloaded and shared (see {@link FairGate}). */
  activePerTunnel: number;
  /** Requests per second one tunnel may receive before 429; 0 = no limit. */
  ratePerTunnel: number;
  /** Requests per second one visitor IP may send before 429; 0 = no limit. */
  ratePerIp: number;
}

export interface PublicAppOptions extends PublicLimits {
  domain: string;
  /** Scheme visitors used, for `X-Forwarded-Proto`. */
  publicScheme: "http" | "https";
  lookup(name: string): Lookup<TunnelSession>;
  /** What the bare domain's `/.well-known/reverprox.json` says (CA, version). */
  info(): Record<string, unknown>;
  /** The sign-up API served on the bare domain under `/api/`, when the relay keeps accounts. */
  accounts?: Hono;
  /** Relay-wide counters for the status page. */
  stats(): Record<string, number>;
  /** True while the relay drains for shutdown. */
  draining(): boolean;
  /** True while the relay is short of time; tunnels are then held to `activePerTunnel` each. */
  overloaded(): boolean;
}

/** What the caps middleware has parsed already, for the handler to reuse. */
interface Parsed {
  url: URL;
  headers: HeaderPairs;
}

/** Builds the public app. */
export function createPublicApp(
  options: PublicAppOptions,
): Hono<{ Bindings: PublicBindings; Variables: Parsed }> {
  const app = new Hono<{ Bindings: PublicBindings; Variables: Parsed }>();
  let inFlight = 0;
  const inFlightByTunnel = new Map<string, number>();
  const perTunnel = new RateLimiter(options.ratePerTunnel);
  const perIp = new RateLimiter(options.ratePerIp);
  const gate = new FairGate({
    slots: options.activePerTunnel,
    holdMs: FAIR_GATE_HOLD_MS,
    overloaded: options.overloaded,
  });

  app.use(async (c, next) => {
    const refuse = (status: number, code: PageCode, message: string) => {
      log.info("{status} for {visitor}: {message}", {
        status,
        visitor: getConnInfo(c).remote.address,
        message,
      });
      return errorPage(status, code, message);
    };
    // HTTP/1.1 needs a Host, and routing trusts it: anything but a plain host[:port] stops here.
    if (!HOST.test(c.req.header("host") ?? "")) {
      return refuse(400, "bad_request", "The Host header is missing or malformed.");
    }
    const url = new URL(c.req.url);
    if (url.pathname.length + url.search.length > options.maxUrlBytes) {
      return refuse(414, "uri_too_long", `The request target is over ${options.maxUrlBytes} bytes.`);
    }
    const headers = headerPairs(c.req.raw.headers);
    if (headers.length > options.maxHeaderCount) {
      return refuse(431, "headers_too_large", `The request has more than ${options.maxHeaderCount} headers.`);
    }
    if (headerBytes(headers) > options.maxHeaderBytes) {
      return refuse(
        431,
        "headers_too_large",
        `The request headers are over ${options.maxHeaderBytes} bytes.`,
      );
    }
    c.set("url", url);
    c.set("headers", headers);
    await next();
  });

  if (options.maxBodyBytes !== undefined) {
    const limit = options.maxBodyBytes;
    app.use(bodyLimit({
      maxSize: limit,
      onError: (c) => {
        log.info("413 for {visitor}: body over {limit} bytes", {
          visitor: getConnInfo(c).remote.address,
          limit,
        });
        return errorPage(413, "body_too_large", `The request body is over ${limit} bytes.`);
      },
    }));
  }

  app.all("*", async (c) => {
    const hostHeader = c.req.header("host") ?? "";
    const host = hostName(hostHeader);
    const name = tunnelName(host, options.domain);
    if (name === undefined) {
      const path = c.get("url").pathname;
      if (path === "/.well-known/reverprox.json") return c.json(options.info());
      // Counters for operators and the fuzz campaign: in-flight must drop back to 0 when idle.
      if (path === "/.well-known/reverprox/status") return c.json({ inFlight, ...options.stats() });
      if (path.startsWith("/api/") && options.accounts) return options.accounts.fetch(c.req.raw, c.env);
      return c.text(`reverprox relay for *.${options.domain}\n`);
    }
    const found = options.lookup(name);
    if (found.state === "unknown") {
      return errorPage(404, "unknown_tunnel", `No tunnel is named "${name}" on this relay.`);
    }
    if (found.state === "offline") {
      return errorPage(
        503,
        "tunnel_offline",
        `The tunnel "${name}" is offline; its client is reconnecting.`,
      );
    }
    const visitor = getConnInfo(c).remote.address ?? "";
    if (!perIp.take(visitor)) {
      log.info("rate limit: {visitor} over {rate} requests/s", { visitor, rate: options.ratePerIp });
      return tooMany(`Too many requests from ${visitor}; slow down.`);
    }
    if (!perTunnel.take(name)) {
      log.info("rate limit: tunnel {name} over {rate} requests/s", { name, rate: options.ratePerTunnel });
      return tooMany(`Too many requests for "${name}"; slow down.`);
    }
    const refusal = await found.session.guard(name)?.(c);
    if (refusal) return refusal;
    if (options.draining()) {
      return errorPage(
        503,
        "relay_shutting_down",
        "The relay is restarting; try again in a moment.",
      );
    }
    if (inFlight >= options.maxInFlight) {
      log.warn("relay overloaded: {inFlight} requests in flight", { inFlight });
      return errorPage(503, "relay_overloaded", "The relay is busy; try again in a moment.");
    }
    const tunnelInFlight = inFlightByTunnel.get(name) ?? 0;
    if (tunnelInFlight >= options.maxInFlightPerTunnel) {
      log.warn("tunnel {name} overloaded: {count} requests in flight", { name, count: tunnelInFlight });
      return errorPage(503, "tunnel_overloaded", `The tunnel "${name}" is busy; try again in a moment.`);
    }
    const request = c.req.raw;
    const upgrade = request.headers.get("upgrade")?.toLowerCase();
    // h2c is an optional offer a server may ignore; other upgrades cannot cross the tunnel.
    if (upgrade && upgrade !== "websocket" && upgrade !== "h2c") {
      return errorPage(
        501,
        "upgrade_unsupported",
        `Upgrade to "${upgrade}" is not supported; only WebSocket is.`,
      );
    }
    const acceptWebSocket = c.env.acceptWebSocket;
    if (upgrade === "websocket" && !acceptWebSocket) {
      return errorPage(400, "bad_request", "This is not a valid WebSocket handshake.");
    }
    const url = c.get("url");
    const head: FrameOf<"request"> = {
      type: "request",
      tunnel: name,
      method: request.method,
      target: url.pathname + url.search,
      headers: withForwarded(
        // `Expect: 100-continue` was already answered by node:http; the origin gets the body directly.
        endToEndHeaders(c.get("headers")).filter(([key]) => key !== "expect"),
        { remoteAddr: visitor, proto: options.publicScheme, host: hostHeader },
      ),
      remoteAddr: visitor,
      ...(acceptWebSocket ? { upgrade: "websocket" as const } : {}),
    };
    inFlight++;
    inFlightByTunnel.set(name, tunnelInFlight + 1);
    let settled = false;
    let release = () => {};
    const settle = () => {
      if (settled) return;
      settled = true;
      release();
      inFlight--;
      const left = inFlightByTunnel.get(name)! - 1;
      if (left === 0) inFlightByTunnel.delete(name);
      else inFlightByTunnel.set(name, left);
    };
    try {
      release = await gate.enter(name);
      return acceptWebSocket
        ? await found.session.forwardWebSocket(head, acceptWebSocket, settle)
        : await found.session.forward(head, request.body, settle, request.signal);
    } catch (error) {
      settle();
      throw error;
    }
  });

  app.onError((error) => {
    if (error instanceof HTTPException) return error.getResponse();
    log.error("request failed: {error}", { error });
    return errorPage(502, "client_failed", "The tunnel failed while forwarding the request.");
  });
  return app;
}

/** How long a request holds its tunnel's fair-gate slot at most: slow requests are not busy ones. */
const FAIR_GATE_HOLD_MS = 10;

function tooMany(message: string): Response {
  const response = errorPage(429, "rate_limited", message);
  response.headers.set("retry-after", "1");
  return response;
}

const HOST = /^(\[[0-9a-f:.]+\]|[a-z0-9.-]+)(:\d{1,5})?$/i;

/** Lowercased host without port; `[::1]:8080` → `::1`. */
export function hostName(hostHeader: string): string {
  const host = hostHeader.trim().toLowerCase();
  if (host.startsWith("[")) {
    return host.slice(1, host.indexOf("]") > 0 ? host.indexOf("]") : undefined);
  }
  const colon = host.lastIndexOf(":");
  return colon >= 0 ? host.slice(0, colon) : host;
}

/**
 * The tunnel label of `host` under `domain`: `api.tunnel.example.com` → `api`.
 * `undefined` for the bare domain or a foreign host (the relay's own pages);
 * nested or malformed labels come back as written, to be answered 404.
 */
export function tunnelName(host: string, domain: string): string | undefined {
  const suffix = `.${domain}`;
  if (!host.endsWith(suffix)) return undefined;
  const label = host.slice(0, -suffix.length);
  return label.length > 0 ? label : undefined;
}
