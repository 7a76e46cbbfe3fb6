/**
 * What the `reverprox` commands do, once `client.ts` has parsed them: run an
 * agent here (in the foreground, or as the background agent), or hand tunnels
 * to the agent already running and follow them, and show tunnels as a table.
 *
 * @example
 * ```ts
 * declare const settings: AgentSettings;
 * const code = await runAgentHere(settings, [{ kind: "http", name: "api", target: "3000" }], {
 *   api: { hostname: "127.0.0.1", port: 4040 },
 *   originTimeoutMs: 60_000,
 *   healthIntervalMs: 5_000,
 *   inspect: { maxEntries: 500, maxBodyBytes: 1 << 20 },
 * });
 * ```
 * @module
 */
import { join } from "node:path";
import { getLogger } from "../shared/log.ts";
import { hostPort } from "../shared/host_port.ts";
import { VERSION } from "../shared/version.ts";
import { Agent, AgentError } from "./agent.ts";
import { AgentController } from "./agent_control.ts";
import { type ControlApi, serveControlApi } from "./api.ts";
import { AgentApiClient, ApiError } from "./api_client.ts";
import { clearAgentState, findAgent, writeAgentState } from "./daemon.ts";
import { showDashboard } from "./dashboard.ts";
import type { AddTunnel, TunnelView } from "./control.ts";
import { AgentEvents, type TunnelStatus } from "./events.ts";
import { type InspectorLimits, InspectorStore } from "./inspector/store.ts";
import { inspectorRoutes } from "./inspector/routes.ts";
import { relayConnector, type TransportChoice, TRANSPORTS } from "./link.ts";
import { printRequestLog } from "./request_log.ts";
import { parseServerUrl, TrustError } from "./trust.ts";

const log = getLogger(["reverprox", "client"]);

/** Where the agent connects, and as whom. */
export interface AgentSettings {
  server: string;
  token?: string;
  fingerprint?: string;
  /** `auto`, `quic`, `tcp` or `http` (checked by {@link relayConnector}). */
  transport?: string;
  configDir: string;
  clientId: string;
}

export interface AgentRunOptions {
  /** Where the control API listens; the next free port is taken when this one is busy. */
  api: { hostname: string; port: number };
  originTimeoutMs: number;
  /** Streams kept through a lost link this long, resumed when it is back; 0 = off. */
  graceMs?: number;
  healthIntervalMs: number;
  /** What the inspector keeps: the last requests, and bytes of each body. */
  inspect: InspectorLimits;
  /** The live terminal dashboard instead of plain lines (stdout is a terminal and `--log` was not given). */
  dashboard?: boolean;
  /** Called once the agent runs, with its controller (to watch a tunnels file, say). */
  started?: (control: AgentController, api: ControlApi) => void;
}

/** The default address of an agent's control API. */
export const DEFAULT_API = { hostname: "127.0.0.1", port: 4040 };

/** `127.0.0.1:4040` → address; loopback only, since the API must never face a network. */
export function parseApiAddr(text: string): { hostname: string; port: number } {
  const match = text.match(/^(127\.0\.0\.1|localhost|\[::1\]):(\d{1,5})$/);
  if (!match || Number(match[2]) > 65535) throw new Error(`--api-addr must be 127.0.0.1:PORT, not ${text}`);
  return { hostname: "127.0.0.1", port: Number(match[2]) };
}

/**
 * Runs an agent in this process holding `tunnels`, with its control API, until SIGINT or SIGTERM (a
 * goodbye frees the names). Returns the exit code: 1 when the relay refused it for good.
 */
export async function runAgentHere(
  settings: AgentSettings,
  tunnels: AddTunnel[],
  options: AgentRunOptions,
): Promise<number> {
  const agent = new Agent({
    connect: relayConnector({
      relay: parseServerUrl(settings.server),
      fingerprint: settings.fingerprint,
      knownRelaysFile: join(settings.configDir, "known_relays"),
      transport: parseTransport(settings.transport),
      token: settings.token,
    }),
    token: settings.token,
    clientId: settings.clientId,
    tunnels: [],
    originTimeoutMs: options.originTimeoutMs,
    graceMs: options.graceMs,
    healthIntervalMs: options.healthIntervalMs,
  });
  const control = new AgentController(agent, {
    version: VERSION,
    relay: relayLabel(settings.server),
    // Asked only once the API serves (a status request), by then `api` is set.
    api: () => api.url,
  });
  for (const tunnel of tunnels) await control.add(tunnel);
  const store = new InspectorStore(agent.events, options.inspect);
  const extraRoutes = inspectorRoutes({ store, agent, originTimeoutMs: options.originTimeoutMs });
  const api = serveControlApi(control, { port: options.api.port, extraRoutes });
  // Another agent may be running already (a daemon beside a foreground one): that one stays the one found.
  const owner = !(await findAgent());
  if (owner) await writeAgentState(api.url);
  const stopping = new AbortController();
  const screen = options.dashboard ? showDashboard(control, { quit: () => stopping.abort() }) : undefined;
  if (!screen) {
    printOnline(agent.events, settings.server, () => tunnels.length > 1 || agent.tunnels.length > 1);
  }
  log.info("control API and inspector at {url}", { url: api.url });
  options.started?.(control, api);
  try {
    // The screen goes first, so that what is said next (a refusal) lands on the terminal as it was.
    await agent.run(stopSignal(stopping)).finally(() => screen?.close());
    return 0;
  } catch (error) {
    if (!(error instanceof AgentError || error instanceof TrustError)) throw error;
    console.error(`reverprox: ${error.message}`);
    return 1;
  } finally {
    await api.shutdown();
    if (owner) await clearAgentState();
  }
}

/** `--transport` or the config key `transport`: one of {@link TRANSPORTS}, `auto` when unset. */
export function parseTransport(text: string | undefined): TransportChoice {
  if (text === undefined) return "auto";
  if ((TRANSPORTS as readonly string[]).includes(text)) return text as TransportChoice;
  throw new TrustError(`transport must be one of ${TRANSPORTS.join(", ")}, not ${text}`);
}

/** `quic://host:port` as the agent's status names its relay: `host:port`. */
export function relayLabel(server: string): string {
  const { hostname, port } = parseServerUrl(server);
  return hostPort(hostname, port);
}

/** Prints where the agent is online and each tunnel's URL, as they come, and one line per request. */
function printOnline(events: AgentEvents, server: string, showTunnel: () => boolean) {
  events.on("online", ({ link, tunnels }) => {
    console.log(
      `reverprox: online via ${server} over ${link.transport} (CA ${link.fingerprint.slice(0, 16)}…)`,
    );
    for (const tunnel of tunnels) console.log(tunnelLine(tunnel));
  });
  events.on("tunnel-added", (tunnel) => {
    if (tunnel.url) console.log(tunnelLine(tunnel));
  });
  printRequestLog(events, { showTunnel: showTunnel() });
}

/** One tunnel as the console shows it: its URL and target, and a debug receiver's id. */
function tunnelLine(tunnel: TunnelStatus): string {
  const debug = tunnel.debugId
    ? `  (debug id ${tunnel.debugId}: send X-Reverprox-Debug or open the URL)`
    : "";
  return `  ${tunnel.url ?? "(waiting)"} → ${tunnel.target}${debug}`;
}

/**
 * Hands `tunnels` to the running agent at `api`, prints their URLs, and (unless `detach`) follows their
 * requests until Ctrl-C, which removes them. Returns the exit code.
 */
export async function runOnAgent(
  api: AgentApiClient,
  tunnels: AddTunnel[],
  detach: boolean,
): Promise<number> {
  const added: TunnelView[] = [];
  try {
    for (const tunnel of tunnels) added.push(await api.add(tunnel));
  } catch (error) {
    await Promise.all(added.map((tunnel) =>
      api.remove(tunnel.name).catch(() => {
        // Leaving nothing half-added is best effort; `reverprox ls` shows what is left.
      })
    ));
    throw error;
  }
  console.log(`reverprox: online via the agent at ${api.base}`);
  for (const tunnel of added) {
    console.log(`  ${tunnel.url ?? `(waiting: ${tunnel.state})`} → ${tunnel.target}`);
  }
  if (detach) return 0;
  const stop = stopSignal();
  const events = new AgentEvents();
  printRequestLog(events, { showTunnel: added.length > 1 });
  await Promise.all(
    added.map((tunnel) =>
      api.follow(tunnel.name, (name, data) => events.emit(name as "request-done", data as never), stop)
    ),
  );
  for (const tunnel of added) {
    await api.remove(tunnel.name).catch((error) => console.error(`reverprox: ${error.message}`));
  }
  return 0;
}

/** Aborts on SIGINT or SIGTERM, or when `stopping` is aborted otherwise (the dashboard's `q`). */
function stopSignal(stopping = new AbortController()): AbortSignal {
  for (const signal of ["SIGINT", "SIGTERM"] as const) Deno.addSignalListener(signal, () => stopping.abort());
  return stopping.signal;
}

const COLUMNS = ["NAME", "URL", "TARGET", "STATE", "HEALTH", "REQS", "P50", "P90", "SINCE"];

/** `reverprox ls`: the tunnels as an aligned table. */
export function tunnelTable(tunnels: TunnelView[], now = Date.now()): string {
  const ms = (value: number | null) => value === null ? "-" : `${value}ms`;
  const rows = tunnels.map((t) => [
    t.name,
    t.url ?? "-",
    t.target,
    t.state,
    t.health,
    String(t.requests),
    ms(t.p50Ms),
    ms(t.p90Ms),
    ago(now - Date.parse(t.since)),
  ]);
  const widths = COLUMNS.map((column, i) => Math.max(column.length, ...rows.map((row) => row[i].length)));
  return [COLUMNS, ...rows].map((row) => row.map((cell, i) => cell.padEnd(widths[i])).join("  ").trimEnd())
    .join(
      "\n",
    );
}

/** `42s`, `5m`, `3h`, `2d`. */
function ago(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m`;
  if (s < 86_400) return `${Math.floor(s / 3600)}h`;
  return `${Math.floor(s / 86_400)}d`;
}

export { ApiError };
