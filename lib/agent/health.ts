/**
 * Whether each tunnel's origin answers: probed every few seconds (a TCP
 * connect, or for http tunnels with a health path a GET that must answer
 * 2xx/3xx), and told by the requests themselves (a refused connection).
 * Only changes are reported: down once, up once.
 *
 * @example
 * ```ts
 * const health = new OriginHealth(5_000, (key, state) => console.log(key, state.up));
 * health.watch("http:api", { origin: { protocol: "http:", hostname: "127.0.0.1", port: 3000 } });
 * health.stop();
 * ```
 * @module
 */
import http from "node:http";
import https from "node:https";
import { withTimeout } from "../shared/async.ts";
import { type Origin, originLabel } from "./origin.ts";

/** What to probe for one tunnel. */
export interface HealthCheck {
  origin: Origin;
  /** For http tunnels: a path that must answer 2xx or 3xx; without it, a TCP connect is enough. */
  path?: string;
}

export interface HealthState {
  /** Undefined until first known. */
  up?: boolean;
  /** When it last changed (ms since the epoch). */
  since: number;
  /** Why it is down. */
  reason?: string;
}

/** Longest one probe may take before it counts as down. */
const PROBE_TIMEOUT_MS = 2_000;

export class OriginHealth {
  #watched = new Map<
    string,
    { check: HealthCheck; state: HealthState; timer: ReturnType<typeof setInterval> }
  >();

  constructor(
    private readonly intervalMs: number,
    /** Told of each change, with whether the origin was up before (undefined: not known yet). */
    private readonly onChange: (key: string, state: HealthState, wasUp: boolean | undefined) => void,
  ) {}

  /** Probes `check` now and every interval, under `key`. */
  watch(key: string, check: HealthCheck): void {
    this.unwatch(key);
    const timer = setInterval(() => this.#probe(key), this.intervalMs);
    this.#watched.set(key, { check, state: { since: Date.now() }, timer });
    this.#probe(key);
  }

  unwatch(key: string): void {
    const watched = this.#watched.get(key);
    if (watched) clearInterval(watched.timer);
    this.#watched.delete(key);
  }

  state(key: string): HealthState | undefined {
    return this.#watched.get(key)?.state;
  }

  /** What a request learned: the origin answered, or refused the connection. */
  report(key: string, up: boolean, reason?: string): void {
    const watched = this.#watched.get(key);
    if (!watched || watched.state.up === up) return;
    const wasUp = watched.state.up;
    watched.state = { up, since: Date.now(), reason: up ? undefined : reason };
    this.onChange(key, watched.state, wasUp);
  }

  stop(): void {
    for (const key of [...this.#watched.keys()]) this.unwatch(key);
  }

  async #probe(key: string) {
    const watched = this.#watched.get(key);
    if (!watched) return;
    const reason = await withTimeout(probe(watched.check), PROBE_TIMEOUT_MS, "health probe")
      .catch((error) => `no answer (${error instanceof Error ? error.message : error})`);
    this.report(key, reason === undefined, reason);
  }
}

/** Undefined when the origin answers as it should, else why not. */
async function probe(check: HealthCheck): Promise<string | undefined> {
  const { origin, path } = check;
  if (!path) {
    try {
      (await Deno.connect({ hostname: origin.hostname, port: origin.port })).close();
      return undefined;
    } catch (error) {
      return `nothing answers at ${originLabel(origin)} (${(error as Error).message})`;
    }
  }
  const status = await httpStatus(origin, path);
  return typeof status === "string" ? status : status < 400 ? undefined : `GET ${path} answered ${status}`;
}

/** The status of `GET path` on the origin, or why there is none. */
function httpStatus(origin: Origin, path: string): Promise<number | string> {
  return new Promise((resolve) => {
    const request = (origin.protocol === "https:" ? https : http).get({
      hostname: origin.hostname,
      port: origin.port,
      path,
      agent: false,
      // The origin is the developer's own server; dev certificates are usually self-signed.
      rejectUnauthorized: false,
    }, (response) => {
      response.resume();
      resolve(response.statusCode ?? 0);
    });
    request.on("error", (error) => resolve(`GET ${path} failed (${error.message})`));
  });
}
