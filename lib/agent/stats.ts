/**
 * Per-tunnel request statistics for `reverprox ls` and the dashboard:
 * requests answered, and p50/p90 of the latest durations, from the agent's
 * `request-done` events.
 *
 * @example
 * ```ts
 * import { AgentEvents } from "./events.ts";
 * const events = new AgentEvents();
 * const stats = new TunnelStats(events);
 * events.emit("request-done", { id: "1", tunnel: "api", status: 200, durationMs: 4, requestBytes: 0, responseBytes: 2 });
 * stats.of("api"); // { requests: 1, p50Ms: 4, p90Ms: 4 }
 * ```
 * @module
 */
import type { AgentEvents } from "./events.ts";

/** Durations kept per tunnel for its percentiles: recent enough to follow changes, small enough to sort. */
const KEPT_DURATIONS = 1024;

export interface TunnelNumbers {
  requests: number;
  /** Median and 90th percentile of recent request durations, ms; null before any request. */
  p50Ms: number | null;
  p90Ms: number | null;
}

export class TunnelStats {
  #byTunnel = new Map<string, { requests: number; durations: number[]; next: number }>();

  constructor(events: AgentEvents) {
    events.on("request-done", ({ tunnel, durationMs }) => this.#add(tunnel, durationMs));
  }

  of(tunnel: string): TunnelNumbers {
    const entry = this.#byTunnel.get(tunnel);
    if (!entry) return { requests: 0, p50Ms: null, p90Ms: null };
    const sorted = [...entry.durations].sort((a, b) => a - b);
    const at = (q: number) => round(sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]);
    return { requests: entry.requests, p50Ms: at(0.5), p90Ms: at(0.9) };
  }

  /** Forgets a tunnel that was removed. */
  forget(tunnel: string): void {
    this.#byTunnel.delete(tunnel);
  }

  #add(tunnel: string, durationMs: number) {
    let entry = this.#byTunnel.get(tunnel);
    if (!entry) this.#byTunnel.set(tunnel, entry = { requests: 0, durations: [], next: 0 });
    entry.requests++;
    // A ring: once full, each new duration replaces the oldest.
    entry.durations[entry.next] = durationMs;
    entry.next = (entry.next + 1) % KEPT_DURATIONS;
  }
}

function round(ms: number): number {
  return Math.round(ms * 10) / 10;
}
