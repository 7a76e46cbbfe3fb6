/**
 * The relay's public HTTP side: a Hono app that picks the tunnel from the Host
 * header (`<name>.<domain>`), applies the relay's caps and the tunnel's access
 * rules, and hands the request to its owner; or answers with a plain page and
 * the right status. Each concern is one middleware (`middleware.ts`), in the
 * order a request meets them; a refusal is a thrown {@link PageError} that the
 * one error handler turns into its page.
 *
 * @example
 * ```ts
 * import { ConnectionLimits } from "../conn_limits.ts";
 * import { TunnelRegistry } from "../registry.ts";
 * import { servePublic } from "./server.ts";
 * declare const limits: PublicLimits;
 * const registry = new TunnelRegistry<TunnelSession>(60_000);
 * const app = createPublicApp({
 *   ...limits,
 *   domain: "tunnel.example.com",
 *   publicScheme: "http",
 *   lookup: (name) => registry.lookup(name),
 *   info: () => ({ relay: "reverprox" }),
 *   stats: () => ({ clients: 0 }),
 *   draining: () => false,
 *   overloaded: () => false,
 * });
 * const connections = new ConnectionLimits({ total: 4096, perAddress: 256 });
 * await servePublic(app.fetch, {
 *   hostname: "0.0.0.0",
 *   port: 8080,
 *   headerTimeoutMs: 10_000,
 *   maxHeadBytes: 48_000,
 *   admit: (address) => connections.admit(address),
 * });
 * ```
 * @module
 */
import { Hono } from "hono";
import { getConnInfo } from "@hono/node-server/conninfo";
import type { FrameOf } from "../../wire/protocol.ts";
import { getLogger } from "../../shared/log.ts";
import type { Lookup } from "../registry.ts";
import type { AccessGuard } from "./access.ts";
import type { AcceptWebSocket, PublicBindings } from "./server.ts";
import type { LaneOwner } from "../lanes.ts";
import { errorPage, PageError } from "./pages.ts";
import { PublicCounters } from "./counters.ts";
import {
  drain,
  fairGate,
  forwardToTunnel,
  hostRouting,
  inFlightCaps,
  type PublicEnv,
  rateLimits,
  requestCaps,
  tunnelAccess,
  tunnelCondition,
  upgradePolicy,
} from "./middleware.ts";

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
    /** The visitor's connection: its requests share one long-lived stream to the client. */
    visitor?: LaneOwner,
  ): Promise<Response>;
  /** Same, for a WebSocket handshake: `accept` completes the visitor's side once the origin accepts. */
  forwardWebSocket(
    head: FrameOf<"request">,
    accept: AcceptWebSocket,
    onSettled: () => void,
  ): Promise<Response>;
  /** The client's access rules for tunnel `name` (IP list, basic auth), if any. */
  guard(name: string): AccessGuard | undefined;
  /** Whether tunnel `name` is paused by its owner or its origin is down; undefined when neither. */
  condition(name: string): TunnelCondition | undefined;
}

/** What the relay knows of a tunnel that stops it forwarding there. */
export interface TunnelCondition {
  suspended: boolean;
  /** Since when (ms since the epoch) the client says its origin does not answer, and why. */
  originDown?: { since: number; message?: string };
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
  /** Requests one tunnel may have in progress while the relay is overloaded and shared (see `fair_gate.ts`). */
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
  /**
   * Who holds tunnel `name`; with the debug id a request carries, its debug receiver when one is
   * attached (`debug: true`), see `../debug_routes.ts`.
   */
  lookup(name: string, debugId?: string): Lookup<TunnelSession> & { debug?: true };
  /** What the bare domain's `/.well-known/reverprox.json` says (CA, version). */
  info(): object;
  /** The sign-up API served on the bare domain under `/api/`, when the relay keeps accounts. */
  accounts?: Hono;
  /** The long-polling routes (`POST /auth`, `/register`, `/`) served on the bare domain, when the relay has them. */
  longPollRoutes?: Hono<{ Bindings: PublicBindings }>;
  /** Relay-wide counters for the status page. */
  stats(): Record<string, number>;
  /** True while the relay drains for shutdown. */
  draining(): boolean;
  /** True while the relay is short of time; tunnels are then held to `activePerTunnel` each. */
  overloaded(): boolean;
}

/** Builds the public app; `counters` is where its requests in flight are counted (the status page reads them). */
export function createPublicApp(options: PublicAppOptions, counters = new PublicCounters()): Hono<PublicEnv> {
  const app = new Hono<PublicEnv>();
  app.use(requestCaps(options));
  app.use(
    hostRouting({
      domain: options.domain,
      lookup: options.lookup,
      relayPages: relayPages(options, counters),
    }),
  );
  app.use(rateLimits(options));
  app.use(tunnelAccess());
  app.use(tunnelCondition());
  app.use(drain(options.draining));
  app.use(inFlightCaps(counters, options));
  app.use(upgradePolicy());
  app.use(fairGate(options));
  app.all("*", forwardToTunnel(options));
  app.onError((error, c) => {
    if (error instanceof PageError) {
      log.info("{status} for {visitor}: {message}", {
        status: error.status,
        visitor: getConnInfo(c).remote.address,
        message: error.message,
      });
      return error.page();
    }
    log.error("request failed: {error}", { error });
    return errorPage(502, "client_failed", "The tunnel failed while forwarding the request.");
  });
  return app;
}

/** The relay's own pages on its bare domain: its CA, its counters, the sign-up API. */
function relayPages(options: PublicAppOptions, counters: PublicCounters): Hono<PublicEnv> {
  const pages = new Hono<PublicEnv>();
  pages.get("/.well-known/reverprox.json", (c) => c.json(options.info()));
  // Counters for operators and the fuzz campaign: in-flight must drop back to 0 when idle.
  pages.get(
    "/.well-known/reverprox/status",
    (c) => c.json({ inFlight: counters.inFlight, ...options.stats() }),
  );
  pages.all("/api/*", (c) => options.accounts ? options.accounts.fetch(c.req.raw, c.env) : c.notFound());
  const longPoll = options.longPollRoutes;
  if (longPoll) {
    pages.on(["POST", "DELETE"], ["/", "/auth", "/register"], (c) => longPoll.fetch(c.req.raw, c.env));
  }
  pages.all("*", (c) => c.text(`reverprox relay for *.${options.domain}\n`));
  return pages;
}
