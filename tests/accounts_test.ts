/** The sign-up API of an open relay: register, log in, and use the token it hands out. */
import assert from "node:assert/strict";
import http from "node:http";
import { DatabaseSync } from "node:sqlite";
import {
  memoryMB,
  Processes,
  refusedClient,
  startClient,
  startOrigin,
  startRelay,
} from "./helpers/processes.ts";
import { visit } from "./helpers/visit.ts";
import { withTimeout } from "../lib/shared/async.ts";

/** POSTs JSON to the relay's bare domain, from a given loopback address; the answer, read whole. */
function post(
  port: number,
  path: string,
  body: unknown,
  localAddress = "127.0.0.1",
): Promise<{ status: number; headers: http.IncomingHttpHeaders; json(): Record<string, string> }> {
  return new Promise((resolve, reject) => {
    const request = http.request({
      hostname: "127.0.0.1",
      port,
      path,
      method: "POST",
      localAddress,
      headers: { host: "localhost", "content-type": "application/json" },
      agent: false,
    }, (response) => {
      let text = "";
      response.setEncoding("utf8").on("data", (part) => text += part).on("error", reject);
      response.on(
        "end",
        () =>
          resolve({
            status: response.statusCode!,
            headers: response.headers,
            json: () => JSON.parse(text),
          }),
      );
    });
    request.on("error", reject);
    request.end(JSON.stringify(body));
  });
}

/**
 * Sends up to `total` bytes to `path` as a chunked body over a raw connection,
 * reading the answer meanwhile; its status line, and how much had been
 * written when it arrived. A relay that hangs up makes writing fail: that ends
 * the sending.
 */
async function postChunked(
  port: number,
  path: string,
  total: number,
): Promise<{ status: string; sent: number }> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const encoder = new TextEncoder();
  const piece = encoder.encode(`10000\r\n${" ".repeat(0x10000)}\r\n`);
  let sent = 0;
  const answer = (async () => {
    const buffer = new Uint8Array(4096);
    const n = await conn.read(buffer).catch(() => null);
    return { status: new TextDecoder().decode(buffer.subarray(0, n ?? 0)).split("\r\n")[0], sent };
  })();
  try {
    await conn.write(
      encoder.encode(`POST ${path} HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n`),
    );
    for (let answered = false; sent < total && !answered;) {
      sent += await conn.write(piece);
      answered = await Promise.race([answer.then(() => true), Promise.resolve(false)]);
    }
  } catch {
    // The relay hung up.
  }
  return await withTimeout(answer, 5_000, "an answer").finally(() => conn.close());
}

Deno.test("register and log in over HTTP; the token is limited to the user's names", async (t) => {
  await using processes = new Processes();
  const origin = await startOrigin(processes);
  const relay = await startRelay(processes, { args: ["--registration"] });
  let token = "";
  await t.step("register: 201 with a token, 409 when taken, 400 for bad input", async () => {
    const created = await post(relay.httpPort, "/api/register", {
      username: "ada",
      password: "correct horse",
    });
    assert.equal(created.status, 201);
    const body = created.json();
    assert.match(body.token, /^rp_/);
    assert.equal(body.names, "ada-*");
    const taken = await post(relay.httpPort, "/api/register", { username: "ada", password: "another one" });
    assert.equal(taken.status, 409);
    for (
      const bad of [{ username: "Not_A_Label", password: "long enough" }, {
        username: "bob",
        password: "short",
      }, "nonsense"]
    ) {
      const response = await post(relay.httpPort, "/api/register", bad);
      assert.equal(response.status, 400);
    }
  });
  await t.step("auth: 401 for a wrong password, 200 with a fresh token for the right one", async () => {
    const wrong = await post(relay.httpPort, "/api/auth", { username: "ada", password: "wrong horse" });
    assert.equal(wrong.status, 401);
    const right = await post(relay.httpPort, "/api/auth", { username: "ada", password: "correct horse" });
    assert.equal(right.status, 200);
    token = right.json().token;
  });
  await t.step("the token opens ada-* tunnels and nothing else", async () => {
    const client = await startClient(processes, relay, [String(origin.port), "ada-blog", `--token=${token}`]);
    assert.equal((await visit(`${client.urls[0]}/`)).status, 200);
    await refusedClient(
      processes,
      relay,
      [String(origin.port), "bob-blog", `--token=${token}`],
      /may only use names matching ada-\* \(not_permitted\)/,
      { label: "other" },
    );
  });
});

Deno.test("password guessing against the sign-up API is throttled per address", async () => {
  await using processes = new Processes();
  const relay = await startRelay(processes, { args: ["--registration"] });
  const statuses = [];
  for (let i = 0; i < 15; i++) {
    const response = await post(relay.httpPort, "/api/auth", {
      username: "ada",
      password: `guess-${i}-guess`,
    });
    statuses.push(response.status);
  }
  assert.equal(statuses[0], 401);
  assert.ok(statuses.includes(429), `statuses ${statuses}`);
});

Deno.test("with registration off the sign-up API answers 403", async () => {
  await using processes = new Processes();
  const relay = await startRelay(processes);
  for (const path of ["/api/register", "/api/auth"]) {
    const response = await post(relay.httpPort, path, { username: "ada", password: "correct horse" });
    assert.equal(response.status, 403);
  }
});

Deno.test("a username whose names would overlap another user's is refused", async () => {
  await using processes = new Processes();
  const relay = await startRelay(processes, { args: ["--registration"] });
  const register = (username: string) =>
    post(relay.httpPort, "/api/register", { username, password: "correct horse" });
  assert.equal((await register("ada")).status, 201);
  const longer = await register("ada-prod");
  assert.equal(longer.status, 409);
  assert.match(longer.json().error, /ada-prod-\* would overlap ada-\* of user ada/);
  assert.equal((await register("bob-dev")).status, 201);
  const shorter = await register("bob");
  assert.equal(shorter.status, 409);
  assert.match(shorter.json().error, /bob-\* would overlap bob-dev-\* of user bob-dev/);
  assert.equal((await register("adam")).status, 201, "a mere common prefix is no overlap");
});

Deno.test("sign-up bodies over 8 KiB get 413 without being read, chunked or not, and memory stays flat", async (t) => {
  await using processes = new Processes();
  const relay = await startRelay(processes, { args: ["--registration"] });
  await t.step("a Content-Length over the cap is refused before the body", async () => {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: relay.httpPort });
    await conn.write(new TextEncoder().encode(
      "POST /api/auth HTTP/1.1\r\nHost: localhost\r\nContent-Length: 800000000\r\n\r\n{",
    ));
    const answer = new Uint8Array(4096);
    const n = await withTimeout(conn.read(answer), 5_000, "the 413").finally(() => conn.close());
    assert.match(new TextDecoder().decode(answer.subarray(0, n ?? 0)), /^HTTP\/1\.1 413 /);
  });
  await t.step(
    "a body just over the cap, and a chunked one of up to 300 MB, get 413; the relay stops reading",
    async () => {
      const over = await post(relay.httpPort, "/api/auth", {
        username: "ada",
        password: "x".repeat(9000),
      });
      assert.equal(over.status, 413);
      assert.match(over.json().error, /over 8192 bytes/);
      const before = memoryMB(relay.child.pid).now;
      const chunked = await postChunked(relay.httpPort, "/api/auth", 300 * 1024 * 1024);
      assert.match(chunked.status, /^HTTP\/1\.1 413 /);
      assert.ok(chunked.sent < 50 * 1024 * 1024, `the relay answered after ${chunked.sent} bytes`);
      const after = memoryMB(relay.child.pid).now;
      assert.ok(after - before < 30, `relay RSS ${before} → ${after} MB`);
    },
  );
  await t.step("an acceptable body still gets its answer", async () => {
    const fine = await post(relay.httpPort, "/api/auth", { username: "ada", password: "correct horse" });
    assert.equal(fine.status, 401);
  });
});

Deno.test("password hashing runs off the event loop: a login flood from four addresses leaves a tunnel fast, and past the hashing queue gets 503", async () => {
  await using processes = new Processes();
  const origin = await startOrigin(processes);
  const relay = await startRelay(processes, { args: ["--registration"] });
  const { token } =
    (await post(relay.httpPort, "/api/register", { username: "ada", password: "correct horse" }))
      .json();
  const client = await startClient(processes, relay, [String(origin.port), "ada-web", `--token=${token}`]);
  const latencies = async (until: () => boolean, most: number) => {
    const times: number[] = [];
    while (times.length < most && !until()) {
      const started = performance.now();
      await (await visit(`${client.urls[0]}/`)).body?.cancel();
      times.push(performance.now() - started);
    }
    return times.sort((a, b) => a - b);
  };
  const idle = await latencies(() => false, 20);
  // Each address sends a burst its per-address rate allows: 40 wrong passwords, each a real scrypt.
  let flooding = true;
  const flood = Promise.all(
    ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"].flatMap((address) =>
      Array.from(
        { length: 10 },
        (_, i) =>
          post(
            relay.httpPort,
            "/api/auth",
            { username: "ada", password: `guess-${i}-${address}` },
            address,
          ),
      )
    ),
  ).finally(() => flooding = false);
  const loaded = await latencies(() => !flooding, 500);
  const answers = await flood;
  const p50 = (times: number[]) => times[times.length >> 1];
  console.log(`tunnel p50 idle ${p50(idle).toFixed(1)} ms, during the flood ${p50(loaded).toFixed(1)} ms`);
  assert.ok(p50(loaded) < Math.max(50, 4 * p50(idle)), `p50 ${p50(loaded).toFixed(1)} ms during the flood`);
  const statuses = answers.map((answer) => answer.status);
  assert.ok(statuses.includes(401), `statuses ${statuses}`);
  const busy = answers.filter((answer) => answer.status === 503);
  assert.ok(busy.length > 0, `statuses ${statuses}`);
  assert.ok(busy.every((answer) => answer.headers["retry-after"] === "1"));
});

Deno.test("each login replaces the user's token; the user's cap holds over clients of old and new tokens", async () => {
  await using processes = new Processes();
  const origin = await startOrigin(processes);
  const relay = await startRelay(processes, { args: ["--registration"] });
  const credentials = { username: "ada", password: "correct horse" };
  const first = (await post(relay.httpPort, "/api/register", credentials)).json().token;
  const tunnelsFile = `${await processes.tempDir()}/tunnels.json`;
  const tunnels = Array.from({ length: 10 }, (_, i) => ({ name: `ada-${i}`, target: String(origin.port) }));
  await Deno.writeTextFile(tunnelsFile, JSON.stringify({ tunnels }));
  await startClient(processes, relay, ["start", tunnelsFile, `--token=${first}`], { tunnels: 10 });

  let latest = "";
  for (let i = 0; i < 3; i++) {
    latest = (await post(relay.httpPort, "/api/auth", credentials)).json().token;
  }
  const db = new DatabaseSync(`${relay.stateDir}/state.db`, { readOnly: true });
  const rows = db.prepare("select count(*) as n from tokens where label = 'user:ada'").get();
  db.close();
  assert.equal(Number(rows?.n), 1, "one token row per user, however often they log in");
  await refusedClient(
    processes,
    relay,
    [String(origin.port), "ada-new", `--token=${latest}`],
    /may hold 10 tunnels; 10 are open \(too_many_tunnels\)/,
    { label: "latest token" },
  );
  await refusedClient(
    processes,
    relay,
    [String(origin.port), "ada-old", `--token=${first}`],
    /\(unauthorized\)/,
    {
      label: "replaced token",
    },
  );
});

Deno.test("a signed-up user may hold 2 TCP tunnels", async () => {
  await using processes = new Processes();
  const origin = await startOrigin(processes);
  const relay = await startRelay(processes, { args: ["--registration", "--tcp-ports=21700-21799"] });
  const credentials = { username: "ada", password: "correct horse" };
  const { token } = (await post(relay.httpPort, "/api/register", credentials)).json();
  const tcp = ["tcp", String(origin.port), `--token=${token}`];
  for (const label of ["tcp 1", "tcp 2"]) await startClient(processes, relay, tcp, { label });
  await refusedClient(processes, relay, tcp, /may hold 2 TCP tunnels; 2 are open \(too_many_tunnels\)/, {
    label: "tcp 3",
  });
});
