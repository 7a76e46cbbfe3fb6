/**
 * What an agent says about itself, as typed events: the request log, the
 * terminal dashboard, the inspector and the control API all subscribe to
 * these, and nothing else reaches into the agent.
 *
 * @example
 * ```ts
 * const events = new AgentEvents();
 * const off = events.on("request-done", (done) => console.log(done.status, done.durationMs));
 * events.emit("request-done", { id: "1", tunnel: "api", status: 200, durationMs: 3, requestBytes: 0, responseBytes: 5 });
 * off();
 * ```
 * @module
 */
import type { ErrorCode } from "../wire/protocol.ts";
import type { HeaderPairs } from "../shared/headers.ts";
import { getLogger } from "../shared/log.ts";

const log = getLogger(["reverprox", "agent"]);

/** The relay and transport an agent is connected through. */
export interface LinkInfo {
  relay: string;
  transport: string;
  fingerprint: string;
}

/** A tunnel as the agent holds it. */
export interface TunnelStatus {
  name: string;
  kind: "http" | "tcp";
  /** Public URL, once the relay granted it. */
  url?: string;
  /** Where requests go: `http://localhost:3000`, `127.0.0.1:5432`. */
  target: string;
  /** Held paused by its owner: the relay answers visitors with a "paused" page. */
  suspended: boolean;
  /** A debug receiver's id: requests marked with it come here (`X-Reverprox-Debug`, or its URL's cookie). */
  debugId?: string;
}

/** Every event, by name, with what it carries. */
export interface AgentEventMap {
  /** The relay accepted the tunnels (first time and after each reconnect). */
  online: { link: LinkInfo; tunnels: TunnelStatus[] };
  /** The link is down and the agent will try again after `inMs`. */
  reconnecting: { reason: string; inMs: number; attempt: number };
  /** The agent stopped for good: asked to, or refused. */
  offline: { reason: string };
  /** A tunnel was added to, or removed from, the live agent. */
  "tunnel-added": TunnelStatus;
  "tunnel-removed": { name: string };
  /** A tunnel was paused or resumed. */
  "tunnel-state": { name: string; suspended: boolean };
  /** A visitor's request reached the agent; `id` ties the later events to it. */
  "request-started": {
    id: string;
    tunnel: string;
    method: string;
    target: string;
    headers: HeaderPairs;
    remoteAddr: string;
    websocket: boolean;
    /** When the relay had the request head (ms since the epoch), when it said. */
    relayAt?: number;
    /** The id of the request this one replays, for replays from the inspector. */
    replayOf?: string;
  };
  /** The origin's response head. */
  "response-head": { id: string; tunnel: string; status: number; headers: HeaderPairs };
  /** Bytes of a body as they pass: the visitor's upload (`request`) or the origin's answer (`response`). */
  "body-bytes": { id: string; direction: "request" | "response"; bytes: Uint8Array };
  /** One WebSocket message: `in` from the visitor to the origin, `out` from the origin to the visitor. */
  "ws-message": { id: string; tunnel: string; direction: "in" | "out"; binary: boolean; data: Uint8Array };
  /** The exchange is over. `error` says why it failed, when it did. */
  "request-done": {
    id: string;
    tunnel: string;
    status: number;
    durationMs: number;
    requestBytes: number;
    responseBytes: number;
    error?: { code: ErrorCode; message: string };
  };
  /** A visitor's TCP connection through a tunnel reached the agent, or has ended. */
  connection: { tunnel: string; kind: "tcp"; open: boolean };
  /** A tunnel's origin stopped answering, or answers again. */
  "origin-down": { tunnel: string; target: string; reason: string };
  "origin-up": { tunnel: string; target: string };
}

export type AgentEventName = keyof AgentEventMap;
type Listener<K extends AgentEventName> = (event: AgentEventMap[K]) => void;

/** A small typed event hub. Listeners run in order; one that throws is logged and the rest still run. */
export class AgentEvents {
  #listeners = new Map<AgentEventName, Set<Listener<never>>>();

  /** Subscribes to `name`; returns the unsubscribe. */
  on<K extends AgentEventName>(name: K, listener: Listener<K>): () => void {
    let set = this.#listeners.get(name);
    if (!set) this.#listeners.set(name, set = new Set());
    set.add(listener as Listener<never>);
    return () => set.delete(listener as Listener<never>);
  }

  /** Whether anyone listens to `name`: senders of costly events (body bytes) check first. */
  wants(name: AgentEventName): boolean {
    return (this.#listeners.get(name)?.size ?? 0) > 0;
  }

  emit<K extends AgentEventName>(name: K, event: AgentEventMap[K]): void {
    for (const listener of this.#listeners.get(name) ?? []) {
      try {
        (listener as Listener<K>)(event);
      } catch (error) {
        // A subscriber's bug (a log sink, a screen) must not break the tunnel it watches.
        log.error("a listener of {name} failed: {error}", { name, error: String(error) });
      }
    }
  }
}
