/**
 * The TCP transport (`--transport tcp`, and `auto` when UDP is blocked):
 * the same traffic as over QUIC (HTTP, 100 MB each way, WebSocket, SSE, a
 * TCP tunnel), through an HTTP CONNECT proxy, refusals as clear as over
 * QUIC, and a download that does not starve a small request beside it.
 */
import assert from "node:assert/strict";
import {
  Child,
  Processes,
  refusedClient,
  type RelayHandle,
  spawnClient,
  startClient,
  startOrigin,
  startRelay,
} from "./helpers/processes.ts";
import { createNamespace, netnsUnavailable } from "./helpers/netns.ts";
import { startConnectProxy } from "./helpers/connect_proxy.ts";
import { checkTraffic } from "./helpers/traffic.ts";
import { visit, type VisitInit } from "./helpers/visit.ts";
import { patternSha256, streamSha256 } from "./helpers/pattern.ts";
import { caSigned } from "./helpers/certs.ts";

const MB = 1024 * 1024;

async function tcpClient(processes: Processes, args: string[] = [], env: Record<string, string> = {}) {
  const origin = await startOrigin(processes);
  const relay = await startRelay(processes);
  const client = await startClient(processes, relay, [
    String(origin.port),
    "over-tcp",
    "--transport=tcp",
    ...args,
  ], {
    env,
  });
  return { relay, client, url: client.urls[0] };
}

Deno.test("--transport tcp carries HTTP, 100 MB each way, WebSocket and SSE", async (t) => {
  await using processes = new Processes();
  const { url, client, relay } = await tcpClient(processes);
  await t.step("the client says it is on TCP", async () => {
    await client.child.waitFor(/^reverprox: online .* over tcp/);
  });
  await checkTraffic(t, url, { relay: relay.child.pid, client: client.child.pid });
});

/** Requests `url` one after another until `until` resolves (and then a second more); returns what failed. */
async function requestLoop(url: string, address: string, until: Promise<unknown>, maxMs: number) {
  let done = false;
  until.then(() => setTimeout(() => done = true, 1_000));
  const failures: string[] = [];
  let count = 0;
  for (const deadline = Date.now() + maxMs; !done && Date.now() < deadline; count++) {
    try {
      const response = await visit(`${url}/status/200`, { address });
      const text = await response.text();
      if (response.status !== 200) failures.push(`${response.status} ${text.trim()}`);
    } catch (error) {
      failures.push((error as Error).message);
    }
  }
  return { count, failures };
}

Deno.test("UDP blocked: auto serves over TCP within 5 s, and is back on QUIC once UDP passes, no request failing", async (t) => {
  const unavailable = await netnsUnavailable();
  if (unavailable) {
    return console.log(`skipped: ${unavailable}; the UDP-blocked test needs network namespaces`);
  }
  await using processes = new Processes();
  const ns = await createNamespace(processes);
  const relay = await startRelay(processes, { netns: ns });
  await ns.blockUdp(relay.quicPort);
  const origin = await startOrigin(processes);
  const { child } = await spawnClient(processes, relay, [String(origin.port), "roam"], {
    env: { REVERPROX_QUIC_PROBE_MS: "2000" },
  });
  let url = "";
  await t.step("online over TCP within 5 s of the agent starting", async () => {
    const starting = await child.waitFor(/control API and inspector at/);
    const began = performance.now();
    // Should the client end up elsewhere, the relay's side of the story goes with the failure.
    const online = await child.waitFor(/^reverprox: online .* over tcp/, { from: starting.line })
      .catch((error) => Promise.reject(new Error(`${error.message}\n${relay.child.output()}`)));
    console.log(
      `online over tcp ${((performance.now() - began) / 1000).toFixed(1)} s after the agent started`,
    );
    assert.ok(performance.now() - began < 5_000, child.output());
    url = (await child.waitFor(/^\s+(\w+:\/\/\S+) →/, { from: online.line }))[1];
    assert.match(child.output(), /transport to .*: tcp, since no QUIC answer/);
  });
  await t.step("HTTP and 100 MB down over it", async () => {
    const response = await visit(`${url}/download?bytes=${100 * MB}`, { address: ns.address });
    assert.deepEqual(await streamSha256(response.body!), {
      sha256: patternSha256(100 * MB),
      bytes: 100 * MB,
    });
  });
  await t.step("ls and the relay's status say tcp", async () => {
    assert.match(await ls(child), /^relay \S+ online over tcp$/m);
    assert.equal((await relayStatus(relay, ns.address)).clientsOver_tcp, 1);
  });
  await t.step("UDP passes again: back on QUIC within 90 s, requests meanwhile all answered", async () => {
    // An event stream that lasts across the move: it must finish on the old connection.
    const events = visit(`${url}/sse?count=30&interval=200`, { address: ns.address }).then((r) => r.text());
    await ns.unblockUdp();
    const onQuic = child.waitFor(/^reverprox: online .* over quic/, { timeoutMs: 90_000 });
    const loop = await requestLoop(url, ns.address, onQuic, 100_000);
    await onQuic;
    console.log(`${loop.count} requests across the move, ${loop.failures.length} failed`);
    assert.deepEqual(loop.failures, []);
    assert.equal((await events).match(/^id: /gm)?.length, 30);
    assert.ok(loop.count > 0);
  });
  await t.step("ls says quic; the relay closed the old connection once it was idle", async () => {
    assert.match(await ls(child), /^relay \S+ online over quic$/m);
    const status = await relayStatus(relay, ns.address);
    assert.equal(status.clientsOver_quic, 1);
    assert.equal(status.clientsOver_tcp, undefined);
  });
});

/** `reverprox ls` against the agent `child` runs. */
async function ls(child: Child): Promise<string> {
  const [, api] = await child.waitFor(/control API and inspector at http:\/\/(\S+)/);
  const ls = Child.script("ls", "client.ts", ["ls", `--api-addr=${api}`]);
  const { code } = await ls.done();
  assert.equal(code, 0, ls.output());
  return ls.lines.join("\n");
}

async function relayStatus(relay: RelayHandle, address: string): Promise<Record<string, number>> {
  const response = await visit(`http://localhost:${relay.httpPort}/.well-known/reverprox/status`, {
    address,
  });
  return await response.json();
}

Deno.test("HTTPS_PROXY: the TCP transport goes through a CONNECT proxy; a refusing or absent proxy is named", async (t) => {
  await using processes = new Processes();
  await t.step("through the proxy", async () => {
    await using proxy = await startConnectProxy();
    const { url, relay } = await tcpClient(processes, [], { HTTPS_PROXY: proxy.url });
    assert.deepEqual(proxy.connects, [`127.0.0.1:${relay.quicPort}`]);
    const response = await visit(`${url}/status/200`);
    assert.equal(response.status, 200);
    await response.body?.cancel();
  });
  await t.step("a proxy that refuses", async () => {
    await using proxy = await startConnectProxy({ refuse: true });
    const relay = await startRelay(processes);
    const { child } = await spawnClient(processes, relay, ["3000", "--transport=tcp"], {
      env: { HTTPS_PROXY: proxy.url },
    });
    await child.waitFor(/through proxy 127\.0\.0\.1:\d+ failed: .*refused to connect to .*403 Forbidden/);
  });
  await t.step("no proxy where the variable says", async () => {
    const relay = await startRelay(processes);
    const { child } = await spawnClient(processes, relay, ["3000", "--transport=tcp"], {
      env: { HTTPS_PROXY: "http://127.0.0.1:1" },
    });
    await child.waitFor(/through proxy 127\.0\.0\.1:1 failed: cannot reach proxy 127\.0\.0\.1:1/);
  });
});

Deno.test("a changed relay fingerprint is refused over TCP as over QUIC", async () => {
  await using processes = new Processes();
  const relay = await startRelay(processes);
  await refusedClient(
    processes,
    relay,
    ["3000", "--transport=tcp", `--fingerprint=${"ab".repeat(32)}`],
    /fingerprint/i,
  );
});

Deno.test("a wrong token is refused over TCP with the relay's own words", async () => {
  await using processes = new Processes();
  const relay = await startRelay(processes, { args: ["--token=right-token"] });
  await refusedClient(processes, relay, ["3000", "--transport=tcp", "--token=wrong"], /token/i);
});

Deno.test("over TCP, a small request is answered quickly while a big download is read slowly beside it", async () => {
  await using processes = new Processes();
  const { url } = await tcpClient(processes);
  const download = await visit(`${url}/download?bytes=${500 * MB}`);
  const reader = download.body!.getReader();
  await reader.read();
  // The download stays in flight, its reader idle: its stream's window is full, the rest must still flow.
  const started = performance.now();
  const small = await visit(`${url}/status/200`);
  await small.text();
  const ms = performance.now() - started;
  console.log(`small request beside a stalled download: ${ms.toFixed(0)} ms`);
  assert.ok(ms < 2_000, `took ${ms} ms`);
  await reader.cancel();
});

Deno.test("a TCP tunnel over the TCP transport echoes 5 MB exactly, half-close included", async () => {
  await using processes = new Processes();
  const echo = processes.add(Child.script("tcp-echo", "tests/fixtures/tcp_echo.ts", []));
  const echoPort = Number((await echo.waitFor(/^ready port=(\d+)/))[1]);
  const relay = await startRelay(processes, { args: ["--tcp-ports=21100-21199"] });
  const client = await startClient(processes, relay, ["tcp", String(echoPort), "--transport=tcp"]);
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: Number(new URL(client.urls[0]).port) });
  const sent = patternBytes(5 * MB);
  const reply = new Response(conn.readable).bytes();
  for (let written = 0; written < sent.length;) written += await conn.write(sent.subarray(written));
  await conn.closeWrite();
  const received = await reply;
  assert.equal(received.length, sent.length);
  assert.ok(received.every((byte, i) => byte === sent[i]));
});

function patternBytes(size: number): Uint8Array {
  return new Uint8Array(size).map((_, i) => (i * 31 + (i >> 12)) & 0xff);
}

Deno.test("--server http(s)://domain: the TCP transport through the relay's public port, for a relay behind a proxy", async (t) => {
  await using processes = new Processes();
  const origin = await startOrigin(processes);
  const through = async (
    relay: RelayHandle,
    server: string,
    visitInit: VisitInit,
    { env = {}, transport = "tcp", name = "pub" }: {
      env?: Record<string, string>;
      transport?: string;
      name?: string;
    } = {},
  ) => {
    const client = await startClient(processes, { ...relay, server }, [
      String(origin.port),
      name,
      `--transport=${transport === "tcp" ? "auto" : transport}`,
    ], { env });
    assert.match(client.child.output(), new RegExp(`online via .* over ${transport}`));
    const response = await visit(`${client.urls[0]}/status/200`, visitInit);
    assert.equal(response.status, 200);
    await response.body?.cancel();
  };
  await t.step("plain HTTP port", async () => {
    const relay = await startRelay(processes);
    await through(relay, `http://localhost:${relay.httpPort}`, {});
  });
  await t.step("HTTPS port, its certificate trusted like a website's", async (https) => {
    // Node's visitor refuses `*.localhost` (a wildcard under a single label): the tunnel's own name, then.
    const certs = await caSigned(await processes.tempDir(), ["localhost", "pub.localhost", "poll.localhost"]);
    const relay = await startRelay(processes, {
      args: [`--tls=${certs.cert}`, `--key=${certs.key}`, "--https-port=0"],
    });
    const ca = await Deno.readTextFile(certs.ca);
    await through(relay, `https://localhost:${relay.httpsPort}`, { ca }, { env: { DENO_CERT: certs.ca } });
    await https.step("and long-polling to it through a CONNECT proxy (HTTPS_PROXY)", async () => {
      await using proxy = await startConnectProxy();
      const env = { DENO_CERT: certs.ca, HTTPS_PROXY: proxy.url };
      await through(relay, `https://localhost:${relay.httpsPort}`, { ca }, {
        env,
        transport: "http",
        name: "poll",
      });
      const tunnels = proxy.connects.filter((target) => target === `localhost:${relay.httpsPort}`);
      assert.ok(tunnels.length >= 2, `the CA fetch and the polls went through the proxy: ${proxy.connects}`);
      assert.ok(tunnels.length < 10, `${tunnels.length} CONNECTs: its connections are kept alive`);
    });
  });
});
