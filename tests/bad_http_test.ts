/**
 * Hostile HTTP at the relay's public port, as raw bytes: malformed Host
 * headers, CRLF tricks, absurd Content-Length values, too many headers. Each
 * gets a clear status, nothing reaches the wrong tunnel, and the relay keeps
 * serving.
 */
import assert from "node:assert/strict";
import { Processes, startClient, startOrigin, startRelay } from "./helpers/processes.ts";
import { visit } from "./helpers/visit.ts";

/** Sends `raw` on a fresh TCP connection and returns the status code of the first answer (0 if none). */
async function rawStatus(port: number, raw: string): Promise<number> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    await conn.write(new TextEncoder().encode(raw));
    const buffer = new Uint8Array(4096);
    const n = await Promise.race([
      conn.read(buffer),
      new Promise<null>((resolve) => setTimeout(() => resolve(null), 5_000)),
    ]);
    const head = n ? new TextDecoder().decode(buffer.subarray(0, n)) : "";
    return Number(head.match(/^HTTP\/1\.1 (\d{3})/)?.[1] ?? 0);
  } finally {
    conn.close();
  }
}

Deno.test("malformed hosts, CRLF tricks, absurd lengths and header floods get clear statuses", async (t) => {
  await using processes = new Processes();
  const origin = await startOrigin(processes);
  const relay = await startRelay(processes, {
    args: ["--max-header-count=50", "--body-timeout=1", "--header-timeout=1"],
  });
  const client = await startClient(processes, relay, [String(origin.port), "tenant"]);
  const port = relay.httpPort;
  const get = (host: string, extra = "") =>
    `GET /echo HTTP/1.1\r\nHost: ${host}\r\n${extra}Connection: close\r\n\r\n`;

  await t.step(
    "hosts that name no tunnel are 404, the bare domain is the relay's page, foreign hosts are 421",
    async () => {
      for (const host of ["a.tenant.localhost", "tenant..localhost", "tenant-2.localhost"]) {
        assert.equal(await rawStatus(port, get(host)), 404, host);
      }
      for (const host of ["localhost", "localhost.", "tenant.localhost.", "tenant.localhost.:1"]) {
        assert.equal(await rawStatus(port, get(host)), 200, host);
      }
      for (const host of [".localhost", "tenant.localhost.evil.com", "127.0.0.1", "evil.example"]) {
        assert.equal(await rawStatus(port, get(host)), 421, host);
      }
    },
  );
  await t.step("a missing or malformed Host is 400", async () => {
    assert.equal(await rawStatus(port, "GET /echo HTTP/1.1\r\nConnection: close\r\n\r\n"), 400);
    for (const host of ["tenant.localhost:notaport", "tenänt.localhost", "tenant.localhost/x", "a b"]) {
      assert.equal(await rawStatus(port, get(host)), 400, host);
    }
  });
  await t.step("a bare CR inside a header value is refused, not passed on as a second header", async () => {
    assert.equal(await rawStatus(port, get("tenant.localhost", "X-A: one\rX-Injected: two\r\n")), 400);
  });
  await t.step("absurd, negative and conflicting Content-Length values are 400", async () => {
    for (const lengths of [["99999999999999999999999"], ["-1"], ["5", "6"], ["1e3"]]) {
      const extra = lengths.map((length) => `Content-Length: ${length}\r\n`).join("");
      const status = await rawStatus(
        port,
        `POST /echo HTTP/1.1\r\nHost: tenant.localhost\r\n${extra}Connection: close\r\n\r\nhello`,
      );
      assert.equal(status, 400, `Content-Length ${lengths}`);
    }
  });
  await t.step("more headers than --max-header-count is 431", async () => {
    const many = Array.from({ length: 60 }, (_, i) => `X-H${i}: v\r\n`).join("");
    assert.equal(await rawStatus(port, get("tenant.localhost", many)), 431);
  });
  await t.step("a head far over every cap is 431 from the parser, before the app sees it", async () => {
    assert.equal(await rawStatus(port, get("tenant.localhost", `X-Big: ${"b".repeat(200_000)}\r\n`)), 431);
  });
  await t.step("heads that trickle in are 408 (slow loris on headers) while others are served", async () => {
    const started = performance.now();
    const trickles = Array.from({ length: 50 }, async () => {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port });
      const encoder = new TextEncoder();
      await conn.write(encoder.encode("GET /echo HTTP/1.1\r\nHost: tenant.localhost\r\n"));
      const answer = new Response(conn.readable).text();
      // One header byte every 100 ms: the connection is never idle, but the head never ends.
      const timer = setInterval(() => conn.write(encoder.encode("x")).catch(() => {}), 100);
      try {
        return await Promise.race([answer, new Promise<string>((resolve) => setTimeout(resolve, 8_000, ""))]);
      } finally {
        clearInterval(timer);
        try {
          conn.close();
        } catch {
          // Closed by the relay.
        }
      }
    });
    const response = await visit(`${client.urls[0]}/echo`);
    assert.equal(response.status, 200);
    await response.body?.cancel();
    for (const answer of await Promise.all(trickles)) {
      assert.match(answer, /^HTTP\/1\.1 408 /);
      assert.match(answer, /x-reverprox-error: request_timeout/);
    }
    assert.ok(performance.now() - started < 5_000, `took ${performance.now() - started} ms`);
  });
  await t.step("a body that stalls mid-way is 408 (slow loris on bodies)", async () => {
    const started = performance.now();
    const status = await rawStatus(
      port,
      "POST /echo HTTP/1.1\r\nHost: tenant.localhost\r\nContent-Length: 100\r\nConnection: close\r\n\r\n0123456789",
    );
    assert.equal(status, 408);
    assert.ok(performance.now() - started < 3_000);
  });
  await t.step("the relay still serves its tenant", async () => {
    const response = await visit(`${client.urls[0]}/echo`);
    assert.equal(response.status, 200);
    const seen = new Map((await response.json()).headers as [string, string][]);
    assert.equal(seen.has("x-injected"), false);
  });
});
