/**
 * A broken or hostile origin against the client: response heads no parser
 * accepts, junk after a whole response or on an idle keep-alive connection,
 * bad WebSocket handshake answers. Each costs one request a 502; the client
 * stays up, says what was wrong once, and the next request works.
 */
import assert from "node:assert/strict";
import WebSocket from "ws";
import { Child, Processes, startClient, startRelay } from "./helpers/processes.ts";
import { visit } from "./helpers/visit.ts";

/** Paths of tests/fixtures/hostile_origin.ts whose answer is not HTTP, and what the 502 must say. */
const MALFORMED: [string, RegExp][] = [
  ["big-head", /Header overflow/],
  ["two-lengths", /Duplicate Content-Length/],
  ["length-list", /Invalid character in Content-Length/],
  ["chunked-and-length", /Content-Length can.t be present with Transfer-Encoding/],
  ["nul-in-header", /Invalid header value char/],
  ["control-in-header", /Invalid header value char/],
  ["bare-lf", /Missing expected CR/],
  ["bad-status", /Invalid status code/],
];

/** Handshake answers (`/ws/<case>`) the client must refuse: each is a 502 for the visitor. */
const BAD_HANDSHAKES = [
  "bad-accept",
  "nul-in-header",
  "big-head",
  "bare-lf",
  "two-lengths",
  "unoffered-protocol",
];

async function startHostileOrigin(processes: Processes) {
  const child = processes.add(Child.script("origin", "tests/fixtures/hostile_origin.ts", []));
  const [, port] = await child.waitFor(/^ready port=(\d+)/);
  return { child, port: Number(port) };
}

/** A plain request through the tunnel; returns the origin connection it was answered on. */
async function plainRequest(url: string): Promise<string> {
  const response = await visit(`${url}/ok`);
  assert.equal(response.status, 200);
  assert.equal(await response.text(), "ok\n");
  return response.headers.get("x-connection")!;
}

/** Opens a WebSocket to `url` and reports how the attempt ended. */
function webSocketOutcome(url: string): Promise<string> {
  const target = new URL(url);
  const socket = new WebSocket(`ws://127.0.0.1:${target.port}${target.pathname}`, {
    headers: { host: target.host },
  });
  return new Promise((resolve) => {
    socket.once("unexpected-response", (_request, response) => {
      resolve(`${response.statusCode} ${response.headers["x-reverprox-error"] ?? ""}`.trim());
      socket.terminate();
    });
    socket.once("open", () => socket.once("close", () => resolve("opened, then closed")));
    socket.once("error", (error) => resolve(`error: ${error.message}`));
  });
}

Deno.test("a malformed origin answer costs that request a 502; the client stays up", async (t) => {
  await using processes = new Processes();
  const origin = await startHostileOrigin(processes);
  const relay = await startRelay(processes);
  const client = await startClient(processes, relay, [String(origin.port), "hostile"]);
  const url = client.urls[0];

  await t.step("each malformed response gets 502 origin_error saying what was wrong", async () => {
    await plainRequest(url); // Every case then arrives on a reused keep-alive connection.
    for (const [path, reason] of MALFORMED) {
      const response = await visit(`${url}/${path}`);
      assert.equal(response.status, 502, path);
      assert.equal(response.headers.get("x-reverprox-error"), "origin_error", path);
      assert.match(await response.text(), reason, path);
      await plainRequest(url);
    }
  });
  await t.step("the origin was asked once for each: a refused answer is not retried", async () => {
    const seen = await (await visit(`${url}/seen`)).json();
    for (const [path] of MALFORMED) assert.equal(seen[`/${path}`], 1, path);
  });
  await t.step("the keep-alive pool reuses a good connection", async () => {
    assert.equal(await plainRequest(url), await plainRequest(url));
  });
  await t.step("a whole response with junk behind it passes; its connection is not reused", async () => {
    const response = await visit(`${url}/junk-after-body`);
    assert.equal(response.status, 200);
    assert.equal(await response.text(), "ok\n");
    assert.notEqual(await plainRequest(url), response.headers.get("x-connection"));
  });
  await t.step("a connection the origin writes junk on while idle is dropped from the pool", async () => {
    const response = await visit(`${url}/junk-when-idle`);
    assert.equal(await response.text(), "ok\n");
    await new Promise((resolve) => setTimeout(resolve, 500)); // the fixture writes its junk after 100 ms
    assert.notEqual(await plainRequest(url), response.headers.get("x-connection"));
  });
  await t.step("bad WebSocket handshake answers get 502; a refusal with junk behind it passes", async () => {
    for (const path of BAD_HANDSHAKES) {
      assert.equal(await webSocketOutcome(`${url}/ws/${path}`), "502 origin_error", path);
    }
    assert.equal(await webSocketOutcome(`${url}/ws/refused-then-junk`), "403");
    assert.equal(await webSocketOutcome(`${url}/ws/junk-frames`), "opened, then closed");
    await plainRequest(url);
  });
  await t.step("the client said what was wrong once per failure and is still running", async () => {
    const failures = [
      ...MALFORMED.map(([path]) => `GET /${path}: The origin's answer is not valid HTTP`),
      ...BAD_HANDSHAKES.map((path) => `GET /ws/${path}: The origin's`),
    ];
    await client.child.waitFor(new RegExp(failures.at(-1)!));
    for (const failure of failures) {
      const said = client.child.lines.filter((line) => line.includes(failure));
      assert.equal(said.length, 1, `${failure}\n${client.child.output()}`);
    }
    const exited = await Promise.race([
      client.child.status.then(() => true),
      new Promise<false>((resolve) => setTimeout(resolve, 200, false)),
    ]);
    assert.equal(exited, false, client.child.output());
    await plainRequest(url);
  });
});

Deno.test("a tunnel whose origin is the relay itself gets 508 Loop Detected, not a storm of requests", async () => {
  await using processes = new Processes();
  const relay = await startRelay(processes);
  // The agent keeps the visitor's Host, so the relay would route the request to this same tunnel again.
  const client = await startClient(processes, relay, [String(relay.httpPort), "loop", "--log"]);
  const response = await visit(`${client.urls[0]}/again`);
  assert.equal(response.status, 508);
  assert.match(await response.text(), /came back through the relay: the tunnel "loop" forwards to the relay/);
  await new Promise((resolve) => setTimeout(resolve, 500));
  const passes = client.child.lines.filter((line) => /GET \/again/.test(line));
  assert.equal(passes.length, 1, `the request went round ${passes.length} times:\n${passes.join("\n")}`);
});
