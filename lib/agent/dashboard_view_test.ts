import assert from "node:assert/strict";
import { stripVTControlCharacters } from "node:util";
import pc from "picocolors";
import type { AgentStatus, TunnelView } from "./control.ts";
import { AgentEvents } from "./events.ts";
import { DashboardFeed } from "./dashboard_feed.ts";
import { duration, renderDashboard, type RequestLine, size } from "./dashboard_view.ts";

const plain = pc.createColors(false);
const coloured = pc.createColors(true);
const AT = Date.parse("2026-01-02T03:04:05Z");
const clock = new Date(AT).toTimeString().slice(0, 8);

const status: AgentStatus = {
  pid: 1,
  version: "0.3.0",
  relay: "127.0.0.1:4433",
  transport: "quic",
  rttMs: 1.5,
  state: "online",
  since: new Date(AT).toISOString(),
  tunnels: 1,
  api: "http://127.0.0.1:4040",
};

function tunnel(name: string, more: Partial<TunnelView> = {}): TunnelView {
  return {
    name,
    kind: "http",
    url: `http://${name}.localhost:8080`,
    target: "http://localhost:3000",
    state: "online",
    health: "up",
    requests: 3,
    p50Ms: 4,
    p90Ms: 120,
    since: new Date(AT).toISOString(),
    ...more,
  };
}

const requests: RequestLine[] = [
  { at: AT, tunnel: "api", method: "POST", path: "/hooks/stripe", websocket: false },
  {
    at: AT,
    tunnel: "api",
    method: "GET",
    path: "/missing",
    websocket: false,
    status: 404,
    durationMs: 2,
    bytes: 9,
  },
  {
    at: AT,
    tunnel: "api",
    method: "GET",
    path: "/",
    websocket: false,
    status: 200,
    durationMs: 3.4,
    bytes: 1234,
  },
];

const view = {
  status,
  tunnels: [tunnel("api")],
  open: { api: 1 },
  connections: {},
  requests,
  notice: "inspector: http://127.0.0.1:4040",
};

/** What a terminal shows of a line: escape codes take no room. */
const visible = stripVTControlCharacters;

Deno.test("the dashboard shows the session, the tunnel with its state and health, counts and the requests", () => {
  const lines = renderDashboard(view, { columns: 100, rows: 20 }, plain);
  assert.equal(lines.length, 20);
  assert.match(lines[0], /^reverprox 0\.3\.0 +q quit · i inspector · p pause\/resume$/);
  assert.ok(lines.includes("Session       online"));
  assert.ok(lines.includes("Relay         127.0.0.1:4433 over quic"));
  assert.ok(lines.includes("Round trip    1.5 ms"));
  assert.ok(lines.includes("Inspector     http://127.0.0.1:4040"));
  assert.ok(lines.includes("Forwarding    http://api.localhost:8080 → http://localhost:3000"));
  const table = lines.findIndex((line) => line.startsWith("Tunnels"));
  assert.match(lines[table], /^Tunnels +tunnel +state +origin +total +open +p50 +p90$/);
  assert.match(lines[table + 1], /^ +api +online +up +3 +1 +4 ms +120 ms$/);
  // Newest first: the POST still waiting, then the answered ones with status, duration and size.
  const first = lines.findIndex((line) => line.startsWith(clock));
  assert.match(lines[first], new RegExp(`^${clock}  POST +/hooks/stripe +…$`));
  assert.match(lines[first + 1], new RegExp(`^${clock}  GET +/missing +404 Not Found +2 ms +9 B$`));
  assert.match(lines[first + 2], new RegExp(`^${clock}  GET +/ +200 OK +3\\.4 ms +1\\.2 kB$`));
  assert.equal(lines.at(-1), "inspector: http://127.0.0.1:4040");
  assert.ok(lines.every((line) => line.length <= 100));
});

Deno.test("the dashboard fits any terminal: lines cut to the width, requests to the rows left", () => {
  for (const screen of [{ columns: 40, rows: 20 }, { columns: 60, rows: 16 }, { columns: 20, rows: 5 }]) {
    const lines = renderDashboard(view, screen, coloured);
    assert.equal(lines.length, screen.rows, JSON.stringify(screen));
    for (const line of lines) {
      assert.ok([...visible(line)].length <= screen.columns, `${JSON.stringify(line)}`);
    }
  }
  // 15 rows leave room for two of the three requests; the oldest goes first.
  const rows = renderDashboard(view, { columns: 60, rows: 15 }, plain);
  assert.equal(rows.filter((line) => line.startsWith(clock)).length, 2);
  assert.ok(!rows.some((line) => line.includes(" / ")));
  // A long path is cut with an ellipsis, and the status stays in view.
  const long = renderDashboard(
    { ...view, requests: [{ ...requests[2], path: `/${"x".repeat(200)}` }] },
    { columns: 80, rows: 20 },
    plain,
  );
  assert.match(long.find((line) => line.startsWith(clock))!, /x…\s+200 OK +3\.4 ms +1\.2 kB$/);
});

Deno.test("request statuses are coloured by class: 2xx green, 3xx cyan, 4xx yellow, 5xx and failures red", () => {
  const answered = [200, 302, 404, 502].map((code) => ({ ...requests[2], status: code }));
  const failed = { ...requests[2], status: 504, error: "origin_timeout" };
  const lines = renderDashboard(
    { ...view, requests: [...answered, failed] },
    { columns: 100, rows: 30 },
    coloured,
  );
  const line = (code: number) => lines.find((text) => visible(text).includes(` ${code} `))!;
  assert.ok(line(200).includes(coloured.green("200 OK")));
  assert.ok(line(302).includes(coloured.cyan("302 Found")));
  assert.ok(line(404).includes(coloured.yellow("404 Not Found")));
  assert.ok(line(502).includes(coloured.red("502 Bad Gateway")));
  assert.ok(line(504).includes(coloured.red("504 origin_timeout")));
});

Deno.test("several tunnels: each on its line with its state, the selected one marked, requests name their tunnel", () => {
  const tunnels = [
    tunnel("api"),
    tunnel("web", { state: "suspended", health: "down", healthReason: "connection refused" }),
    tunnel("5432", { kind: "tcp", url: "tcp://localhost:20432", target: "127.0.0.1:5432", requests: 0 }),
  ];
  const lines = renderDashboard(
    {
      ...view,
      tunnels,
      selected: "web",
      open: { api: 1, "5432": 2 },
      connections: { "5432": 7 },
      status: { ...status, state: "reconnecting", reason: "relay gone", rttMs: null },
    },
    { columns: 120, rows: 30 },
    plain,
  );
  assert.match(lines[0], /tab next tunnel$/);
  assert.ok(lines.includes("Session       reconnecting (relay gone)"));
  assert.ok(lines.includes("Round trip    -"));
  assert.ok(lines.includes("Forwarding    http://api.localhost:8080 → http://localhost:3000"));
  assert.ok(
    lines.includes(
      "              http://web.localhost:8080 → http://localhost:3000  origin down (connection refused)",
    ),
  );
  assert.ok(lines.includes("              tcp://localhost:20432 → 127.0.0.1:5432"));
  // The selected tunnel is marked; a TCP tunnel counts connections: 7 so far, 2 open.
  assert.ok(lines.some((line) => /^ {16}api +online +up +3 +1 +4 ms +120 ms$/.test(line)));
  assert.ok(lines.some((line) => /^ {14}▸ web +paused +down +3 +0 /.test(line)));
  assert.ok(lines.some((line) => /^ {16}5432 +online +up +7 +2 +4 ms +120 ms$/.test(line)));
  assert.ok(lines.some((line) => line.startsWith(`${clock}  api   POST`)));
});

Deno.test("durations and sizes read at a glance", () => {
  assert.deepEqual([0.25, 3.46, 99.9, 250.4, 1540].map(duration), [
    "0.3 ms",
    "3.5 ms",
    "99.9 ms",
    "250 ms",
    "1.5 s",
  ]);
  assert.equal(duration(null), "-");
  assert.deepEqual([0, 999, 1234, 184_000, 5_600_000, 250_400_000].map(size), [
    "0 B",
    "999 B",
    "1.2 kB",
    "184 kB",
    "5.6 MB",
    "250 MB",
  ]);
});

Deno.test("the feed follows requests from start to end and counts open connections per tunnel", () => {
  const events = new AgentEvents();
  let changes = 0;
  const feed = new DashboardFeed(events, () => changes++);
  const started = { tunnel: "api", method: "GET", headers: [], remoteAddr: "203.0.113.9", websocket: false };
  events.emit("request-started", { ...started, id: "1", target: "/slow" });
  events.emit("request-started", { ...started, id: "2", target: "/fast" });
  assert.deepEqual(feed.requests().map((request) => [request.path, request.status]), [
    ["/fast", undefined],
    ["/slow", undefined],
  ]);
  assert.deepEqual(feed.open(), { api: 2 });
  events.emit("response-head", { id: "1", tunnel: "api", status: 200, headers: [] });
  assert.equal(feed.requests()[1].status, 200);
  events.emit("request-done", {
    id: "1",
    tunnel: "api",
    status: 200,
    durationMs: 12,
    requestBytes: 0,
    responseBytes: 5,
  });
  events.emit("request-done", {
    id: "2",
    tunnel: "api",
    status: 502,
    durationMs: 1,
    requestBytes: 0,
    responseBytes: 0,
    error: { code: "origin_refused", message: "connection refused" },
  });
  const [fast, slow] = feed.requests();
  assert.deepEqual([slow.status, slow.durationMs, slow.bytes, slow.error], [200, 12, 5, undefined]);
  assert.deepEqual([fast.status, fast.error], [502, "origin_refused"]);
  assert.deepEqual(feed.open(), {});
  events.emit("connection", { tunnel: "5432", kind: "tcp", open: true });
  events.emit("connection", { tunnel: "5432", kind: "tcp", open: true });
  events.emit("connection", { tunnel: "5432", kind: "tcp", open: false });
  assert.deepEqual([feed.open(), feed.connections()], [{ "5432": 1 }, { "5432": 2 }]);
  assert.equal(changes, 8);
  feed.close();
  events.emit("request-started", { ...started, id: "3", target: "/after" });
  assert.equal(feed.requests().length, 2);
  assert.equal(changes, 8);
});

Deno.test("the feed keeps the last 200 requests, while open counts hold for those that scrolled away", () => {
  const events = new AgentEvents();
  const feed = new DashboardFeed(events, () => {});
  for (let i = 0; i < 250; i++) {
    events.emit("request-started", {
      id: String(i),
      tunnel: "api",
      method: "GET",
      target: `/${i}`,
      headers: [],
      remoteAddr: "",
      websocket: false,
    });
  }
  assert.equal(feed.requests().length, 200);
  assert.equal(feed.requests()[0].path, "/249");
  assert.deepEqual(feed.open(), { api: 250 });
  events.emit("request-done", {
    id: "0",
    tunnel: "api",
    status: 200,
    durationMs: 1,
    requestBytes: 0,
    responseBytes: 0,
  });
  assert.deepEqual(feed.open(), { api: 249 });
  feed.close();
});
