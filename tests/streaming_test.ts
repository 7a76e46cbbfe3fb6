/**
 * What breaks tunnels in real use: buffered event streams, uploads that wait
 * for the whole body, visitors who leave, origins that die mid-body, slow
 * readers, odd but legal requests.
 */
import assert from "node:assert/strict";
import http from "node:http";
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { Processes, startClient, startOrigin, startRelay } from "./helpers/processes.ts";
import { visit } from "./helpers/visit.ts";

const run = promisify(execFile);
const now = () => performance.timeOrigin + performance.now();

/** A chunked POST to `path` through the tunnel at `url`, left open for the caller to write. */
function chunkedPost(url: string, path: string): http.ClientRequest {
  const target = new URL(url);
  return http.request({
    hostname: "127.0.0.1",
    port: Number(target.port),
    method: "POST",
    path,
    headers: { host: target.host, "transfer-encoding": "chunked" },
  });
}

async function tunnel(processes: Processes) {
  const origin = await startOrigin(processes);
  const relay = await startRelay(processes);
  const client = await startClient(processes, relay, [String(origin.port), "flow"]);
  return { url: client.urls[0], client, relay, origin };
}

Deno.test("server-sent events arrive one by one as the origin writes them", async () => {
  await using processes = new Processes();
  const { url } = await tunnel(processes);
  const response = await visit(`${url}/sse?count=6&interval=250`);
  assert.equal(response.headers.get("content-type"), "text/event-stream");
  const delays: number[] = [];
  const arrivals: number[] = [];
  let buffer = "";
  for await (const chunk of response.body!.pipeThrough(new TextDecoderStream())) {
    buffer += chunk;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const sentAt = Number(buffer.slice(0, end).match(/data: ([\d.]+)/)![1]);
      arrivals.push(now());
      delays.push(now() - sentAt);
      buffer = buffer.slice(end + 2);
    }
  }
  assert.equal(delays.length, 6);
  // Each event is delivered promptly, not held back until the next one or the end.
  assert.ok(Math.max(...delays) < 150, `event delays ${delays.map((d) => d.toFixed(1))} ms`);
  assert.ok(arrivals[5] - arrivals[0] > 1000, "events were spread out, not buffered");
});

Deno.test("a request body streams to the origin before the visitor has sent all of it", async () => {
  await using processes = new Processes();
  const { url } = await tunnel(processes);
  const sentFirst = now();
  const timing = await new Promise<{ first: number; last: number; chunks: number }>((resolve, reject) => {
    const request = chunkedPost(url, "/upload-timing");
    request.on("response", (response) => {
      let text = "";
      response.on("data", (chunk) => text += chunk);
      response.on("end", () => resolve(JSON.parse(text)));
    });
    request.on("error", reject);
    request.write("first part;");
    setTimeout(() => request.end("second part"), 800);
  });
  assert.ok(
    timing.first - sentFirst < 500,
    `first chunk reached the origin after ${timing.first - sentFirst} ms`,
  );
  assert.ok(timing.last - sentFirst >= 700);
});

Deno.test("a visitor leaving mid-download cancels the origin's response", async () => {
  await using processes = new Processes();
  const { url } = await tunnel(processes);
  const before = (await (await visit(`${url}/cancelled`)).json()).cancelled;
  const leaving = new AbortController();
  const response = await visit(`${url}/forever`, { signal: leaving.signal });
  const reader = response.body!.getReader();
  for (let received = 0; received < 8 * 1024;) received += (await reader.read()).value!.length;
  leaving.abort();
  await reader.cancel().catch(() => {});
  const deadline = Date.now() + 5_000;
  let after = before;
  while (after === before && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 100));
    after = (await (await visit(`${url}/cancelled`)).json()).cancelled;
  }
  assert.equal(after, before + 1, "the origin saw its stream cancelled");
});

Deno.test("a visitor leaving before the answer frees its request at once, not at the response timeout", async () => {
  await using processes = new Processes();
  const { url, relay } = await tunnel(processes);
  const status = async () =>
    (await (await visit(`http://localhost:${relay.httpPort}/.well-known/reverprox/status`)).json()).inFlight;
  const leaving = new AbortController();
  const hanging = visit(`${url}/hang`, { signal: leaving.signal }).catch(() => "left");
  await new Promise((resolve) => setTimeout(resolve, 300));
  assert.equal(await status(), 1);
  leaving.abort();
  assert.equal(await hanging, "left");
  let inFlight = 1;
  for (const deadline = Date.now() + 3_000; inFlight !== 0 && Date.now() < deadline;) {
    await new Promise((resolve) => setTimeout(resolve, 50));
    inFlight = await status();
  }
  assert.equal(inFlight, 0);
});

Deno.test("an origin dying mid-body breaks the visitor's response instead of ending it cleanly", async () => {
  await using processes = new Processes();
  const { url } = await tunnel(processes);
  const response = await visit(`${url}/die?after=100000`);
  assert.equal(response.status, 200);
  assert.equal(response.headers.get("content-length"), "200000");
  await assert.rejects(response.arrayBuffer());
  const { stdout } = await run("curl", [
    "-s",
    "-o",
    "/dev/null",
    "-w",
    "%{size_download}",
    "--resolve",
    `${new URL(url).host}:127.0.0.1`,
    `${url}/die?after=100000`,
  ])
    .catch((error) => error);
  assert.ok(Number(stdout) < 200000, "curl saw a short, failed transfer");
});

Deno.test("an origin dying mid-body without a Content-Length still breaks the visitor's response", async () => {
  // Nothing but the tunnel's own end-of-body marker can tell this body from a whole one.
  await using processes = new Processes();
  const { url } = await tunnel(processes);
  for (let i = 0; i < 5; i++) {
    // Whether the head was out before the origin died decides between a cut body and no answer.
    const outcome = await visit(`${url}/die?after=${i * 30_000}&chunked=1`)
      .then((response) => response.arrayBuffer())
      .then((body) => `whole ${body.byteLength} bytes`, () => "broken");
    assert.equal(outcome, "broken");
  }
});

Deno.test("a visitor leaving mid-upload breaks the origin's request body instead of ending it", async () => {
  await using processes = new Processes();
  const { url } = await tunnel(processes);
  const request = chunkedPost(url, "/upload-outcome");
  request.on("error", () => {});
  request.write("x".repeat(10_000));
  await new Promise((resolve) => setTimeout(resolve, 300));
  request.destroy();
  let outcomes: string[] = [];
  for (const deadline = Date.now() + 5_000; outcomes.length === 0 && Date.now() < deadline;) {
    await new Promise((resolve) => setTimeout(resolve, 100));
    outcomes = await (await visit(`${url}/upload-outcomes`)).json();
  }
  assert.deepEqual(outcomes, ["broken 10000"]);
});

Deno.test("a slow reader does not slow other requests on the same tunnel", async () => {
  await using processes = new Processes();
  const { url } = await tunnel(processes);
  const slow = await visit(`${url}/download?bytes=${200 * 1024 * 1024}`);
  const reader = slow.body!.getReader();
  await reader.read();
  const started = performance.now();
  for (let i = 0; i < 20; i++) {
    const response = await visit(`${url}/echo/${i}`);
    assert.equal((await response.json()).target, `/echo/${i}`);
  }
  assert.ok(
    performance.now() - started < 3_000,
    `20 requests took ${performance.now() - started} ms beside a stalled download`,
  );
  await reader.cancel();
});

Deno.test("Expect: 100-continue, long URLs, many headers and non-ASCII targets", async (t) => {
  await using processes = new Processes();
  const { url } = await tunnel(processes);
  const resolve = ["--resolve", `${new URL(url).host}:127.0.0.1`];
  await t.step("curl's Expect: 100-continue upload gets through", async () => {
    const { stdout } = await run("curl", [
      "-s",
      ...resolve,
      "-H",
      "Expect: 100-continue",
      "--data-binary",
      "@README.md",
      `${url}/echo`,
    ]);
    assert.equal(JSON.parse(stdout).bytes, (await Deno.stat("README.md")).size);
  });
  await t.step("a 7,000-byte URL passes; 9,000 bytes is 414", async () => {
    const long = `/echo/${"a".repeat(7000)}`;
    assert.equal((await (await visit(`${url}${long}`)).json()).target, long);
    const tooLong = await visit(`${url}/echo/${"a".repeat(9000)}`);
    assert.equal(tooLong.status, 414);
    await tooLong.body?.cancel();
  });
  await t.step("100 headers pass intact", async () => {
    const headers = Object.fromEntries(
      Array.from({ length: 100 }, (_, i) => [`x-h${i}`, `v${i}`.repeat(20)]),
    );
    const seen = new Map(
      (await (await visit(`${url}/echo`, { headers })).json()).headers as [string, string][],
    );
    for (const [name, value] of Object.entries(headers)) assert.equal(seen.get(name), value);
  });
  await t.step("percent-encoded non-ASCII paths and queries arrive byte-exact", async () => {
    const target = "/echo/%C3%BCn%C3%AF/%E2%9C%93?q=%E2%9C%93&x=a%20b&e=";
    assert.equal((await (await visit(`${url}${target}`)).json()).target, target);
  });
  await t.step("raw UTF-8 in a target is refused with a 400 that says to percent-encode it", async () => {
    // Browsers and HTTP libraries percent-encode; curl sends the bytes raw, which node:http's parser refuses.
    const { stdout } = await run("curl", ["-s", "-i", ...resolve, `${url}/echo/ünï?q=✓`]);
    assert.match(stdout, /^HTTP\/1\.1 400 /);
    assert.match(stdout, /x-reverprox-error: bad_request/);
    assert.match(stdout, /percent-encode/);
  });
});
