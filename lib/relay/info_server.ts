/**
 * What the relay's QUIC port number serves over TCP: its CA and domain at one
 * path, so a client can decide to trust it before its first handshake, and
 * the TCP transport's upgrade (`transport/upgrade.ts`) for clients whose UDP
 * is blocked. It
 * faces the internet like the public side, so it gets the same `node:http`
 * protections (head timeout, head cap, connection limits) and answers
 * nothing else.
 *
 * @example
 * ```ts
 * import { ConnectionLimits } from "./conn_limits.ts";
 * import type { Relay } from "./relay.ts";
 * declare const relay: Relay;
 * const limits = new ConnectionLimits({ total: 4096, perAddress: 256 });
 * const [quic, info] = await bindQuicAndInfo("0.0.0.0", 4433, {
 *   info: () => relay.info(),
 *   headerTimeoutMs: 10_000,
 *   admit: (address) => limits.admit(address),
 *   tunnel: (socket) => socket.destroy(), // the relay hands it to its TCP transport
 * });
 * ```
 * @module
 */
import { Hono } from "hono";
import { QuicServer } from "../transport/quic.ts";
import { errorPage } from "./public/pages.ts";
import {
  type PublicBindings,
  type PublicServer,
  type PublicServerOptions,
  servePublic,
} from "./public/server.ts";

/** Time and size a visitor of the info port gets: one small GET. */
const INFO_SERVER_LIMITS = { headerTimeoutMs: 5_000, maxHeadBytes: 8 * 1024, keepAliveTimeoutMs: 5_000 };

/** How many times a free QUIC port is picked before giving up on finding its TCP twin free too. */
const PORT_PICKS = 20;

function relayInfoApp(
  info: () => Record<string, unknown>,
  longPoll?: Hono<{ Bindings: PublicBindings }>,
): Hono<{ Bindings: PublicBindings }> {
  const app = new Hono<{ Bindings: PublicBindings }>();
  app.get("/.well-known/reverprox.json", (c) => c.json(info()));
  if (longPoll) app.route("/", longPoll);
  app.all(
    "*",
    () => errorPage(404, "not_found", "This port serves /.well-known/reverprox.json and long-polling only."),
  );
  return app;
}

/**
 * Binds the QUIC endpoint (UDP) and the info server on the same port number (TCP). With port 0 the
 * UDP port is picked first; its TCP twin may be taken, so that case tries again with another pick.
 */
export async function bindQuicAndInfo(
  hostname: string,
  port: number,
  options: {
    info: () => Record<string, unknown>;
    headerTimeoutMs: number;
    admit: (address: string) => (() => void) | undefined;
    /** Long-polling's routes (`longpoll.ts`), when the relay serves it. */
    longPoll?: Hono<{ Bindings: PublicBindings }>;
    /** Takes the TCP transport's upgrades on the TCP twin. */
    tunnel: PublicServerOptions["tunnel"];
  },
): Promise<[QuicServer, PublicServer]> {
  const app = relayInfoApp(options.info, options.longPoll);
  for (let attempt = 1;; attempt++) {
    const quic = QuicServer.bind(hostname, port);
    try {
      const server = await servePublic(app.fetch, {
        hostname,
        port: quic.port,
        admit: options.admit,
        tunnel: options.tunnel,
        ...INFO_SERVER_LIMITS,
        headerTimeoutMs: Math.min(INFO_SERVER_LIMITS.headerTimeoutMs, options.headerTimeoutMs),
      });
      return [quic, server];
    } catch (error) {
      quic.close();
      if (port !== 0 || !(error instanceof Deno.errors.AddrInUse) || attempt === PORT_PICKS) throw error;
    }
  }
}
