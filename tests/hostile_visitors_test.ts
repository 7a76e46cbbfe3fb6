/**
 * What a hostile visitor can do to a shared relay, and what it gets: floods of
 * connections under a small open-file limit, oversized and trickling bodies,
 * uploads to an origin that never reads, many connections from one address.
 * Real relay, client and origin processes on loopback.
 */
import assert from "node:assert/strict";
import http from "node:http";
import {
  Child,
  memoryMB,
  Processes,
  type RelayHandle,
  startClient,
  startOrigin,
  startRelay,
} from "./helpers/processes.ts";
import { eventually, visit } from "./helpers/visit.ts";
import { patternStream } from "./helpers/pattern.ts";

const MB = 1024 * 1024;

async function tunnel(processes: Processes, relay: RelayHandle) {
  const origin = await startOrigin(processes);
  const client = await startClient(processes, relay, ["http", String(origin.port), "--name=web"]);
  return { origin, client, url: client.urls[0] };
}

/** Opens `count` idle connections to `port` from another process (with room for them), until stopped. */
async function flood(processes: Processes, port: number, count: number, localAddress?: string) {
  const child = processes.add(
    Child.script(
      "flood",
      "tests/fixtures/conn_flood.ts",
      [String(port), String(count), localAddress ?? ""],
      {},
      {
        fileLimit: count + 256,
      },
    ),
  );
  const [, held, closed] = await child.waitFor(/^held (\d+) closed (\d+)/, { timeoutMs: 60_000 });
  return { child, held: Number(held), closed: Number(closed) };
}

function relayStatus(relay: RelayHandle) {
  return visit(`http://localhost:${relay.httpPort}/.well-known/reverprox/status`).then((r) => r.json());
}

/** Waits until the relay has no request in flight. */
async function settles(relay: RelayHandle, timeoutMs = 10_000) {
  const deadline = Date.now() + timeoutMs;
  for (let status; (status = await relayStatus(relay)).inFlight !== 0;) {
    if (Date.now() > deadline) throw new Error(`still in flight: ${JSON.stringify(status)}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** Sends `raw` on a new connection and returns everything the relay answers until it closes (or 5 s pass). */
async function rawExchange(port: number, raw: string | Uint8Array[], pauseMs = 0): Promise<string> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const chunks: Uint8Array[] = [];
  const reading = (async () => {
    const buffer = new Uint8Array(65536);
    for (let n; (n = await conn.read(buffer).catch(() => null)) !== null;) chunks.push(buffer.slice(0, n));
  })();
  const parts = typeof raw === "string" ? [new TextEncoder().encode(raw)] : raw;
  for (const part of parts) {
    await conn.write(part).catch(() => {});
    if (pauseMs) await new Promise((resolve) => setTimeout(resolve, pauseMs));
  }
  await Promise.race([reading, new Promise((resolve) => setTimeout(resolve, 5_000))]);
  conn.close();
  return new TextDecoder().decode(new Uint8Array(chunks.flatMap((chunk) => [...chunk])));
}

Deno.test("out of file descriptors, the relay closes new connections, says so once, and serves again", async () => {
  await using processes = new Processes();
  const relay = await startRelay(processes, { fileLimit: 1024, args: ["--max-conns-per-ip=100000"] });
  const { url } = await tunnel(processes, relay);
  const onPublic = await flood(processes, relay.httpPort, 1_100);
  const onInfo = await flood(processes, relay.quicPort, 1_100);
  assert.ok(onPublic.closed > 0 && onInfo.closed > 0, `${JSON.stringify({ onPublic, onInfo })}`);
  assert.equal(onPublic.held + onPublic.closed, 1_100);
  await onPublic.child.stop();
  await onInfo.child.stop();
  assert.equal((await eventually(`${url}/`, 200)).body, "origin\n");
  const info = await fetch(`http://127.0.0.1:${relay.quicPort}/.well-known/reverprox.json`);
  assert.equal((await info.json()).fingerprint, relay.fingerprint);
  await relay.child.waitFor(/accepting connections again/);
  const warnings = relay.child.lines.filter((line) => line.includes("closing new connections:"));
  assert.equal(warnings.length, 1, relay.child.output());
});

Deno.test("the info port answers one path only, and a slow head there gets 408", async () => {
  await using processes = new Processes();
  const relay = await startRelay(processes, { args: ["--header-timeout=1"] });
  const other = await fetch(`http://127.0.0.1:${relay.quicPort}/admin`);
  assert.equal(other.status, 404);
  await other.body?.cancel();
  const started = performance.now();
  const answer = await rawExchange(relay.quicPort, "GET /.well-known/reverprox.json HTTP/1.1\r\nHost: x\r\n");
  assert.match(answer, /^HTTP\/1\.1 408 /);
  assert.ok(performance.now() - started < 4_000);
});

Deno.test("--max-body-bytes counts bodies as they stream: 413 past it, flat memory, 408 on a stall", async (t) => {
  await using processes = new Processes();
  const relay = await startRelay(processes, { args: ["--max-body-bytes=1000000", "--body-timeout=1"] });
  const { url } = await tunnel(processes, relay);
  await t.step("a small chunked body passes", async () => {
    const response = await visit(`${url}/echo`, { method: "POST", body: patternStream(5) });
    assert.equal(response.status, 200);
    assert.equal((await response.json()).bytes, 5);
  });
  await t.step(
    "a 500 MB chunked body is refused with 413 once it passes the cap, without buffering",
    async () => {
      const before = memoryMB(relay.child.pid).now;
      const response = await visit(`${url}/echo`, { method: "POST", body: patternStream(500 * MB) });
      assert.equal(response.status, 413);
      assert.equal(response.headers.get("x-reverprox-error"), "body_too_large");
      await response.body?.cancel();
      assert.ok(memoryMB(relay.child.pid).peak < before + 64, `relay grew from ${before} MB`);
      await settles(relay);
    },
  );
  await t.step("a declared length over the cap is refused before any body byte", async () => {
    const answer = await rawExchange(
      relay.httpPort,
      "POST /echo HTTP/1.1\r\nHost: web.localhost\r\nContent-Length: 2000000\r\n\r\n",
    );
    assert.match(answer, /^HTTP\/1\.1 413 /);
  });
  await t.step("a chunked body that stalls is 408", async () => {
    const answer = await rawExchange(
      relay.httpPort,
      "POST /echo HTTP/1.1\r\nHost: web.localhost\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
    );
    assert.match(answer, /^HTTP\/1\.1 408 /);
    await settles(relay);
  });
});

Deno.test("a body that trickles under --min-body-rate is 408; a fast one passes", async () => {
  await using processes = new Processes();
  const relay = await startRelay(processes, { args: ["--body-timeout=1", "--min-body-rate=1000"] });
  const { url } = await tunnel(processes, relay);
  const started = performance.now();
  const bytes = (text: string) => new TextEncoder().encode(text);
  const head = "POST /echo HTTP/1.1\r\nHost: web.localhost\r\nTransfer-Encoding: chunked\r\n\r\n";
  const trickle = [bytes(head), ...Array.from({ length: 20 }, () => bytes("1\r\nx\r\n"))];
  const answer = await rawExchange(relay.httpPort, trickle, 200);
  assert.match(answer, /^HTTP\/1\.1 408 /);
  assert.match(answer, /under 1000 bytes in 1 s/);
  assert.ok(performance.now() - started < 4_500);
  const fast = await visit(`${url}/echo`, { method: "POST", body: patternStream(MB) });
  assert.equal((await fast.json()).bytes, MB);
  await settles(relay);
});

Deno.test("one address holds at most --max-conns-per-ip connections; others are still served", async () => {
  await using processes = new Processes();
  const relay = await startRelay(processes, { args: ["--max-conns-per-ip=20"] });
  const { url } = await tunnel(processes, relay);
  const from2 = await flood(processes, relay.httpPort, 30, "127.0.0.2");
  assert.deepEqual([from2.held, from2.closed], [20, 10]);
  const response = await visit(`${url}/`);
  assert.equal(response.status, 200);
  await response.body?.cancel();
  await relay.child.waitFor(/closing new connections from 127\.0\.0\.2/);
});

Deno.test("an upload to an origin that never reads gets 504 and frees its slot, and so does a visitor who leaves", async (t) => {
  await using processes = new Processes();
  const relay = await startRelay(processes, { args: ["--body-timeout=1"] });
  const { url } = await tunnel(processes, relay);
  await t.step("504 once the tunnel takes nothing for a window", async () => {
    const response = await visit(`${url}/hang`, { method: "POST", body: patternStream(256 * MB) });
    assert.equal(response.status, 504);
    assert.match(await response.text(), /stopped reading the request body/);
    await settles(relay);
  });
  await t.step("a visitor who gives up mid-upload frees the slot at once", async () => {
    const request = http.request(`${url.replace("web.localhost", "127.0.0.1")}/hang`, {
      method: "POST",
      headers: { host: new URL(url).host },
    });
    request.on("error", () => {});
    request.write(new Uint8Array(MB));
    await new Promise((resolve) => setTimeout(resolve, 300));
    request.destroy();
    await settles(relay, 3_000);
  });
});

Deno.test("the client gives up on an origin that stops reading an upload after --origin-timeout", async () => {
  await using processes = new Processes();
  const relay = await startRelay(processes, { args: ["--body-timeout=30"] });
  const origin = await startOrigin(processes);
  const client = await startClient(processes, relay, [String(origin.port), "web", "--origin-timeout=1000"]);
  const started = performance.now();
  const response = await visit(`${client.urls[0]}/hang`, { method: "POST", body: patternStream(256 * MB) });
  assert.equal(response.status, 504);
  assert.match(await response.text(), /stopped reading the request body for 1 s/);
  assert.ok(performance.now() - started < 15_000);
  await settles(relay);
});
