/**
 * The public app's middlewares, one concern each, in the order a request
 * meets them (see `app.ts`): caps on the request itself, routing by Host,
 * rate limits, the tunnel's access rules, drain, in-flight caps, the upgrade
 * policy and the fair gate; then the handler that forwards to the tunnel.
 * Each refuses by throwing a {@link PageError}; each passes what it learned
 * on in Hono's context variables.
 *
 * @example
 * ```ts
 * import { Hono } from "hono";
 * import type { Lookup } from "../registry.ts";
 * import type { PublicLimits, TunnelSession } from "./app.ts";
 * declare const limits: PublicLimits, lookup: (name: string) => Lookup<TunnelSession>;
 * const app = new Hono<PublicEnv>();
 * const relayPages = new Hono<PublicEnv>(); // the bare domain's own pages
 * app.use(requestCaps(limits), hostRouting({ domain: "tunnel.example.com", lookup, relayPages }));
 * app.all("*", forwardToTunnel({ publicScheme: "https" }));
 * ```
 * @module
 */
import type { Context, Hono, MiddlewareHandler } from "hono";
import { getConnInfo } from "@hono/node-server/conninfo";
import type { FrameOf } from "../../wire/protocol.ts";
import {
  endToEndHeaders,
  headerBytes,
  type HeaderPairs,
  headerPairs,
  withForwarded,
} from "../../shared/headers.ts";
import { getLogger } from "../../shared/log.ts";
import type { Lookup } from "../registry.ts";
import type { PublicLimits, TunnelSession } from "./app.ts";
import type { PublicCounters } from "./counters.ts";
import { FairGate } from "./fair_gate.ts";
import { PageError, pausedPage, reconnectingMessage } from "./pages.ts";
import { DEBUG_HEADER, DEBUG_PATH, debugIdOf, debugPage } from "../debug_routes.ts";
import { RateLimiter } from "./rate_limit.ts";
import type { PublicBindings } from "./server.ts";

const log = getLogger(["reverprox", "http"]);

/** What the middlewares learn about a request, for those after them. */
export interface PublicVariables {
  url: URL;
  /** The request headers as pairs, parsed once. */
  headers: HeaderPairs;
  /** The tunnel the Host names, and who holds it. */
  tunnel: { name: string; session: TunnelSession };
  /** The visitor's address. */
  visitor: string;
  /** Marks the exchange over (in-flight counters, fair-gate slot); safe to call more than once. */
  settle: () => void;
}

export type PublicEnv = { Bindings: PublicBindings; Variables: PublicVariables };
type Middleware = MiddlewareHandler<PublicEnv>;

/** HTTP/1.1 needs a Host, and routing trusts it: anything but a plain host[:port] is refused. */
const HOST = /^(\[[0-9a-f:.]+\]|[a-z0-9.-]+)(:\d{1,5})?$/i;

/** The request's own size: Host well formed (400), target (414), headers (431), declared body (413). */
export function requestCaps(limits: PublicLimits): Middleware {
  return async function requestCaps(c, next) {
    if (!HOST.test(c.req.header("host") ?? "")) {
      throw new PageError(400, "bad_request", "The Host header is missing or malformed.");
    }
    const url = new URL(c.req.url);
    if (url.pathname.length + url.search.length > limits.maxUrlBytes) {
      throw new PageError(414, "uri_too_long", `The request target is over ${limits.maxUrlBytes} bytes.`);
    }
    const headers = headerPairs(c.req.raw.headers);
    if (headers.length > limits.maxHeaderCount) {
      throw new PageError(
        431,
        "headers_too_large",
        `The request has more than ${limits.maxHeaderCount} headers.`,
      );
    }
    if (headerBytes(headers) > limits.maxHeaderBytes) {
      throw new PageError(
        431,
        "headers_too_large",
        `The request headers are over ${limits.maxHeaderBytes} bytes.`,
      );
    }
    const declared = Number(c.req.header("content-length") ?? 0);
    if (limits.maxBodyBytes !== undefined && declared > limits.maxBodyBytes) {
      // The body is left unread: the connection cannot carry another request after it.
      throw new PageError(413, "body_too_large", `The request body is over ${limits.maxBodyBytes} bytes.`, {
        connection: "close",
      });
    }
    c.set("url", url);
    c.set("headers", headers);
    c.set("visitor", getConnInfo(c).remote.address ?? "");
    await next();
  };
}

/**
 * Routes by Host: the bare domain to the relay's own pages, `<name>.<domain>` to its tunnel (404
 * unknown, 503 while its client reconnects), anything else 421. A request marked with a debug id goes
 * to that debug receiver; `/.reverprox/debug/…` on a tunnel's URL sets or clears the marking cookie.
 */
export function hostRouting(options: {
  domain: string;
  lookup: (name: string, debugId?: string) => Lookup<TunnelSession> & { debug?: true };
  relayPages: Hono<PublicEnv>;
}): Middleware {
  return async function hostRouting(c, next) {
    const host = hostName(c.req.header("host") ?? "");
    const name = tunnelName(host, options.domain);
    if (name === null) {
      throw new PageError(
        421,
        "misdirected_request",
        `This relay serves ${options.domain} and *.${options.domain}, not ${host}.`,
      );
    }
    if (name === undefined) return options.relayPages.fetch(c.req.raw, c.env);
    const pagePath = c.get("url").pathname.startsWith(DEBUG_PATH);
    const debugId = pagePath
      ? c.get("url").pathname.slice(DEBUG_PATH.length)
      : debugIdOf(c.req.header(DEBUG_HEADER), c.req.header("cookie"));
    const found = options.lookup(name, debugId);
    if (found.state === "unknown") {
      throw new PageError(404, "unknown_tunnel", `No tunnel is named "${name}" on this relay.`);
    }
    if (found.state === "offline") {
      throw new PageError(503, "tunnel_offline", reconnectingMessage(name));
    }
    if (pagePath) return debugPage(name, debugId!, found.debug ?? false, c.get("url").protocol === "https:");
    c.set("tunnel", { name, session: found.session });
    await next();
  };
}

/** Requests per second per visitor address and per tunnel (429 with `Retry-After`). */
export function rateLimits(options: { ratePerIp: number; ratePerTunnel: number }): Middleware {
  const perIp = new RateLimiter(options.ratePerIp);
  const perTunnel = new RateLimiter(options.ratePerTunnel);
  return async function rateLimits(c, next) {
    const visitor = c.get("visitor");
    if (!perIp.take(visitor)) throw tooMany(`Too many requests from ${visitor}; slow down.`);
    const { name } = c.get("tunnel");
    if (!perTunnel.take(name)) throw tooMany(`Too many requests for "${name}"; slow down.`);
    await next();
  };
}

/** The tunnel's own rules, chosen by its client: IP lists (403) and basic auth (401). */
export function tunnelAccess(): Middleware {
  return async function tunnelAccess(c, next) {
    const { name, session } = c.get("tunnel");
    const refusal = await session.guard(name)?.(c as unknown as Context);
    if (refusal) return refusal;
    await next();
  };
}

/** How long a visitor of a paused tunnel is told to wait before trying again. */
const PAUSED_RETRY_AFTER_S = 30;

/**
 * A tunnel paused by its owner answers 503 with `Retry-After` and a short page (HTML for browsers);
 * one whose origin is down answers 502 at once, saying since when. Neither crosses the tunnel.
 */
export function tunnelCondition(): Middleware {
  return async function tunnelCondition(c, next) {
    const { name, session } = c.get("tunnel");
    const condition = session.condition(name);
    if (condition?.suspended) {
      const browser = (c.req.header("accept") ?? "").includes("text/html");
      return pausedPage(name, browser, PAUSED_RETRY_AFTER_S);
    }
    if (condition?.originDown) {
      const { since, message } = condition.originDown;
      throw new PageError(
        502,
        "origin_down",
        `The server behind "${name}" has not answered since ${new Date(since).toISOString()}` +
          `${message ? ` (${message})` : ""}; try again once it is back.`,
      );
    }
    await next();
  };
}

/** While the relay drains for shutdown, new requests get 503. */
export function drain(draining: () => boolean): Middleware {
  return async function drain(_c, next) {
    if (draining()) {
      throw new PageError(503, "relay_shutting_down", "The relay is restarting; try again in a moment.");
    }
    await next();
  };
}

/** Requests in flight, on the relay and on the tunnel (503 past either cap); counted until settled. */
export function inFlightCaps(
  counters: PublicCounters,
  limits: { maxInFlight: number; maxInFlightPerTunnel: number },
): Middleware {
  return async function inFlightCaps(c, next) {
    const { name } = c.get("tunnel");
    if (counters.inFlight >= limits.maxInFlight) {
      log.warn("relay overloaded: {inFlight} requests in flight", { inFlight: counters.inFlight });
      throw new PageError(503, "relay_overloaded", "The relay is busy; try again in a moment.");
    }
    if (counters.inFlightOn(name) >= limits.maxInFlightPerTunnel) {
      log.warn("tunnel {name} overloaded: {count} requests in flight", {
        name,
        count: counters.inFlightOn(name),
      });
      throw new PageError(503, "tunnel_overloaded", `The tunnel "${name}" is busy; try again in a moment.`);
    }
    const settle = counters.begin(name);
    c.set("settle", settle);
    try {
      await next();
    } finally {
      // A failure before the exchange took over (a throw) must not leave the request counted.
      if (c.error) c.get("settle")();
    }
  };
}

/** Only WebSocket upgrades cross a tunnel (501 for others; h2c is an offer a server may ignore). */
export function upgradePolicy(): Middleware {
  return async function upgradePolicy(c, next) {
    const upgrade = c.req.header("upgrade")?.toLowerCase();
    if (upgrade && upgrade !== "websocket" && upgrade !== "h2c") {
      throw new PageError(
        501,
        "upgrade_unsupported",
        `Upgrade to "${upgrade}" is not supported; only WebSocket is.`,
      );
    }
    if (upgrade === "websocket" && !c.env.acceptWebSocket) {
      throw new PageError(400, "bad_request", "This is not a valid WebSocket handshake.");
    }
    await next();
  };
}

/** How long a request holds its tunnel's fair-gate slot at most: slow requests are not busy ones. */
const FAIR_GATE_HOLD_MS = 10;

/** Waits for the tunnel's fair-gate slot (see `fair_gate.ts`); the slot goes back when the exchange settles. */
export function fairGate(options: { activePerTunnel: number; overloaded: () => boolean }): Middleware {
  const gate = new FairGate({
    slots: options.activePerTunnel,
    holdMs: FAIR_GATE_HOLD_MS,
    overloaded: options.overloaded,
  });
  return async function fairGate(c, next) {
    const release = await gate.enter(c.get("tunnel").name);
    const settle = c.get("settle");
    c.set("settle", () => {
      release();
      settle();
    });
    await next();
  };
}

/**
 * Sends the request (or WebSocket handshake) through the tunnel; the answer is the visitor's response. Each
 * request says `Via: 1.1 reverprox-<id>` (an id of this app's), so one that comes back (a tunnel whose origin
 * is the relay itself) is refused with 508 rather than sent round again.
 */
export function forwardToTunnel(options: { publicScheme: "http" | "https" }) {
  const hop = `1.1 reverprox-${crypto.randomUUID().slice(0, 8)}`;
  return function forwardToTunnel(c: Context<PublicEnv>): Promise<Response> {
    const { name, session } = c.get("tunnel");
    const acceptWebSocket = c.env.acceptWebSocket;
    const request = c.req.raw;
    if (request.headers.get("via")?.split(",").some((via) => via.trim() === hop)) {
      throw new PageError(
        508,
        "loop_detected",
        `This request came back through the relay: the tunnel "${name}" forwards to the relay itself.`,
      );
    }
    const head = requestHead(c, name, options.publicScheme, acceptWebSocket !== undefined, hop);
    return acceptWebSocket
      ? session.forwardWebSocket(head, acceptWebSocket, c.get("settle"))
      : session.forward(head, request.body, c.get("settle"), request.signal, c.env.incoming?.socket);
  };
}

/** The `request` frame for the visitor's request: end-to-end headers plus what the relay says of the visitor. */
function requestHead(
  c: Context<PublicEnv>,
  name: string,
  proto: "http" | "https",
  websocket: boolean,
  hop: string,
) {
  const url = c.get("url");
  const visitor = c.get("visitor");
  const head: FrameOf<"request"> = {
    type: "request",
    tunnel: name,
    method: c.req.method,
    target: url.pathname + url.search,
    headers: [
      ...withForwarded(
        // `Expect: 100-continue` was already answered by node:http; the origin gets the body directly.
        endToEndHeaders(c.get("headers")).filter(([key]) => key !== "expect"),
        { remoteAddr: visitor, proto, host: c.req.header("host") ?? "" },
      ),
      ["via", hop],
    ],
    remoteAddr: visitor,
    relayAt: Date.now(),
    ...(websocket ? { upgrade: "websocket" as const } : {}),
  };
  return head;
}

function tooMany(message: string): PageError {
  return new PageError(429, "rate_limited", message, { "retry-after": "1" });
}

/** Lowercased host without port or the root's trailing dot; `[::1]:8080` → `::1`, `api.localhost.` → `api.localhost`. */
export function hostName(hostHeader: string): string {
  const host = hostHeader.trim().toLowerCase();
  if (host.startsWith("[")) {
    return host.slice(1, host.indexOf("]") > 0 ? host.indexOf("]") : undefined);
  }
  const colon = host.lastIndexOf(":");
  return (colon >= 0 ? host.slice(0, colon) : host).replace(/\.$/, "");
}

/**
 * The tunnel label of `host` under `domain`: `api.tunnel.example.com` → `api`. `undefined` for the bare
 * domain (the relay's own pages), `null` for a host that is not the relay's (421); nested or malformed
 * labels come back as written, to be answered 404.
 */
export function tunnelName(host: string, domain: string): string | undefined | null {
  if (host === domain) return undefined;
  const suffix = `.${domain}`;
  if (!host.endsWith(suffix)) return null;
  const label = host.slice(0, -suffix.length);
  return label.length > 0 ? label : null;
}
