/**
 * The running agent as its control API sees it (`control.ts`): tunnels as
 * `reverprox ls` shows them (state, origin health, request counts and
 * latencies), and the changes the API may ask for, with their refusals as
 * stable error codes.
 *
 * @example
 * ```ts
 * import { Agent } from "./agent.ts";
 * declare const agent: Agent;
 * const control = new AgentController(agent, { version: "0.3.0", relay: "127.0.0.1:4433", api: () => "http://127.0.0.1:4040" });
 * control.list(); // [{ name: "api", state: "online", health: "up", … }]
 * ```
 * @module
 */
import { isValidName, randomName } from "../shared/names.ts";
import { type Agent, TunnelRefused } from "./agent.ts";
import {
  type AddTunnel,
  type AgentControl,
  type AgentStatus,
  ControlError,
  type TunnelState,
  type TunnelView,
} from "./control.ts";
import { parseTarget, TargetError } from "./origin.ts";
import { TunnelStats } from "./stats.ts";
import type { Tunnel, TunnelSpec } from "./tunnels.ts";

export class AgentController implements AgentControl {
  readonly events;
  readonly #stats;

  constructor(
    private readonly agent: Agent,
    private readonly about: { version: string; relay: string; api: () => string },
  ) {
    this.events = agent.events;
    this.#stats = new TunnelStats(agent.events);
  }

  status(): AgentStatus {
    const link = this.agent.link;
    return {
      pid: Deno.pid,
      version: this.about.version,
      relay: this.about.relay,
      transport: link.state === "online" ? link.transport ?? null : null,
      rttMs: link.state === "online" && link.rttMs !== undefined ? Math.round(link.rttMs * 100) / 100 : null,
      state: link.state,
      ...(link.reason && link.state !== "online" ? { reason: link.reason } : {}),
      since: new Date(link.since).toISOString(),
      tunnels: this.agent.tunnels.length,
      api: this.about.api(),
    };
  }

  list(): TunnelView[] {
    return this.agent.tunnels.map((tunnel) => this.#view(tunnel));
  }

  async add(request: AddTunnel): Promise<TunnelView> {
    const spec = toSpec(request);
    if (spec.name && this.#named(spec.name)) {
      throw new ControlError("tunnel_exists", `a tunnel named "${spec.name}" exists`);
    }
    try {
      return this.#view(await this.agent.addTunnel(spec));
    } catch (error) {
      if (error instanceof TunnelRefused) {
        throw new ControlError("relay_refused", `${error.message} (${error.code})`);
      }
      throw error;
    }
  }

  async remove(name: string): Promise<void> {
    await this.agent.removeTunnel(this.#tunnel(name));
    this.#stats.forget(name);
  }

  suspend(name: string): Promise<TunnelView> {
    return this.#setSuspended(name, true);
  }

  resume(name: string): Promise<TunnelView> {
    return this.#setSuspended(name, false);
  }

  async #setSuspended(name: string, suspended: boolean): Promise<TunnelView> {
    const tunnel = this.#tunnel(name);
    await this.agent.setSuspended(tunnel, suspended);
    return this.#view(tunnel);
  }

  #named(name: string): Tunnel | undefined {
    return this.agent.tunnels.find((tunnel) => tunnel.name === name);
  }

  #tunnel(name: string): Tunnel {
    const tunnel = this.#named(name);
    if (!tunnel) throw new ControlError("unknown_tunnel", `no tunnel named "${name}"`);
    return tunnel;
  }

  #view(tunnel: Tunnel): TunnelView {
    const link = this.agent.link;
    const health = this.agent.healthOf(tunnel);
    const state: TunnelState = tunnel.suspended
      ? "suspended"
      : link.state === "online" && tunnel.grant
      ? "online"
      : link.state === "offline"
      ? "offline"
      : "reconnecting";
    const since = state === "online" || state === "suspended"
      ? Math.max(tunnel.since, link.since)
      : link.since;
    return {
      name: tunnel.name,
      kind: tunnel.spec.kind,
      url: tunnel.grant?.url ?? null,
      target: tunnel.target,
      state,
      health: health?.up === undefined ? "unknown" : health.up ? "up" : "down",
      ...(health?.up === false && health.reason ? { healthReason: health.reason } : {}),
      ...this.#stats.of(tunnel.name),
      since: new Date(since).toISOString(),
    };
  }
}

/** The tunnel an API request asks for, checked; a random readable name for an http tunnel without one. */
function toSpec(request: AddTunnel): TunnelSpec {
  if (request.kind === "http" && request.name !== undefined && !isValidName(request.name)) {
    throw new ControlError(
      "bad_request",
      `"${request.name}" is not a valid name: use a-z, 0-9 and inner "-", up to 63`,
    );
  }
  try {
    return {
      kind: request.kind,
      name: request.kind === "http" ? request.name ?? randomName() : undefined,
      origin: parseTarget(request.kind, request.target),
      remotePort: request.options?.remotePort,
      access: request.options?.access,
      healthPath: request.options?.healthPath,
      debug: request.options?.debug,
    };
  } catch (error) {
    if (error instanceof TargetError) throw new ControlError("bad_request", error.message);
    throw error;
  }
}
