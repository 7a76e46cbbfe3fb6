/**
 * HTTP through the tunnel, end to end: a real origin, relay and client as
 * separate processes, visited over real HTTP on loopback.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { gunzipSync } from "node:zlib";
import { Processes, startClient, startOrigin, startRelay } from "./helpers/processes.ts";
import { visit } from "./helpers/visit.ts";
import { patternSha256, patternStream, streamSha256 } from "./helpers/pattern.ts";

const run = promisify(execFile);
const MB = 1024 * 1024;

/** One relay, one origin and one client with a tunnel named "web", shared by the steps of a test. */
async function tunnel(processes: Processes, relayArgs: string[] = [], clientArgs: string[] = []) {
  const origin = await startOrigin(processes);
  const relay = await startRelay(processes, { args: relayArgs });
  const client = await startClient(processes, relay, [
    "http",
    String(origin.port),
    "--name=web",
    ...clientArgs,
  ]);
  return { origin, relay, client, url: client.urls[0] };
}

async function echo(response: Response) {
  return await response.json() as {
    method: string;
    target: string;
    headers: [string, string][];
    bytes: number;
    sha256: string;
  };
}

Deno.test("GET, POST, PUT, DELETE and HEAD reach the origin and come back intact", async (t) => {
  await using processes = new Processes();
  const { url } = await tunnel(processes);
  assert.match(url, /^http:\/\/web\.localhost:\d+$/);

  for (const method of ["GET", "DELETE"]) {
    await t.step(`${method} without a body`, async () => {
      const response = await visit(`${url}/echo/path?q=1&r=two`, { method });
      assert.equal(response.status, 200);
      const seen = await echo(response);
      assert.equal(seen.method, method);
      assert.equal(seen.target, "/echo/path?q=1&r=two");
      assert.equal(seen.bytes, 0);
    });
  }
  for (const method of ["POST", "PUT"]) {
    await t.step(`${method} with a body`, async () => {
      const response = await visit(`${url}/echo`, { method, body: "hello tunnel" });
      const seen = await echo(response);
      assert.equal(seen.method, method);
      assert.equal(seen.bytes, 12);
    });
  }
  await t.step("HEAD returns headers and no body", async () => {
    const response = await visit(`${url}/download?bytes=1234`, { method: "HEAD" });
    assert.equal(response.status, 200);
    assert.equal(response.headers.get("content-length"), "1234");
    assert.equal(response.body, null);
  });
  await t.step("0-byte bodies both ways", async () => {
    const upload = await echo(
      await visit(`${url}/echo`, { method: "POST", body: new Uint8Array(0) }),
    );
    assert.equal(upload.bytes, 0);
    const download = await visit(`${url}/download?bytes=0`);
    assert.equal(download.status, 200);
    assert.equal((await download.arrayBuffer()).byteLength, 0);
  });
  await t.step("204 and 304 carry no body", async () => {
    for (const status of [204, 304]) {
      const response = await visit(`${url}/status/${status}`);
      assert.equal(response.status, status);
      assert.equal(response.body, null);
    }
  });
});

Deno.test("50 MB bodies cross both ways with equal checksums", async (t) => {
  await using processes = new Processes();
  const { url } = await tunnel(processes);
  const size = 50 * MB;
  await t.step("download", async () => {
    const response = await visit(`${url}/download?bytes=${size}`);
    assert.equal(response.headers.get("content-length"), String(size));
    assert.deepEqual(await streamSha256(response.body!), {
      sha256: patternSha256(size),
      bytes: size,
    });
  });
  await t.step("upload", async () => {
    const response = await visit(`${url}/echo`, { method: "POST", body: patternStream(size) });
    const seen = await echo(response);
    assert.equal(seen.bytes, size);
    assert.equal(seen.sha256, patternSha256(size));
  });
});

Deno.test("headers: several Set-Cookie, gzip passthrough, forwarded and hop-by-hop", async (t) => {
  await using processes = new Processes();
  const { url } = await tunnel(processes);
  await t.step("each Set-Cookie stays its own header", async () => {
    const response = await visit(`${url}/cookies`);
    assert.deepEqual(response.headers.getSetCookie(), [
      "session=abc; Path=/; HttpOnly",
      "theme=dark; Path=/",
      "lang=en, fr; Path=/",
    ]);
    await response.body?.cancel();
  });
  await t.step("a gzip body arrives still compressed, byte for byte", async () => {
    const response = await visit(`${url}/gzip`, { headers: { "accept-encoding": "gzip" } });
    assert.equal(response.headers.get("content-encoding"), "gzip");
    const bytes = new Uint8Array(await response.arrayBuffer());
    assert.equal(new TextDecoder().decode(gunzipSync(bytes)), "compressed hello\n".repeat(100));
  });
  await t.step("curl sees the same gzip bytes with --compressed", async () => {
    const { stdout } = await run("curl", [
      "-s",
      "--compressed",
      "--resolve",
      `${new URL(url).host}:127.0.0.1`,
      `${url}/gzip`,
    ]);
    assert.equal(stdout, "compressed hello\n".repeat(100));
  });
  await t.step("X-Forwarded-* added, hop-by-hop dropped, Host kept", async () => {
    const seen = await echo(
      await visit(`${url}/echo`, {
        headers: {
          "x-forwarded-for": "203.0.113.9",
          "x-real-ip": "203.0.113.9",
          "forwarded": "for=203.0.113.9;proto=https",
          "connection": "x-secret",
          "x-secret": "1",
          "x-kept": "yes",
        },
      }),
    );
    const headers = new Map(seen.headers);
    const host = new URL(url).host;
    assert.equal(headers.get("x-forwarded-for"), "203.0.113.9, 127.0.0.1");
    assert.equal(headers.get("x-forwarded-proto"), "http");
    assert.equal(headers.get("x-forwarded-host"), host);
    assert.equal(headers.get("x-real-ip"), "127.0.0.1");
    assert.equal(headers.get("forwarded"), `for=127.0.0.1;proto=http;host="${host}"`);
    assert.equal(headers.get("host"), host);
    assert.equal(headers.get("x-kept"), "yes");
    assert.equal(headers.has("x-secret"), false);
  });
  await t.step("Connection: close, host does not take Host away from the origin", async () => {
    const seen = await echo(await visit(`${url}/echo`, { headers: { "connection": "close, host" } }));
    assert.equal(new Map(seen.headers).get("host"), new URL(url).host);
  });
});

Deno.test("error pages: 404 unknown tunnel, 502 origin down, 504 origin timeout, 431 and 413", async (t) => {
  await using processes = new Processes();
  const { url, origin, client, relay } = await tunnel(processes, ["--max-body-bytes=1000"], [
    "--origin-timeout=1000",
  ]);
  const other = url.replace("//web.", "//nobody.");
  await t.step("404 for a name nobody holds", async () => {
    const response = await visit(`${other}/`);
    assert.equal(response.status, 404);
    assert.equal(response.headers.get("x-reverprox-error"), "unknown_tunnel");
    assert.match(await response.text(), /No tunnel is named "nobody"/);
  });
  await t.step("the bare domain is the relay's own page", async () => {
    const response = await visit(`http://localhost:${relay.httpPort}/`);
    assert.equal(response.status, 200);
    assert.match(await response.text(), /reverprox relay/);
  });
  await t.step("504 when the origin does not answer in time", async () => {
    const response = await visit(`${url}/hang`);
    assert.equal(response.status, 504);
    assert.equal(response.headers.get("x-reverprox-error"), "origin_timeout");
    await response.body?.cancel();
  });
  await t.step("431 for oversized headers", async () => {
    const response = await visit(`${url}/echo`, { headers: { "x-big": "a".repeat(40_000) } });
    assert.equal(response.status, 431);
    await response.body?.cancel();
  });
  await t.step("413 for a body over --max-body-bytes", async () => {
    const response = await visit(`${url}/echo`, { method: "POST", body: "x".repeat(5000) });
    assert.equal(response.status, 413);
    await response.body?.cancel();
  });
  await t.step(
    "502 when the origin is down, said once by the client, then answered by the relay",
    async () => {
      await origin.child.stop();
      const codes: string[] = [];
      for (let i = 0; i < 3; i++) {
        const response = await visit(`${url}/`);
        assert.equal(response.status, 502);
        codes.push(response.headers.get("x-reverprox-error")!);
        await response.body?.cancel();
        // The client tells the relay the origin is down; from then on the relay answers without crossing.
        await new Promise((resolve) => setTimeout(resolve, 200));
      }
      assert.ok(["origin_refused", "origin_down"].includes(codes[0]), codes[0]);
      assert.deepEqual(codes.slice(1), ["origin_down", "origin_down"]);
      const notices = client.child.lines.filter((line) => line.includes("nothing answers at"));
      assert.equal(notices.length, 1, client.child.output());
    },
  );
});

Deno.test("the relay answers 503 past --max-in-flight and drains in-flight requests on SIGTERM", async (t) => {
  await using processes = new Processes();
  const { url, relay } = await tunnel(processes, ["--max-in-flight=1"]);
  const slow = visit(`${url}/slow?ms=1500`);
  await new Promise((resolve) => setTimeout(resolve, 300));
  await t.step("a second request while one is in flight is refused", async () => {
    const refused = await visit(`${url}/`);
    assert.equal(refused.status, 503);
    assert.equal(refused.headers.get("x-reverprox-error"), "relay_overloaded");
    await refused.body?.cancel();
  });
  await t.step("SIGTERM lets the slow request finish, then the relay exits cleanly", async () => {
    relay.child.kill("SIGTERM");
    const response = await slow;
    assert.equal(response.status, 200);
    assert.equal(await response.text(), "slow\n");
    assert.equal((await relay.child.status).code, 0);
  });
});

Deno.test("the client warns at start when nothing listens on the origin port", async () => {
  await using processes = new Processes();
  const relay = await startRelay(processes);
  const unused = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (unused.addr as Deno.NetAddr).port;
  unused.close();
  const client = await startClient(processes, relay, [String(port), "early"]);
  await client.child.waitFor(
    new RegExp(`warning: nothing answers at localhost:${port}.*visitors get 502 until it starts`),
  );
  const response = await visit(`${client.urls[0]}/`);
  assert.equal(response.status, 502);
  await response.body?.cancel();
});

Deno.test("past --max-in-flight-per-tunnel a busy tunnel answers 503 while other tunnels serve", async () => {
  await using processes = new Processes();
  const origin = await startOrigin(processes);
  const relay = await startRelay(processes, { args: ["--max-in-flight-per-tunnel=1"] });
  const busy = (await startClient(processes, relay, [String(origin.port), "busy"])).urls[0];
  const calm =
    (await startClient(processes, relay, [String(origin.port), "calm"], { label: "calm" })).urls[0];
  const slow = visit(`${busy}/slow?ms=1000`);
  await new Promise((resolve) => setTimeout(resolve, 300));
  const refused = await visit(`${busy}/`);
  assert.equal(refused.status, 503);
  assert.equal(refused.headers.get("x-reverprox-error"), "tunnel_overloaded");
  await refused.body?.cancel();
  const other = await visit(`${calm}/`);
  assert.equal(other.status, 200);
  await other.body?.cancel();
  assert.equal((await slow).status, 200);
});
