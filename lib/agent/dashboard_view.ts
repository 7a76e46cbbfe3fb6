/**
 * The terminal dashboard's screen as a pure function: what the agent knows
 * (its status, its tunnels, open connections, the last requests) in, the
 * lines to show out, cut to the terminal's width and height. No terminal, no
 * clock, no events here: `dashboard.ts` feeds it and draws what it returns.
 *
 * @example
 * ```ts
 * import pc from "picocolors";
 * declare const view: DashboardView;
 * const lines = renderDashboard(view, { columns: 100, rows: 30 }, pc.createColors(false));
 * ```
 * @module
 */
import { STATUS_CODES } from "node:http";
import { stripVTControlCharacters } from "node:util";
import cliTruncate from "cli-truncate";
import type pc from "picocolors";
import type { AgentStatus, TunnelView } from "./control.ts";

/** Colour functions: picocolors' own, or its `createColors(false)` for plain text. */
export type Colors = ReturnType<typeof pc.createColors>;

/** One request as the dashboard lists it; status, duration and size come as the exchange goes on. */
export interface RequestLine {
  /** When it reached the agent, ms since the epoch. */
  at: number;
  tunnel: string;
  method: string;
  /** The request target: path and query. */
  path: string;
  websocket: boolean;
  /** Once the origin's head came (or the exchange ended without one). */
  status?: number;
  /** Once it is over. */
  durationMs?: number;
  /** Bytes of the response body, once it is over. */
  bytes?: number;
  /** Why it failed, when it did: an error code such as `origin_timeout`. */
  error?: string;
}

/** Everything one frame shows. */
export interface DashboardView {
  status: AgentStatus;
  tunnels: TunnelView[];
  /** Open connections per tunnel name: HTTP requests in flight and TCP connections. */
  open: Record<string, number>;
  /** TCP connections per tunnel name since it started (HTTP tunnels count requests instead). */
  connections: Record<string, number>;
  /** The last requests, newest first. */
  requests: RequestLine[];
  /** The tunnel `p` pauses or resumes. */
  selected?: string;
  /** The status line at the bottom: what a key did, or the latest log line. */
  notice?: string;
}

export interface ScreenSize {
  columns: number;
  rows: number;
}

/** Width of the labels on the left ("Forwarding", "Connections"). */
const LABEL = 14;
/** Columns of a request line around its path: time, method, status, duration, size and the gaps. */
const METHOD = 7;
const STATUS = 26;
const DURATION = 8;
const SIZE = 9;
const MIN_PATH = 12;

/**
 * The dashboard's lines for a terminal of `size`: a header (session, relay, round trip, inspector, each
 * tunnel, connection counts), then as many of the last requests as fit, then the status line. Every line
 * is at most `size.columns` wide and there are at most `size.rows` of them.
 */
export function renderDashboard(view: DashboardView, size: ScreenSize, c: Colors): string[] {
  const header = [
    titleLine(view, size.columns, c),
    "",
    field("Session", sessionWord(view.status, c)),
    field("Relay", `${view.status.relay}${view.status.transport ? ` over ${view.status.transport}` : ""}`),
    field("Round trip", view.status.rttMs === null ? c.dim("-") : duration(view.status.rttMs)),
    field("Inspector", c.underline(view.status.api)),
    ...forwardingLines(view, c),
    ...tunnelLines(view, c),
    "",
    c.bold("Requests"),
    c.dim("─".repeat(Math.min(size.columns, 8))),
  ];
  const footer = [view.notice ? c.dim(view.notice) : ""];
  const room = Math.max(0, size.rows - header.length - footer.length);
  const shown = view.requests.slice(0, room);
  const requestRows = shown.length
    ? shown.map((request) => requestLine(request, tunnelColumn(view), size.columns, c))
    : [c.dim("(none yet)")];
  const lines = [
    ...header,
    ...requestRows,
    ...Array(Math.max(0, room - requestRows.length)).fill(""),
    ...footer,
  ];
  return lines.slice(0, size.rows).map((line) => cliTruncate(line, size.columns));
}

function titleLine(view: DashboardView, columns: number, c: Colors): string {
  const title = `${c.bold("reverprox")} ${c.dim(view.status.version)}`;
  const keys = `q quit · i inspector · p pause/resume${view.tunnels.length > 1 ? " · tab next tunnel" : ""}`;
  const gap = columns - "reverprox ".length - view.status.version.length - keys.length;
  return gap >= 2 ? `${title}${" ".repeat(gap)}${c.dim(keys)}` : title;
}

function field(label: string, value: string): string {
  return `${label.padEnd(LABEL)}${value}`;
}

function sessionWord(status: AgentStatus, c: Colors): string {
  if (status.state === "online") return c.green("online");
  const why = status.reason ? ` (${status.reason})` : "";
  return status.state === "reconnecting" ? c.yellow(`reconnecting${why}`) : c.red(`offline${why}`);
}

/** One line per tunnel: URL → target, and why its origin is down when it is. */
function forwardingLines(view: DashboardView, c: Colors): string[] {
  if (!view.tunnels.length) return [field("Forwarding", c.dim("(no tunnels)"))];
  return view.tunnels.map((tunnel, i) => {
    const down = tunnel.health === "down"
      ? `  ${c.red(`origin down${tunnel.healthReason ? ` (${tunnel.healthReason})` : ""}`)}`
      : "";
    return field(
      i === 0 ? "Forwarding" : "",
      `${tunnel.url ?? c.dim("(waiting)")} → ${tunnel.target}${down}`,
    );
  });
}

const TABLE_HEAD = ["state", "origin", "total", "open", "p50", "p90"];
const TABLE_WIDTHS = [14, 8, 8, 6, 10, 0];

/**
 * A small table, narrow enough for any terminal: per tunnel, its state and its origin's health, requests (TCP
 * connections for a TCP tunnel) so far, open now, and p50/p90; with several, the one `p` acts on is marked.
 */
function tunnelLines(view: DashboardView, c: Colors): string[] {
  const several = view.tunnels.length > 1;
  const nameWidth = Math.max(6, ...view.tunnels.map((tunnel) => tunnel.name.length)) + 2;
  const row = (cells: string[]) => cells.map((cell, i) => pad(cell, TABLE_WIDTHS[i])).join("");
  const head = `${several ? "  " : ""}${pad("tunnel", nameWidth)}${row(TABLE_HEAD)}`;
  const rows = view.tunnels.map((tunnel) => {
    const mark = several ? (tunnel.name === view.selected ? c.cyan("▸ ") : "  ") : "";
    const total = tunnel.kind === "tcp" ? view.connections[tunnel.name] ?? 0 : tunnel.requests;
    const cells = [
      stateWord(tunnel, c),
      healthWord(tunnel, c),
      String(total),
      String(view.open[tunnel.name] ?? 0),
      duration(tunnel.p50Ms),
      duration(tunnel.p90Ms),
    ];
    return `${mark}${pad(tunnel.name, nameWidth)}${row(cells)}`;
  });
  return [field("Tunnels", c.dim(head)), ...rows.map((line) => field("", line))];
}

/** `text` (colours and all) followed by spaces up to `width` visible columns. */
function pad(text: string, width: number): string {
  return text + " ".repeat(Math.max(0, width - stripVTControlCharacters(text).length));
}

function stateWord(tunnel: TunnelView, c: Colors): string {
  switch (tunnel.state) {
    case "online":
      return c.green("online");
    case "suspended":
      return c.yellow("paused");
    case "reconnecting":
      return c.yellow("reconnecting");
    case "offline":
      return c.red("offline");
  }
}

function healthWord(tunnel: TunnelView, c: Colors): string {
  if (tunnel.health === "up") return c.green("up");
  return tunnel.health === "down" ? c.red("down") : c.dim("?");
}

/** Width of the requests' tunnel column: none with one tunnel, else the longest name. */
function tunnelColumn(view: DashboardView): number {
  return view.tunnels.length > 1 ? Math.max(...view.tunnels.map((tunnel) => tunnel.name.length)) : 0;
}

/** `14:03:07  GET     /health            200 OK       3 ms    1.2 kB`, coloured by status class. */
function requestLine(request: RequestLine, tunnelWidth: number, columns: number, c: Colors): string {
  const time = new Date(request.at).toTimeString().slice(0, 8);
  const tunnel = tunnelWidth ? `${request.tunnel.padEnd(tunnelWidth)}  ` : "";
  const fixed = time.length + 2 + tunnel.length + METHOD + 1 + STATUS + DURATION + SIZE;
  const pathWidth = Math.max(MIN_PATH, columns - fixed - 1);
  const status = fit(statusText(request), STATUS - 1);
  const line = [
    c.dim(time),
    "  ",
    tunnel,
    c.bold(request.method.padEnd(METHOD)),
    " ",
    fit(request.path, pathWidth).padEnd(pathWidth),
    " ",
    statusColour(request, c)(status),
    " ".repeat(STATUS - status.length),
    (request.durationMs === undefined ? "" : duration(request.durationMs)).padStart(DURATION),
    (request.bytes === undefined ? "" : size(request.bytes)).padStart(SIZE),
  ].join("");
  return line.trimEnd();
}

/** `200 OK`; a failure names its error code instead (`504 origin_timeout`); `…` while waiting. */
function statusText(request: RequestLine): string {
  if (request.status === undefined) return request.websocket ? "… upgrading" : "…";
  if (request.error) return `${request.status} ${request.error}`;
  if (request.websocket && request.status === 101) {
    return request.durationMs === undefined ? "101 WebSocket open" : "101 WebSocket closed";
  }
  return `${request.status} ${STATUS_CODES[request.status] ?? ""}`.trim();
}

/** 2xx green, 3xx cyan, 4xx yellow, 5xx red; not answered yet dim. */
function statusColour(request: RequestLine, c: Colors): (text: string) => string {
  const status = request.status;
  if (status === undefined) return c.dim;
  if (status >= 500 || request.error) return c.red;
  if (status >= 400) return c.yellow;
  if (status >= 300) return c.cyan;
  return c.green;
}

/** `text` cut to `width` with an ellipsis. */
function fit(text: string, width: number): string {
  return text.length <= width ? text : `${text.slice(0, width - 1)}…`;
}

/** `3 ms`, `12.5 ms` below 100 ms, `1.2 s` from a second; `-` when unknown. */
export function duration(ms: number | null): string {
  if (ms === null) return "-";
  if (ms >= 1000) return `${(ms / 1000).toFixed(1)} s`;
  return `${ms < 100 ? Math.round(ms * 10) / 10 : Math.round(ms)} ms`;
}

/** `512 B`, `1.2 kB`, `184 kB`, `3.4 MB`: at most three digits and a decimal point. */
export function size(bytes: number): string {
  if (bytes < 1000) return `${bytes} B`;
  const [value, unit] = bytes < 1_000_000 ? [bytes / 1000, "kB"] : [bytes / 1_000_000, "MB"];
  return `${value < 100 ? value.toFixed(1) : Math.round(value)} ${unit}`;
}
