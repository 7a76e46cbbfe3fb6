/**
 * Tunnels as users live with them: several at once, names that clash, clients
 * and relays that die and come back.
 */
import assert from "node:assert/strict";
import {
  onlineUrls,
  Processes,
  restartRelay,
  startClient,
  startOrigin,
  startRelay,
} from "./helpers/processes.ts";
import { eventually, visit } from "./helpers/visit.ts";

async function text(url: string) {
  const response = await visit(url);
  return { status: response.status, body: await response.text() };
}

Deno.test("two clients with four tunnels serve at once, each to its own origin", async () => {
  await using processes = new Processes();
  const origins = await Promise.all([0, 1, 2, 3].map(() => startOrigin(processes)));
  const relay = await startRelay(processes);
  const tunnelsFile = `${await processes.tempDir()}/tunnels.json`;
  await Deno.writeTextFile(
    tunnelsFile,
    JSON.stringify({
      tunnels: [
        { name: "one", target: String(origins[0].port) },
        { name: "two", target: `127.0.0.1:${origins[1].port}` },
        { name: "three", target: `http://localhost:${origins[2].port}` },
      ],
    }),
  );
  const first = await startClient(processes, relay, ["start", tunnelsFile], { tunnels: 3 });
  const second = await startClient(processes, relay, [String(origins[3].port), "four"], {
    label: "client2",
  });
  const urls = [...first.urls, ...second.urls];
  assert.deepEqual(
    urls.map((url) => new URL(url).hostname),
    ["one", "two", "three", "four"].map((n) => `${n}.localhost`),
  );
  const answers = await Promise.all(
    urls.map((url) => visit(`${url}/echo/${new URL(url).hostname}`).then((r) => r.json())),
  );
  assert.deepEqual(
    answers.map((a) => a.target),
    urls.map((url) => `/echo/${new URL(url).hostname}`),
  );
  // Each origin saw exactly its own tunnel's request.
  const hosts = answers.map((a) => new Map(a.headers as [string, string][]).get("host"));
  assert.deepEqual(hosts, urls.map((url) => new URL(url).host));
});

Deno.test("a taken name is refused with a clear error naming the conflict", async () => {
  await using processes = new Processes();
  const origin = await startOrigin(processes);
  const relay = await startRelay(processes);
  await startClient(processes, relay, [String(origin.port), "api"]);
  const rival = await startClient(processes, relay, [String(origin.port), "api"], {
    label: "rival",
  }).catch((e) => e);
  assert.ok(rival instanceof Error);
  assert.match(rival.message, /relay refused: "api" is in use by another client \(name_taken\)/);
});

Deno.test("without a name the client gets a random readable one, and keeps it across restarts", async () => {
  await using processes = new Processes();
  const origin = await startOrigin(processes);
  const relay = await startRelay(processes);
  const first = await startClient(processes, relay, [String(origin.port)]);
  assert.match(first.urls[0], /^http:\/\/[a-z]+-[a-z]+-\d+\.localhost:\d+$/);
  await first.child.stop();
  const again = await startClient(processes, relay, [String(origin.port)], {
    configDir: first.configDir,
  });
  assert.equal(again.urls[0], first.urls[0]);
});

Deno.test("a client killed with SIGKILL and restarted gets its URL back; others cannot take it meanwhile", async () => {
  await using processes = new Processes();
  const origin = await startOrigin(processes);
  const relay = await startRelay(processes, { args: ["--grace=30"] });
  const client = await startClient(processes, relay, [String(origin.port), "keep"]);
  const url = client.urls[0];
  assert.equal((await text(`${url}/`)).status, 200);

  client.child.kill("SIGKILL");
  await client.child.status;
  // Until the relay misses its heartbeats a request goes onto the link, and waits there for it to resume.
  await relay.child.waitFor(/link down/, { timeoutMs: 30_000 });
  const offline = await eventually(`${url}/`, 503);
  assert.match(offline.body, /tunnel offline/);

  const thief = await startClient(processes, relay, [String(origin.port), "keep"], {
    label: "thief",
  }).catch((e) => e);
  assert.match(String(thief), /name_taken/);

  const back = await startClient(processes, relay, [String(origin.port), "keep"], {
    configDir: client.configDir,
  });
  assert.equal(back.urls[0], url);
  assert.equal((await text(`${url}/`)).status, 200);
});

Deno.test("Ctrl-C frees the name at once; after the grace period an abandoned name is recycled", async () => {
  await using processes = new Processes();
  const origin = await startOrigin(processes);
  const relay = await startRelay(processes, { args: ["--grace=1"] });
  const polite = await startClient(processes, relay, [String(origin.port), "polite"]);
  polite.child.kill("SIGINT");
  assert.equal((await polite.child.status).code, 0);
  assert.equal((await text(`${polite.urls[0]}/`)).status, 404);

  const crashed = await startClient(processes, relay, [String(origin.port), "crashed"]);
  crashed.child.kill("SIGKILL");
  await eventually(`${crashed.urls[0]}/`, 503);
  await eventually(`${crashed.urls[0]}/`, 404);
  const newcomer = await startClient(processes, relay, [String(origin.port), "crashed"], {
    label: "newcomer",
  });
  assert.equal(newcomer.urls[0], crashed.urls[0]);
});

Deno.test("a restarted relay gets its clients back by themselves, same URLs", async () => {
  await using processes = new Processes();
  const origin = await startOrigin(processes);
  const relay = await startRelay(processes);
  const client = await startClient(processes, relay, [String(origin.port), "phoenix"]);
  const url = client.urls[0];
  const before = client.child.lines.length;

  await relay.child.stop();
  assert.equal((await visit(`${url}/`).catch((e) => e)) instanceof Error, true);
  const restarted = await restartRelay(processes, relay);
  assert.equal(restarted.fingerprint, relay.fingerprint);
  const [again] = await onlineUrls(client.child, 1, before);
  assert.equal(again, url);
  assert.equal((await text(`${url}/`)).status, 200);
  assert.match(client.child.output(), /relay closed the connection: relay shutting down/);
});

Deno.test("a restarted relay keeps each name for its owner: visitors see 503, rivals are refused", async () => {
  await using processes = new Processes();
  const origin = await startOrigin(processes);
  const relay = await startRelay(processes, { args: ["--grace=30"] });
  const owner = await startClient(processes, relay, [String(origin.port), "kept"]);
  owner.child.kill("SIGKILL");
  await owner.child.status;
  await relay.child.stop();
  await restartRelay(processes, relay, ["--grace=30"]);
  const offline = await text(`${owner.urls[0]}/`);
  assert.equal(offline.status, 503);
  const rival = await startClient(processes, relay, [String(origin.port), "kept"], { label: "rival" })
    .catch((error) => error);
  assert.match(String(rival), /name_taken/);
  const back = await startClient(processes, relay, [String(origin.port), "kept"], {
    configDir: owner.configDir,
  });
  assert.equal(back.urls[0], owner.urls[0]);
  assert.equal((await text(`${owner.urls[0]}/`)).status, 200);
});
