/**
 * The inspector's API without a browser: what it captures of real requests
 * through a real relay and agent (bodies, timings, WebSocket messages,
 * server-sent events), its filters and caps, replay and edited replay reaching
 * the real origin, curl and HAR exports, and its guard.
 */
import assert from "node:assert/strict";
import { Processes, type RelayHandle, spawnClient, startOrigin, startRelay } from "./helpers/processes.ts";
import { visit } from "./helpers/visit.ts";
import { connectWebSocket } from "./helpers/websocket.ts";

/** A foreground agent with one tunnel "seen" to the origin; its public URL and its API URL. */
async function inspected(processes: Processes, relay: RelayHandle, originPort: number, args: string[] = []) {
  const { child } = await spawnClient(processes, relay, [String(originPort), "seen", ...args]);
  const [, api] = await child.waitFor(/control API and inspector at (\S+)/);
  const [, url] = await child.waitFor(/^\s+(http:\/\/\S+) →/);
  /** Calls the API as the inspector page would. */
  const call = async (path: string, init: { method?: string; body?: unknown } = {}) => {
    const response = await fetch(`${api}${path}`, {
      method: init.method ?? "GET",
      headers: init.body === undefined ? {} : { "content-type": "application/json" },
      body: init.body === undefined ? undefined : JSON.stringify(init.body),
    });
    return {
      status: response.status,
      json: response.status === 204 ? null : await response.json().catch(() => null),
    };
  };
  return { api, url, call };
}

/** Waits until the inspector lists `count` requests matching `query`; returns them. */
async function listed(call: Awaited<ReturnType<typeof inspected>>["call"], count: number, query = "") {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const { json } = await call(`/api/requests${query}`);
    const done = json.requests.filter((request: { durationMs: number | null }) =>
      request.durationMs !== null
    );
    if (done.length >= count) return json;
    if (Date.now() > deadline) throw new Error(`listed ${JSON.stringify(json)}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

Deno.test("the inspector captures requests and answers, filters them, replays them to the origin, and exports them", async (t) => {
  await using processes = new Processes();
  const origin = await startOrigin(processes);
  const relay = await startRelay(processes);
  const { url, call } = await inspected(processes, relay, origin.port);
  const seen = async () => (await (await fetch(`http://127.0.0.1:${origin.port}/seen`)).json()).seen;
  const payload = JSON.stringify({ hello: "world", n: 1 });
  await (await visit(`${url}/echo?x=1`, {
    method: "POST",
    body: payload,
    headers: { "content-type": "application/json" },
  })).text();
  await (await visit(`${url}/status/404`)).text();
  await (await visit(`${url}/slow?ms=300`)).text();
  const { requests } = await listed(call, 3);
  const post = requests.find((r: { method: string }) => r.method === "POST");

  await t.step("a request's heads, bodies by kind, timings, sizes and visitor", async () => {
    const { json } = await call(`/api/requests/${post.id}`);
    assert.equal(json.target, "/echo?x=1");
    assert.equal(json.status, 200);
    assert.equal(json.requestBody.kind, "json");
    assert.equal(json.requestBody.text, payload);
    assert.equal(json.requestBody.size, payload.length);
    assert.equal(json.responseBody.kind, "json");
    assert.equal(JSON.parse(json.responseBody.text).bytes, payload.length);
    assert.ok(
      json.timings.relayToAgentMs >= 0 && json.timings.originMs >= 0 &&
        json.timings.totalMs >= json.timings.originMs,
    );
    assert.equal(json.remoteAddr, "127.0.0.1");
    assert.ok(json.requestHeaders.some(([name]: string[]) => name === "content-type"));
  });
  await t.step("filters: method, status, text, duration", async () => {
    const ids = async (query: string) =>
      (await call(`/api/requests${query}`)).json.requests.map((r: { target: string }) => r.target);
    assert.deepEqual(await ids("?method=post"), ["/echo?x=1"]);
    assert.deepEqual(await ids("?status=4xx"), ["/status/404"]);
    assert.deepEqual(await ids("?status=400-499"), ["/status/404"]);
    assert.deepEqual(await ids("?status=200"), ["/slow?ms=300", "/echo?x=1"]);
    assert.deepEqual(await ids("?text=slow"), ["/slow?ms=300"]);
    assert.deepEqual(await ids("?minMs=250"), ["/slow?ms=300"]);
    assert.deepEqual(await ids("?maxMs=250&status=2xx"), ["/echo?x=1"]);
  });
  await t.step("replay reaches the origin and is a new entry marked as a replay", async () => {
    const before = await seen();
    const { status, json } = await call(`/api/requests/${post.id}/replay`, { method: "POST", body: {} });
    assert.equal(status, 201);
    assert.equal(json.replayOf, post.id);
    assert.equal(await seen(), before + 1);
    const replayed = (await call(`/api/requests/${json.id}`)).json;
    assert.equal(JSON.parse(replayed.responseBody.text).bytes, payload.length);
  });
  await t.step("edited replay sends the changed method, path, headers and body", async () => {
    const body = "a changed body, longer than the first";
    const { json } = await call(`/api/requests/${post.id}/replay`, {
      method: "POST",
      body: { method: "PUT", path: "/echo?edited=1", headers: [["x-edited", "yes"]], body },
    });
    const answer = JSON.parse((await call(`/api/requests/${json.id}`)).json.responseBody.text);
    assert.equal(answer.method, "PUT");
    assert.equal(answer.target, "/echo?edited=1");
    assert.equal(answer.bytes, body.length);
    assert.ok(answer.headers.some(([name, value]: string[]) => name === "x-edited" && value === "yes"));
  });
  await t.step("curl and HAR exports", async () => {
    const curl = await (await fetch(`${(await call("/api/status")).json.api}/api/requests/${post.id}/curl`))
      .text();
    assert.match(
      curl,
      /^curl -X POST 'http:\/\/seen\.localhost:\d+\/echo\?x=1' .*-H 'content-type: application\/json'/,
    );
    assert.match(curl, /--data-binary '\{"hello":"world","n":1\}'/);
    const har = (await call("/api/requests.har")).json;
    assert.equal(har.log.version, "1.2");
    assert.equal(har.log.entries.length, 5);
    const entry = har.log.entries.find((e: { request: { method: string } }) => e.request.method === "POST");
    assert.match(entry.request.url, /^http:\/\/seen\.localhost:\d+\/echo\?x=1$/);
    assert.equal(entry.request.postData.text, payload);
    assert.deepEqual(entry.request.queryString, [{ name: "x", value: "1" }]);
  });
  await t.step("clear forgets everything", async () => {
    assert.equal((await call("/api/requests", { method: "DELETE", body: {} })).status, 204);
    assert.deepEqual((await call("/api/requests")).json.requests, []);
  });
  await t.step("the same guard as the control API", async () => {
    const foreign = await visit(`${(await call("/api/status")).json.api}/api/requests`, {
      headers: { host: "evil.example" },
    });
    assert.equal(foreign.status, 403);
    await foreign.body?.cancel();
    const { api } = (await call("/api/status")).json;
    const unjson = await fetch(`${api}/api/requests/${post.id}/replay`, { method: "POST", body: "{}" });
    assert.equal(unjson.status, 415);
    await unjson.body?.cancel();
  });
});

Deno.test("the inspector keeps WebSocket messages both ways and server-sent events as they stream", async () => {
  await using processes = new Processes();
  const origin = await startOrigin(processes);
  const relay = await startRelay(processes);
  const { url, call } = await inspected(processes, relay, origin.port);
  const ws = connectWebSocket(`${url}/ws`);
  await ws.opened;
  const echoed = ws.next();
  ws.socket.send("hello through the tunnel");
  await echoed;
  ws.socket.send(new Uint8Array([1, 2, 3]));
  await ws.next();
  ws.socket.close();
  await ws.closed;
  await (await visit(`${url}/sse?count=3&interval=10`)).text();
  const { requests } = await listed(call, 2);
  const socket =
    (await call(`/api/requests/${requests.find((r: { websocket: boolean }) => r.websocket).id}`)).json;
  assert.deepEqual(
    socket.messages.map((
      m: { direction: string; text?: string; base64?: string },
    ) => [m.direction, m.text ?? m.base64]),
    [["in", "hello through the tunnel"], ["out", "hello through the tunnel"], ["in", "AQID"], [
      "out",
      "AQID",
    ]],
  );
  const sse = (await call(`/api/requests/${requests.find((r: { sse: boolean }) => r.sse).id}`)).json;
  assert.deepEqual(sse.events.map((e: { id: string }) => e.id), ["0", "1", "2"]);
});

Deno.test("the inspector's caps hold: the last N requests, and at most so many bytes of each body", async () => {
  await using processes = new Processes();
  const origin = await startOrigin(processes);
  const relay = await startRelay(processes);
  const { url, call } = await inspected(processes, relay, origin.port, [
    "--inspect-limit=3",
    "--inspect-body-bytes=10",
  ]);
  for (let i = 0; i < 5; i++) {
    await (await visit(`${url}/echo?i=${i}`, { method: "POST", body: "0123456789abcdef" })).text();
  }
  const json = await listed(call, 3);
  assert.deepEqual(json.requests.map((r: { target: string }) => r.target), [
    "/echo?i=4",
    "/echo?i=3",
    "/echo?i=2",
  ]);
  assert.equal(json.dropped, 2);
  const detail = (await call(`/api/requests/${json.requests[0].id}`)).json;
  assert.deepEqual([detail.requestBody.size, detail.requestBody.captured, detail.requestBody.truncated], [
    16,
    10,
    true,
  ]);
  assert.equal(detail.requestBody.text, "0123456789");
  const refused = await call(`/api/requests/${json.requests[0].id}/replay`, { method: "POST", body: {} });
  assert.equal(refused.status, 400);
  assert.match(refused.json.error.message, /only 10 of the body's 16 bytes were kept/);
});
