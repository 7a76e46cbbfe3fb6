/**
 * `deno task demo`: a relay, a sample app and a client on loopback in one
 * process, with nothing to set up. Prints the public URL (`*.localhost`
 * resolves to loopback in browsers and curl) and runs until Ctrl-C.
 *
 * Flags: `--http-port N` (8080), `--quic-port N` (4433); 0 picks free ports.
 * @module
 */
import { Command, Option } from "commander";
import { join } from "node:path";
import { Agent } from "../lib/agent/agent.ts";
import { quicRelay } from "../lib/agent/link.ts";
import { printRequestLog } from "../lib/agent/request_log.ts";
import { loadOrCreateIdentity } from "../lib/relay/identity.ts";
import { DEFAULT_RELAY_OPTIONS, Relay } from "../lib/relay/relay.ts";
import { setupLogging } from "../lib/shared/log.ts";
import { sampleApp } from "./sample_app.ts";

const flags = new Command("demo")
  .addOption(new Option("--http-port <port>").argParser(Number).default(8080))
  .addOption(new Option("--quic-port <port>").argParser(Number).default(4433))
  .parse(Deno.args, { from: "user" })
  .opts<{ httpPort: number; quicPort: number }>();

setupLogging("warning");
const scratch = await Deno.makeTempDir({ prefix: "reverprox-demo-" });
const app = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, sampleApp);
const identity = await loadOrCreateIdentity(scratch, "localhost");
let relay: Relay;
try {
  relay = await Relay.start({
    ...DEFAULT_RELAY_OPTIONS,
    hostname: "127.0.0.1",
    httpPort: flags.httpPort,
    quicPort: flags.quicPort,
    identity,
  });
} catch (error) {
  if (!(error instanceof Deno.errors.AddrInUse)) throw error;
  console.error(
    `demo: ${error.message}; pick free ports, e.g. deno task demo --http-port 8081 --quic-port 4434`,
  );
  await app.shutdown();
  await Deno.remove(scratch, { recursive: true });
  Deno.exit(1);
}
const stopping = new AbortController();
const agent = new Agent({
  connect: quicRelay({
    relay: { hostname: "127.0.0.1", port: relay.quicPort },
    fingerprint: relay.options.identity.fingerprint,
    knownRelaysFile: join(scratch, "known_relays"),
  }),
  clientId: crypto.randomUUID(),
  tunnels: [{
    kind: "http",
    name: "demo",
    origin: { protocol: "http:", hostname: "127.0.0.1", port: app.addr.port },
  }],
});
agent.events.on("online", ({ tunnels }) => {
  console.log(
    `reverprox demo: relay on :${relay.httpPort} (HTTP) and :${relay.quicPort} (QUIC), sample app on :${app.addr.port}`,
  );
  for (const tunnel of tunnels) console.log(`\n  open ${tunnel.url}\n  or:  curl ${tunnel.url}\n`);
  console.log("Requests show below; Ctrl-C stops everything.");
});
printRequestLog(agent.events, { showTunnel: false });
for (const signal of ["SIGINT", "SIGTERM"] as const) Deno.addSignalListener(signal, () => stopping.abort());
await agent.run(stopping.signal);
await relay.shutdown("demo over");
await app.shutdown();
await Deno.remove(scratch, { recursive: true });
