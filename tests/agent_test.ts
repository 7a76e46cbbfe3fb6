/**
 * The agent as a user drives it: a background agent started, listed, paused,
 * resumed, stopped and killed; tunnels added at runtime over one relay
 * connection; the control API and its refusals; origin health seen at the
 * relay; a tunnels file followed while edited; the service unit. Real relay,
 * agent, CLI and origin processes.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import {
  Child,
  onlineUrls,
  Processes,
  type RelayHandle,
  startClient,
  startOrigin,
  startRelay,
} from "./helpers/processes.ts";
import { eventually, visit } from "./helpers/visit.ts";
import { connectWebSocket } from "./helpers/websocket.ts";

/** A user's world: its own config and state dirs, and a relay to talk to. */
async function user(processes: Processes, relay: RelayHandle) {
  const env = {
    REVERPROX_CONFIG_DIR: await processes.tempDir(),
    REVERPROX_STATE_DIR: await processes.tempDir(),
    REVERPROX_SERVER: relay.server,
    REVERPROX_FINGERPRINT: relay.fingerprint,
  };
  /** Runs `reverprox …` to the end; its exit code and output. */
  const cli = async (...args: string[]) => {
    const child = Child.script("cli", "client.ts", args, env);
    const { code } = await child.done();
    return { code, output: child.lines.join("\n") };
  };
  /** Starts the background agent on a free API port; it is stopped (or killed) when the test ends. */
  const startAgent = async (...args: string[]) => {
    const started = await cli("agent", "start", "--api-addr=127.0.0.1:0", "--health-interval=1", ...args);
    assert.equal(started.code, 0, started.output);
    const [, pid, api] = started.output.match(/agent started: pid (\d+), API (\S+),/)!;
    processes.defer(async () => {
      await cli("agent", "stop");
      try {
        Deno.kill(Number(pid), "SIGKILL");
      } catch {
        // Stopped already, as it should be.
      }
    });
    return { pid: Number(pid), api };
  };
  return { env, cli, startAgent };
}

/** An origin, a relay and a user whose background agent runs. */
async function withAgent(processes: Processes) {
  const origin = await startOrigin(processes);
  const relay = await startRelay(processes);
  const world = await user(processes, relay);
  return { origin, relay, ...world, agent: await world.startAgent() };
}

async function relayStatus(relay: RelayHandle) {
  return await (await visit(`http://localhost:${relay.httpPort}/.well-known/reverprox/status`)).json();
}

Deno.test("agent start, status and stop; a kill -9 is cleaned up and the agent starts again", async () => {
  await using processes = new Processes();
  const relay = await startRelay(processes);
  const { cli, startAgent } = await user(processes, relay);
  assert.match((await cli("agent", "status")).output, /no agent is running/);
  const agent = await startAgent();
  const status = await cli("agent", "status");
  assert.equal(status.code, 0, status.output);
  assert.match(status.output, new RegExp(`pid ${agent.pid}, version \\S+, API ${agent.api}`));
  assert.match(status.output, /relay: 127\.0\.0\.1:\d+ online over quic/);
  assert.match((await cli("agent", "start")).output, /already running: pid/);
  Deno.kill(agent.pid, "SIGKILL");
  const afterKill = await cli("agent", "status");
  assert.equal(afterKill.code, 1);
  assert.match(afterKill.output, /cleaned up after an agent that is gone .*\n.*no agent is running/);
  const again = await startAgent();
  assert.notEqual(again.pid, agent.pid);
  assert.match((await cli("agent", "stop")).output, /agent stopped/);
  assert.match((await cli("agent", "status")).output, /no agent is running/);
});

Deno.test("tunnels added at runtime share one relay connection; ls shows them as they are", async (t) => {
  await using processes = new Processes();
  const { origin, relay, cli } = await withAgent(processes);
  const http = await cli(String(origin.port), "api", "--detach");
  assert.equal(http.code, 0, http.output);
  const url = http.output.match(/(http:\/\/api\.localhost:\d+) → http:\/\/localhost:\d+/)![1];
  const tcp = await cli("tcp", String(origin.port), "--detach");
  const tcpUrl = tcp.output.match(/(tcp:\/\/localhost:(\d+)) → 127\.0\.0\.1:\d+/)!;
  assert.equal((await visit(`${url}/`)).status, 200);
  await t.step("one client at the relay holds both", async () => {
    const status = await relayStatus(relay);
    assert.deepEqual([status.clients, status.httpTunnels, status.tcpTunnels], [1, 1, 1]);
  });
  await t.step("ls --json", async () => {
    const listed = JSON.parse((await cli("ls", "--json")).output);
    assert.deepEqual(listed.map((t: { name: string }) => t.name), ["api", tcpUrl[2]]);
    const [api, port] = listed;
    assert.deepEqual(
      [api.kind, api.url, api.target, api.state, api.requests],
      ["http", url, `http://localhost:${origin.port}`, "online", 1],
    );
    assert.ok(api.p50Ms >= 0 && api.p90Ms >= api.p50Ms);
    assert.ok(Date.parse(api.since) <= Date.now());
    assert.deepEqual([port.kind, port.url, port.state], ["tcp", tcpUrl[1], "online"]);
    await eventually(`${url}/`, 200);
    assert.equal(JSON.parse((await cli("ls", "--json")).output)[0].health, "up");
  });
  await t.step("ls as a table", async () => {
    const lines = (await cli("ls")).output.split("\n");
    assert.match(lines[0], /^NAME +URL +TARGET +STATE +HEALTH +REQS +P50 +P90 +SINCE$/);
    assert.match(
      lines[1],
      new RegExp(`^api +${url} +http://localhost:${origin.port} +online +up +\\d+ +[\\d.]+ms`),
    );
    assert.match(lines[2], new RegExp(`^${tcpUrl[2]} +${tcpUrl[1]} +127\\.0\\.0\\.1:${origin.port} +online`));
  });
});

Deno.test("suspend: visitors get 503 with Retry-After and the origin sees nothing; resume serves again", async () => {
  await using processes = new Processes();
  const { origin, relay, cli } = await withAgent(processes);
  const url = (await cli(String(origin.port), "paused", "--detach")).output.match(/(http:\/\/paused\S+)/)![1];
  const seen = async () => (await (await fetch(`http://127.0.0.1:${origin.port}/seen`)).json()).seen;
  const ws = connectWebSocket(`${url}/ws`);
  await ws.opened;
  const before = await seen();
  assert.match((await cli("suspend", "paused")).output, /paused suspended/);
  assert.deepEqual(await ws.closed, { code: 1001, reason: "tunnel paused by its owner" });
  const text = await visit(`${url}/echo`);
  assert.equal(text.status, 503);
  assert.equal(text.headers.get("retry-after"), "30");
  assert.match(await text.text(), /paused by its owner/);
  const page = await visit(`${url}/`, { headers: { accept: "text/html" } });
  assert.match(page.headers.get("content-type")!, /text\/html/);
  assert.match(await page.text(), /<h1>Paused<\/h1>/);
  assert.equal(await seen(), before);
  assert.equal((await relayStatus(relay)).suspendedTunnels, 1);
  assert.equal(JSON.parse((await cli("ls", "--json")).output)[0].state, "suspended");
  assert.match((await cli("resume", "paused")).output, /paused online/);
  assert.equal((await visit(`${url}/`)).status, 200);
});

Deno.test("rm frees the name at once for another client", async () => {
  await using processes = new Processes();
  const { origin, relay, cli } = await withAgent(processes);
  await cli(String(origin.port), "shared", "--detach");
  assert.match((await cli("rm", "shared")).output, /removed shared/);
  assert.equal(JSON.parse((await cli("ls", "--json")).output).length, 0);
  const other = await startClient(processes, relay, [String(origin.port), "shared"]);
  assert.equal((await visit(`${other.urls[0]}/`)).status, 200);
});

Deno.test("a tunnel command with a running agent adds its tunnel there and removes it on Ctrl-C", async () => {
  await using processes = new Processes();
  const { origin, env, cli } = await withAgent(processes);
  const follower = processes.add(
    Child.script("follower", "client.ts", [String(origin.port), "followed"], env),
  );
  const [url] = await onlineUrls(follower, 1);
  assert.match(follower.lines.join("\n"), /online via the agent at http:\/\/127\.0\.0\.1:\d+/);
  await visit(`${url}/logged`).then((response) => response.body?.cancel());
  await follower.waitFor(/ GET \/logged 200 \d+ ms$/);
  follower.kill("SIGINT");
  assert.equal((await follower.status).code, 0);
  assert.deepEqual(JSON.parse((await cli("ls", "--json")).output), []);
  assert.equal((await visit(`${url}/`)).status, 404);
});

Deno.test("the control API refuses what a web page could send", async () => {
  await using processes = new Processes();
  const relay = await startRelay(processes);
  const { startAgent } = await user(processes, relay);
  const { api } = await startAgent();
  const call = async (path: string, init: Parameters<typeof visit>[1] = {}) => {
    const response = await visit(`${api}${path}`, {
      ...init,
      headers: { host: new URL(api).host, ...init.headers },
    });
    return { status: response.status, code: (await response.json().catch(() => ({}))).error?.code };
  };
  const json = { "content-type": "application/json" };
  const add = JSON.stringify({ kind: "http", name: "x", target: "9" });
  assert.deepEqual(await call("/api/tunnels", { headers: { host: "evil.example:4040" } }), {
    status: 403,
    code: "forbidden_host",
  });
  assert.deepEqual(await call("/api/tunnels", { method: "POST", body: add }), {
    status: 415,
    code: "unsupported_media_type",
  });
  assert.deepEqual(
    await call("/api/tunnels", {
      method: "POST",
      body: "a=1",
      headers: { "content-type": "application/x-www-form-urlencoded" },
    }),
    { status: 415, code: "unsupported_media_type" },
  );
  assert.deepEqual(
    await call("/api/tunnels", {
      method: "POST",
      body: add,
      headers: { ...json, origin: "http://evil.example" },
    }),
    { status: 403, code: "forbidden_origin" },
  );
  assert.deepEqual(await call("/api/tunnels", { method: "POST", body: "{", headers: json }), {
    status: 400,
    code: "bad_request",
  });
  assert.deepEqual(await call("/api/tunnels", { method: "PUT", body: "{}", headers: json }), {
    status: 405,
    code: "method_not_allowed",
  });
  assert.deepEqual(await call("/api/tunnels/nope"), { status: 404, code: "unknown_tunnel" });
  assert.deepEqual(await call("/api/tunnels/nope/suspend", { method: "POST", body: "{}", headers: json }), {
    status: 404,
    code: "unknown_tunnel",
  });
  // The API's own origin may drive it (the inspector page does).
  const own = await call("/api/tunnels", { method: "POST", body: add, headers: { ...json, origin: api } });
  assert.equal(own.status, 201);
});

Deno.test("an origin that goes down is answered 502 at the relay at once, and served again once back", async () => {
  await using processes = new Processes();
  const { origin, cli } = await withAgent(processes);
  const url = (await cli(String(origin.port), "flaky", "--detach")).output.match(/(http:\/\/flaky\S+)/)![1];
  await origin.child.stop();
  // The first visitors may still cross to the client (502 origin_refused) until the relay hears of it.
  const deadline = Date.now() + 5_000;
  let response = await visit(`${url}/`);
  while (response.headers.get("x-reverprox-error") !== "origin_down" && Date.now() < deadline) {
    await response.body?.cancel();
    await new Promise((resolve) => setTimeout(resolve, 100));
    response = await visit(`${url}/`);
  }
  assert.equal(response.status, 502);
  assert.match(await response.text(), /has not answered since \d{4}-\d\d-\d\dT/);
  assert.equal(JSON.parse((await cli("ls", "--json")).output)[0].health, "down");
  await startOrigin(processes, origin.port);
  const started = performance.now();
  await eventually(`${url}/`, 200, 5_000);
  assert.ok(performance.now() - started < 2_500, "served again within about one probe interval");
});

Deno.test("a tunnels file is followed: an edit adds and removes tunnels and leaves the others' connections open", async () => {
  await using processes = new Processes();
  const origin = await startOrigin(processes);
  const relay = await startRelay(processes);
  const { env } = await user(processes, relay);
  const file = join(await processes.tempDir(), "tunnels.json");
  const write = (names: string[]) =>
    Deno.writeTextFile(
      file,
      JSON.stringify({ tunnels: names.map((name) => ({ name, target: String(origin.port) })) }),
    );
  await write(["keep", "drop"]);
  const agent = processes.add(
    Child.script("start", "client.ts", ["start", file, "--api-addr=127.0.0.1:0"], env),
  );
  const [keep] = await onlineUrls(agent, 2);
  const ws = connectWebSocket(`${keep}/ws`);
  await ws.opened;
  let closed = false;
  ws.closed.then(() => closed = true);
  await write(["keep", "added"]);
  await eventually(keep.replace("keep", "added") + "/", 200);
  await eventually(keep.replace("keep", "drop") + "/", 404);
  const echoed = ws.next();
  ws.socket.send("still here");
  assert.equal(String((await echoed).data), "still here");
  assert.equal(closed, false);
  ws.socket.close();
});

Deno.test("the systemd user unit passes systemd-analyze verify", {
  ignore: !(() => {
    try {
      return new Deno.Command("systemd-analyze", { args: ["--version"], stdout: "null" }).outputSync()
        .success;
    } catch {
      return false;
    }
  })(),
}, async () => {
  await using processes = new Processes();
  const dir = await processes.tempDir();
  const printed = Child.script("cli", "client.ts", ["service", "install", "--print"], {
    REVERPROX_CONFIG_DIR: dir,
  });
  await printed.done();
  const unit = join(dir, "reverprox-agent.service");
  await Deno.writeTextFile(unit, printed.lines.join("\n") + "\n");
  assert.match(await Deno.readTextFile(unit), /^ExecStart=.* agent run$/m);
  const verify = await new Deno.Command("systemd-analyze", { args: ["verify", unit], stderr: "piped" })
    .output();
  const complaints = new TextDecoder().decode(verify.stderr);
  assert.equal(verify.code, 0, complaints);
});
