/**
 * Raw TCP tunnels: bytes exact both ways, half-close carried across, many
 * connections at once, a cap that refuses at once, a real protocol (Redis),
 * and the same public port after the relay comes back.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import {
  Child,
  onlineUrls,
  Processes,
  refusedClient,
  type RelayHandle,
  restartRelay,
  startClient,
  startRelay,
} from "./helpers/processes.ts";

const run = promisify(execFile);

async function startEcho(processes: Processes) {
  const echo = processes.add(Child.script("tcp-echo", "tests/fixtures/tcp_echo.ts", []));
  return Number((await echo.waitFor(/^ready port=(\d+)/))[1]);
}

async function tcpTunnel(processes: Processes, relay: RelayHandle, port: number, args: string[] = []) {
  const client = await startClient(processes, relay, ["tcp", String(port), ...args]);
  const url = new URL(client.urls[0]);
  assert.equal(url.protocol, "tcp:");
  return { client, port: Number(url.port) };
}

/** Everything `conn` yields until the far end closes. */
async function readAll(conn: Deno.TcpConn): Promise<Uint8Array> {
  const chunks: Uint8Array<ArrayBuffer>[] = [];
  for (
    let buffer = new Uint8Array(65536), n;
    (n = await conn.read(buffer).catch(() => null)) !== null;
    buffer = new Uint8Array(65536)
  ) {
    chunks.push(buffer.slice(0, n));
  }
  conn.close();
  return new Uint8Array(await new Blob(chunks).arrayBuffer());
}

/** Sends `data`, half-closes, and returns everything that comes back until the far end closes. */
async function echoThrough(port: number, data: Uint8Array): Promise<Uint8Array> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const reply = readAll(conn);
  for (let written = 0; written < data.length;) written += await conn.write(data.subarray(written));
  await conn.closeWrite();
  return new Uint8Array(await reply);
}

Deno.test("a TCP tunnel carries bytes exactly, with half-close, over many connections at once", async (t) => {
  await using processes = new Processes();
  const echo = await startEcho(processes);
  const relay = await startRelay(processes, { args: ["--tcp-ports=21000-21099"] });
  const { port } = await tcpTunnel(processes, relay, echo);
  assert.ok(port >= 21000 && port <= 21099);

  await t.step("5 MB echoed byte for byte after the visitor's FIN", async () => {
    const data = crypto.getRandomValues(new Uint8Array(65536));
    const big = new Uint8Array(5 * 1024 * 1024).map((_, i) => data[i % data.length] ^ (i >> 16));
    assert.deepEqual(await echoThrough(port, big), big);
  });
  await t.step("20 connections in parallel each get their own bytes back", async () => {
    const payloads = Array.from(
      { length: 20 },
      (_, i) => new TextEncoder().encode(`connection ${i} `.repeat(5000)),
    );
    const replies = await Promise.all(payloads.map((payload) => echoThrough(port, payload)));
    replies.forEach((reply, i) => assert.deepEqual(reply, payloads[i]));
  });
});

Deno.test("--remote-port asks for a public port inside the relay's range; outside it is refused", async () => {
  await using processes = new Processes();
  const echo = await startEcho(processes);
  const relay = await startRelay(processes, { args: ["--tcp-ports=21400-21499"] });
  const { port } = await tcpTunnel(processes, relay, echo, ["--remote-port=21477"]);
  assert.equal(port, 21477);
  assert.deepEqual(
    await echoThrough(port, new TextEncoder().encode("asked for")),
    new TextEncoder().encode("asked for"),
  );
  const refused = await startClient(processes, relay, ["tcp", String(echo), "--remote-port=22000"], {
    label: "outside",
  })
    .catch((error) => error);
  assert.match(String(refused), /port 22000 is outside 21400-21499 \(port_unavailable\)/);
});

Deno.test("over the connection cap a new TCP connection is refused at once", async () => {
  await using processes = new Processes();
  const echo = await startEcho(processes);
  const relay = await startRelay(processes, { args: ["--tcp-ports=21100-21199", "--max-tcp-conns=2"] });
  const { port } = await tcpTunnel(processes, relay, echo);
  const held = [
    await Deno.connect({ hostname: "127.0.0.1", port }),
    await Deno.connect({ hostname: "127.0.0.1", port }),
  ];
  await new Promise((resolve) => setTimeout(resolve, 300));
  const started = performance.now();
  const refused = await echoThrough(port, new TextEncoder().encode("third")).catch(() => new Uint8Array(0));
  assert.equal(refused.length, 0, "the third connection got no echo");
  assert.ok(performance.now() - started < 2_000, "and was closed at once, not queued");
  for (const conn of held) conn.close();
  await new Promise((resolve) => setTimeout(resolve, 300));
  assert.deepEqual(
    await echoThrough(port, new TextEncoder().encode("later")),
    new TextEncoder().encode("later"),
  );
});

Deno.test("a TCP tunnel keeps its public port when the relay restarts", async () => {
  await using processes = new Processes();
  const echo = await startEcho(processes);
  const relay = await startRelay(processes, { args: ["--tcp-ports=21200-21299"] });
  const { client, port } = await tcpTunnel(processes, relay, echo);
  const before = client.child.lines.length;
  await relay.child.stop();
  await restartRelay(processes, relay, ["--tcp-ports=21200-21299"]);
  const [again] = await onlineUrls(client.child, 1, before);
  assert.equal(Number(new URL(again).port), port);
  assert.deepEqual(
    await echoThrough(port, new TextEncoder().encode("still here")),
    new TextEncoder().encode("still here"),
  );
});

Deno.test("redis-cli talks to redis-server through a TCP tunnel", {
  ignore: !(await run("sh", ["-c", "command -v redis-server && command -v redis-cli"]).then(() =>
    true, () =>
    false)),
}, async () => {
  await using processes = new Processes();
  const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const redisPort = (probe.addr as Deno.NetAddr).port;
  probe.close();
  const redis = processes.add(
    new Child("redis", "redis-server", [
      "--port",
      String(redisPort),
      "--bind",
      "127.0.0.1",
      "--save",
      "",
      "--appendonly",
      "no",
    ]),
  );
  await redis.waitFor(/Ready to accept connections/);
  const relay = await startRelay(processes, { args: ["--tcp-ports=21300-21399"] });
  const { port } = await tcpTunnel(processes, relay, redisPort);
  const cli = (...args: string[]) =>
    run("redis-cli", ["-h", "127.0.0.1", "-p", String(port), ...args]);
  assert.equal((await cli("PING")).stdout.trim(), "PONG");
  assert.equal((await cli("SET", "tunnel", "through QUIC")).stdout.trim(), "OK");
  assert.equal((await cli("GET", "tunnel")).stdout.trim(), "through QUIC");
  const big = "x".repeat(100_000);
  await cli("SET", "big", big);
  assert.equal((await cli("STRLEN", "big")).stdout.trim(), "100000");
});

Deno.test("a client holds at most --max-tcp-tunnels-per-client TCP tunnels, over all processes of one install", async () => {
  await using processes = new Processes();
  const echo = await startEcho(processes);
  const relay = await startRelay(processes, {
    args: ["--tcp-ports=21600-21699", "--max-tcp-tunnels-per-client=2"],
  });
  const install = await processes.tempDir();
  for (const label of ["tcp 1", "tcp 2"]) {
    await startClient(processes, relay, ["tcp", String(echo)], { configDir: install, label });
  }
  await refusedClient(
    processes,
    relay,
    ["tcp", String(echo)],
    /a client may hold 2 TCP tunnels on this relay; 2 are open \(too_many_tunnels\)/,
    { configDir: install, label: "tcp 3" },
  );
  await startClient(processes, relay, ["tcp", String(echo)], { label: "another install" });
});
