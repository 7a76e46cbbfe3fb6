/**
 * Trust and access: the relay's `--cert auto` identity, fingerprint pinning,
 * trust on first use with known_relays, and client tokens.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { Processes, refusedClient, startClient, startOrigin, startRelay } from "./helpers/processes.ts";
import { visit } from "./helpers/visit.ts";

Deno.test("--cert auto makes a CA once and reuses it on restart", async () => {
  await using processes = new Processes();
  const first = await startRelay(processes);
  const files = await Array.fromAsync(Deno.readDir(first.stateDir), (entry) => entry.name);
  // (SQLite's write-ahead log files may sit beside state.db.)
  assert.deepEqual(files.filter((f) => !/-(wal|shm)$/.test(f)).sort(), [
    "ca.pem",
    "cert.pem",
    "key.pem",
    "relay.lock",
    "state.db",
  ]);
  assert.equal((await Deno.stat(first.stateDir)).mode! & 0o077, 0, "the state dir is private");
  assert.equal((await Deno.stat(join(first.stateDir, "key.pem"))).mode! & 0o077, 0);
  await first.child.stop();
  const second = await startRelay(processes, { stateDir: first.stateDir });
  assert.equal(second.fingerprint, first.fingerprint);
  assert.match(second.child.output(), /reusing the certificate/);
  const fresh = await startRelay(processes);
  assert.notEqual(fresh.fingerprint, first.fingerprint);
});

Deno.test("a pinned fingerprint connects; a wrong one is refused loudly", async () => {
  await using processes = new Processes();
  const origin = await startOrigin(processes);
  const relay = await startRelay(processes);
  const pinned = await startClient(processes, relay, [
    String(origin.port),
    "pinned",
    `--fingerprint=${relay.fingerprint}`,
  ]);
  assert.equal((await visit(`${pinned.urls[0]}/`)).status, 200);

  const wrong = "ab".repeat(32);
  await refusedClient(
    processes,
    relay,
    [String(origin.port), "wrong", `--fingerprint=${wrong}`],
    new RegExp(`presents CA fingerprint ${relay.fingerprint}, but ${wrong} is pinned`),
    { label: "wrong" },
  );
});

Deno.test("trust on first use remembers the relay; a changed certificate is refused", async () => {
  await using processes = new Processes();
  const origin = await startOrigin(processes);
  const relay = await startRelay(processes);
  const client = await startClient(processes, relay, [String(origin.port), "tofu"]);
  assert.match(client.child.output(), /trusting relay .* on first use/);
  const known = await Deno.readTextFile(join(client.configDir, "known_relays"));
  assert.equal(known, `127.0.0.1:${relay.quicPort} ${relay.fingerprint}\n`);
  await client.child.stop();
  await relay.child.stop();

  // Same address, new identity: an impostor, as far as the client can tell.
  const impostor = await startRelay(processes, {
    httpPort: relay.httpPort,
    quicPort: relay.quicPort,
  });
  await refusedClient(
    processes,
    impostor,
    [String(origin.port), "tofu"],
    /WARNING: the fingerprint of relay 127\.0\.0\.1:\d+ has changed!/,
    { label: "client-again", configDir: client.configDir },
  );
});

Deno.test("a relay with tokens refuses clients without the right one", async () => {
  await using processes = new Processes();
  const origin = await startOrigin(processes);
  const tokensFile = join(await processes.tempDir(), "tokens");
  await Deno.writeTextFile(tokensFile, "# team tokens\nalpha-token\n\nbeta-token\n");
  const relay = await startRelay(processes, {
    args: ["--token=flag-token", `--tokens-file=${tokensFile}`],
  });
  for (const token of ["flag-token", "beta-token"]) {
    const client = await startClient(processes, relay, [
      String(origin.port),
      token.split("-")[0],
      `--token=${token}`,
    ]);
    assert.equal((await visit(`${client.urls[0]}/`)).status, 200);
  }
  const viaEnv = await startClient(processes, relay, [String(origin.port), "env"], {
    env: { REVERPROX_TOKEN: "alpha-token" },
  });
  assert.equal((await visit(`${viaEnv.urls[0]}/`)).status, 200);
  for (const [label, args] of [["no token", []], ["wrong token", ["--token=nope"]]] as const) {
    await refusedClient(
      processes,
      relay,
      [String(origin.port), "x", ...args],
      /relay refused: .*\(unauthorized\)/,
      { label },
    );
  }
});
