/**
 * What the control API (and through it the CLI, the dashboard and the
 * inspector) may ask of a running agent, and the errors it answers with:
 * each has a stable code scripts can match on and the HTTP status it maps to.
 *
 * @example
 * ```ts
 * throw new ControlError("unknown_tunnel", `no tunnel named "api"`);
 * ```
 * @module
 */
import type { TunnelAccess } from "../wire/protocol.ts";
import type { AgentEvents } from "./events.ts";

/** Stable error codes of the control API, with their HTTP status. */
export const CONTROL_ERRORS = {
  bad_request: 400,
  forbidden_host: 403,
  forbidden_origin: 403,
  unknown_tunnel: 404,
  not_found: 404,
  method_not_allowed: 405,
  tunnel_exists: 409,
  relay_refused: 409,
  unsupported_media_type: 415,
  body_too_large: 413,
  not_connected: 503,
} as const;
export type ControlErrorCode = keyof typeof CONTROL_ERRORS;

/** A refusal of the control API, answered as `{"error": {"code", "message"}}` with its status. */
export class ControlError extends Error {
  constructor(readonly code: ControlErrorCode, message: string) {
    super(message);
    this.name = "ControlError";
  }

  get status(): number {
    return CONTROL_ERRORS[this.code];
  }
}

export type TunnelState = "online" | "suspended" | "reconnecting" | "offline";
export type HealthWord = "up" | "down" | "unknown";

/** One tunnel as `reverprox ls` shows it. */
export interface TunnelView {
  name: string;
  kind: "http" | "tcp";
  url: string | null;
  target: string;
  state: TunnelState;
  health: HealthWord;
  /** Why the origin is down, when it is. */
  healthReason?: string;
  requests: number;
  p50Ms: number | null;
  p90Ms: number | null;
  /** When the tunnel entered its state (ISO 8601). */
  since: string;
}

/** The agent as `reverprox agent status` shows it. */
export interface AgentStatus {
  pid: number;
  version: string;
  relay: string;
  transport: string | null;
  /** Round-trip time to the relay from the latest heartbeat, ms; null until known or while offline. */
  rttMs: number | null;
  state: "online" | "reconnecting" | "offline";
  /** Why it is not online, when it is not. */
  reason?: string;
  since: string;
  tunnels: number;
  api: string;
}

/** A tunnel to add, as the API takes it. */
export interface AddTunnel {
  kind: "http" | "tcp";
  /** http: the subdomain (random when left out); tcp: ignored, the port is the name. */
  name?: string;
  /** `3000`, `host:port` or a URL. */
  target: string;
  options?: {
    remotePort?: number;
    access?: TunnelAccess;
    /** http: a path that must answer 2xx/3xx for the origin to count as up. */
    healthPath?: string;
    /** http: attach to tunnel `name`, held by another client, as its debug receiver. */
    debug?: boolean;
  };
}

/** What a running agent lets its control API do. */
export interface AgentControl {
  readonly events: AgentEvents;
  status(): AgentStatus;
  list(): TunnelView[];
  /** Adds a tunnel on the live connection; resolves once the relay granted it (or the agent is offline). */
  add(tunnel: AddTunnel): Promise<TunnelView>;
  /** Removes a tunnel; its name is free at once. */
  remove(name: string): Promise<void>;
  suspend(name: string): Promise<TunnelView>;
  resume(name: string): Promise<TunnelView>;
}
