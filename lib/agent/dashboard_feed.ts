/**
 * What the dashboard shows beyond `reverprox ls`, built from the agent's
 * events: the last requests as they happen (a row when one starts, its
 * status when the origin answers, duration and size when it is over), and
 * the connections open per tunnel (HTTP requests in flight, TCP connections).
 *
 * @example
 * ```ts
 * import { AgentEvents } from "./events.ts";
 * const events = new AgentEvents();
 * const feed = new DashboardFeed(events, () => console.log("redraw"));
 * events.emit("connection", { tunnel: "5432", kind: "tcp", open: true });
 * feed.open(); // { "5432": 1 }
 * feed.close();
 * ```
 * @module
 */
import type { RequestLine } from "./dashboard_view.ts";
import type { AgentEventName, AgentEvents } from "./events.ts";

/** Requests kept for the list: more than any terminal has rows. */
const KEPT_REQUESTS = 200;

/** Events that change the screen: the feed's own, and states, health and the link. */
const REDRAW_EVENTS: AgentEventName[] = [
  "request-started",
  "response-head",
  "request-done",
  "connection",
  "tunnel-removed",
  "online",
  "reconnecting",
  "offline",
  "tunnel-added",
  "tunnel-state",
  "origin-down",
  "origin-up",
];

export class DashboardFeed {
  /** Newest first. */
  #requests: (RequestLine & { id: string })[] = [];
  /** Requests in flight by id, with their tunnel: what is open even once its row scrolled away. */
  #inFlight = new Map<string, string>();
  #tcpOpen = new Map<string, number>();
  #tcpTotal = new Map<string, number>();
  #off: (() => void)[];

  /** Follows `events`; `changed` is called after each change worth a redraw. */
  constructor(events: AgentEvents, changed: () => void) {
    this.#off = [
      events.on("request-started", ({ id, tunnel, method, target, websocket }) => {
        this.#inFlight.set(id, tunnel);
        this.#requests.unshift({ id, at: Date.now(), tunnel, method, path: target, websocket });
        this.#requests.length = Math.min(this.#requests.length, KEPT_REQUESTS);
      }),
      events.on("response-head", ({ id, status }) => this.#update(id, { status })),
      events.on("request-done", ({ id, status, durationMs, responseBytes, error }) => {
        this.#inFlight.delete(id);
        this.#update(id, { status, durationMs, bytes: responseBytes, error: error?.code });
      }),
      events.on("connection", ({ tunnel, open }) => {
        this.#tcpOpen.set(tunnel, (this.#tcpOpen.get(tunnel) ?? 0) + (open ? 1 : -1));
        if (open) this.#tcpTotal.set(tunnel, (this.#tcpTotal.get(tunnel) ?? 0) + 1);
      }),
      events.on("tunnel-removed", ({ name }) => {
        this.#tcpOpen.delete(name);
        this.#tcpTotal.delete(name);
      }),
    ];
    // Subscribed after the feed's own listeners, so a redraw sees what the event changed.
    for (const name of REDRAW_EVENTS) this.#off.push(events.on(name, changed));
  }

  /** The last requests, newest first. */
  requests(): RequestLine[] {
    return this.#requests;
  }

  /** Open connections per tunnel: HTTP requests in flight plus TCP connections. */
  open(): Record<string, number> {
    const open: Record<string, number> = Object.fromEntries(this.#tcpOpen);
    for (const tunnel of this.#inFlight.values()) open[tunnel] = (open[tunnel] ?? 0) + 1;
    return open;
  }

  /** TCP connections per tunnel since the feed started. */
  connections(): Record<string, number> {
    return Object.fromEntries(this.#tcpTotal);
  }

  close(): void {
    for (const off of this.#off) off();
  }

  #update(id: string, change: Partial<RequestLine>) {
    const row = this.#requests.find((request) => request.id === id);
    if (row) Object.assign(row, change);
  }
}
