/**
 * The relay and an agent in one process, joined by the in-memory transport:
 * the same code paths as over QUIC above the transport seam, in a test that
 * needs no second process. Visitors still come over real HTTP on loopback.
 */
import assert from "node:assert/strict";
import { Agent } from "../lib/agent/agent.ts";
import type { AgentEventMap } from "../lib/agent/events.ts";
import { loadOrCreateIdentity } from "../lib/relay/identity.ts";
import { DEFAULT_RELAY_OPTIONS, Relay } from "../lib/relay/relay.ts";
import { memoryPair } from "../lib/transport/memory.ts";
import { visit } from "./helpers/visit.ts";

Deno.test("relay and agent in one process over the in-memory transport serve a request, and say so in events", async () => {
  const dir = await Deno.makeTempDir({ prefix: "reverprox-one-process-" });
  const origin = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, async (request) => {
    return new Response(
      `${request.method} ${new URL(request.url).pathname} ${(await request.text()).length}\n`,
    );
  });
  const relay = await Relay.start({
    ...DEFAULT_RELAY_OPTIONS,
    hostname: "127.0.0.1",
    httpPort: 0,
    quicPort: 0,
    identity: await loadOrCreateIdentity(dir, "localhost"),
  });
  const agent = new Agent({
    connect: () => {
      const [agentEnd, relayEnd] = memoryPair();
      relay.serveClient(relayEnd);
      return Promise.resolve({ conn: agentEnd, relay: "in-process", fingerprint: "" });
    },
    clientId: "one-process-client-id",
    tunnels: [{
      kind: "http",
      name: "inproc",
      origin: { protocol: "http:", hostname: "127.0.0.1", port: origin.addr.port },
    }],
  });
  const seen: (keyof AgentEventMap)[] = [];
  for (const name of ["request-started", "response-head", "request-done"] as const) {
    agent.events.on(name, () => seen.push(name));
  }
  const online = new Promise<AgentEventMap["online"]>((resolve) => agent.events.on("online", resolve));
  const stopping = new AbortController();
  const running = agent.run(stopping.signal);
  try {
    const { link, tunnels } = await online;
    assert.equal(link.transport, "memory");
    assert.equal(tunnels[0].url, `http://inproc.localhost:${relay.httpPort}`);
    const response = await visit(`${tunnels[0].url}/hello`, { method: "POST", body: "12345" });
    assert.equal(await response.text(), "POST /hello 5\n");
    const status = await (await visit(`http://localhost:${relay.httpPort}/.well-known/reverprox/status`))
      .json();
    assert.equal(status.clients, 1);
    assert.deepEqual(seen, ["request-started", "response-head", "request-done"]);
  } finally {
    stopping.abort();
    await running;
    await relay.shutdown();
    await origin.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
});
