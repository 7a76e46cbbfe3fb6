/**
 * The tunnels an agent holds: what each asks the relay for, what the relay
 * granted, the pool it reaches its origin through, and whether that origin
 * answers. Tunnels are kept by name and may come and go while the agent runs.
 *
 * @example
 * ```ts
 * import { parseOrigin } from "./origin.ts";
 * const tunnel = new Tunnel({ kind: "http", name: "api", origin: parseOrigin("3000") });
 * tunnel.granted({ kind: "http", name: "api", url: "http://api.tunnel.example.com" });
 * tunnel.route; // "http:api"
 * ```
 * @module
 */
import type http from "node:http";
import type { TunnelAccess, TunnelGrant, TunnelRequest } from "../wire/protocol.ts";
import { type Origin, originAgent, originLabel } from "./origin.ts";
import type { TunnelStatus } from "./events.ts";

/** One tunnel to ask for. */
export interface TunnelSpec {
  kind: "http" | "tcp";
  /** Subdomain, for http tunnels. */
  name?: string;
  /** Public port to ask for, for tcp tunnels; kept across reconnects once granted. */
  remotePort?: number;
  /** Who may use an http tunnel; the relay checks it. */
  access?: TunnelAccess;
  origin: Origin;
  /** For http tunnels: a path that must answer 2xx/3xx for the origin to count as up. */
  healthPath?: string;
  /** For http tunnels: attach to `name`, held by another client, as its debug receiver. */
  debug?: boolean;
}

export class Tunnel {
  /** What the relay granted on the current connection. */
  grant?: TunnelGrant;
  /** Keep-alive connections to the origin, shared by the tunnel's requests (http tunnels). */
  readonly pool?: http.Agent;
  /** Paused by its owner: the relay keeps its name and answers visitors with a "paused" page. */
  suspended = false;
  /** When it last changed state (granted, paused, resumed), ms since the epoch. */
  since = Date.now();
  /** Aborted to close the tunnel's open WebSockets and TCP connections (paused or removed). */
  #channels = new AbortController();

  constructor(readonly spec: TunnelSpec) {
    if (spec.kind === "http") this.pool = originAgent(spec.origin);
  }

  /** The name people use for it: the subdomain, or the public port of a TCP tunnel once granted. */
  get name(): string {
    return this.grant?.name ?? this.spec.name ?? (this.spec.remotePort ? String(this.spec.remotePort) : "");
  }

  /** What the relay routes on: `http:<name>` or `tcp:<port>`, once granted. */
  get route(): string | undefined {
    return this.grant && `${this.grant.kind}:${this.grant.name}`;
  }

  /** Where requests go, as people write it: `http://localhost:3000`, `127.0.0.1:5432`. */
  get target(): string {
    const { kind, origin } = this.spec;
    return kind === "http" ? `${origin.protocol}//${originLabel(origin)}` : originLabel(origin);
  }

  /** Aborts when the tunnel's long-lived channels must close: it was paused or removed. */
  get channels(): AbortSignal {
    return this.#channels.signal;
  }

  /** What to ask the relay for: a TCP tunnel keeps the port it was granted before. */
  request(): TunnelRequest {
    const { kind, name, remotePort, access, debug } = this.spec;
    return {
      kind,
      name,
      remotePort: this.grant?.remotePort ?? remotePort,
      access,
      suspended: this.suspended || undefined,
      debug: debug || undefined,
    };
  }

  granted(grant: TunnelGrant): void {
    this.grant = grant;
    this.since = Date.now();
  }

  /** Pauses or resumes it; pausing closes its open WebSockets and TCP connections. */
  setSuspended(suspended: boolean): void {
    this.suspended = suspended;
    this.since = Date.now();
    if (suspended) this.#closeChannels("paused");
  }

  status(): TunnelStatus {
    return {
      name: this.name,
      kind: this.spec.kind,
      url: this.grant?.url,
      debugId: this.grant?.debugId,
      target: this.target,
      suspended: this.suspended,
    };
  }

  /** Lets go of the tunnel's origin connections and open channels. */
  close(): void {
    this.#closeChannels("removed");
    this.pool?.destroy();
  }

  #closeChannels(why: string) {
    this.#channels.abort(why);
    this.#channels = new AbortController();
  }
}
