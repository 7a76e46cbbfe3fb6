/**
 * Tokens managed on the relay: `reverprox-server token add|list|revoke`, kept
 * hashed in SQLite in the state dir, limited to name patterns and tunnel counts.
 */
import assert from "node:assert/strict";
import {
  Child,
  Processes,
  refusedClient,
  startClient,
  startOrigin,
  startRelay,
} from "./helpers/processes.ts";
import { visit } from "./helpers/visit.ts";

async function tokenCommand(processes: Processes, stateDir: string, ...args: string[]) {
  const child = processes.add(
    Child.script("token", "server.ts", ["token", ...args, `--state-dir=${stateDir}`]),
  );
  const status = await child.status;
  await child.stop();
  return { code: status.code, lines: child.lines };
}

Deno.test("store tokens: added, limited to a name pattern and a tunnel count, listed without values, revoked", async (t) => {
  await using processes = new Processes();
  const stateDir = await processes.tempDir();
  const added = await tokenCommand(
    processes,
    stateDir,
    "add",
    "--label=ci",
    "--names=ci-*",
    "--max-tunnels=2",
  );
  assert.equal(added.code, 0);
  const token = added.lines[0];
  assert.match(token, /^rp_[\w-]{32}$/);

  const listed = await tokenCommand(processes, stateDir, "list");
  assert.match(listed.lines.join("\n"), /^1\tci\tnames=ci-\*\tmax=2\ttcp=-\tcreated /m);
  assert.doesNotMatch(listed.lines.join("\n"), new RegExp(token));
  const db = await Deno.readFile(`${stateDir}/state.db`);
  assert.equal(
    new TextDecoder("latin1").decode(db).includes(token),
    false,
    "the database holds no token value",
  );

  const origin = await startOrigin(processes);
  const relay = await startRelay(processes, { stateDir });
  const port = String(origin.port);
  const refused = (label: string, args: string[], pattern: RegExp) =>
    refusedClient(processes, relay, args, pattern, { label });

  await t.step("the relay is closed once the store holds a live token", async () => {
    await refused("anonymous", [port, "ci-anon"], /\(unauthorized\)/);
  });
  await t.step("names inside the pattern work, names outside it are not permitted", async () => {
    const client = await startClient(processes, relay, [port, "ci-one", `--token=${token}`]);
    assert.equal((await visit(`${client.urls[0]}/`)).status, 200);
    await refused(
      "outside",
      [port, "prod", `--token=${token}`],
      /may only use names matching ci-\* \(not_permitted\)/,
    );
  });
  await t.step("past the tunnel count the token is refused", async () => {
    await startClient(processes, relay, [port, "ci-two", `--token=${token}`], { label: "second" });
    await refused(
      "third",
      [port, "ci-three", `--token=${token}`],
      /may hold 2 tunnels; 2 are open \(too_many_tunnels\)/,
    );
  });
  await t.step("a revoked token is refused from the next connection", async () => {
    assert.equal((await tokenCommand(processes, stateDir, "revoke", "1")).code, 0);
    await refused("revoked", [port, "ci-four", `--token=${token}`], /\(unauthorized\)/);
    assert.match((await tokenCommand(processes, stateDir, "list")).lines[0], /revoked /);
  });
});

Deno.test("--max-tunnels counts every live session of the token, also other processes of the same install", async () => {
  await using processes = new Processes();
  const stateDir = await processes.tempDir();
  const token = (await tokenCommand(processes, stateDir, "add", "--names=ci-*", "--max-tunnels=2")).lines[0];
  const origin = await startOrigin(processes);
  const relay = await startRelay(processes, { stateDir });
  const install = await processes.tempDir();
  const args = (name: string) => [String(origin.port), name, `--token=${token}`];
  const first = await startClient(processes, relay, args("ci-1"), { configDir: install, label: "ci-1" });
  await startClient(processes, relay, args("ci-2"), { configDir: install, label: "ci-2" });
  for (const name of ["ci-3", "ci-4"]) {
    await refusedClient(
      processes,
      relay,
      args(name),
      /may hold 2 tunnels; 2 are open \(too_many_tunnels\)/,
      { configDir: install, label: name },
    );
  }
  // A restarted process of the same install replaces its own older session, which is not counted twice.
  first.child.kill("SIGKILL");
  const again = await startClient(processes, relay, args("ci-1"), {
    configDir: install,
    label: "ci-1 again",
  });
  assert.equal((await visit(`${again.urls[0]}/`)).status, 200);
});

Deno.test("--max-tcp-tunnels caps a token's TCP tunnels; 0 allows none", async () => {
  await using processes = new Processes();
  const stateDir = await processes.tempDir();
  const oneTcp =
    (await tokenCommand(processes, stateDir, "add", "--label=db", "--max-tcp-tunnels=1")).lines[0];
  const noTcp =
    (await tokenCommand(processes, stateDir, "add", "--label=web", "--max-tcp-tunnels=0")).lines[0];
  const listed = (await tokenCommand(processes, stateDir, "list")).lines.join("\n");
  assert.match(listed, /^1\tdb\tnames=\*\tmax=-\ttcp=1\t/m);
  const origin = await startOrigin(processes);
  const relay = await startRelay(processes, { stateDir, args: ["--tcp-ports=21500-21599"] });
  const tcp = (token: string) => ["tcp", String(origin.port), `--token=${token}`];
  await startClient(processes, relay, tcp(oneTcp), { label: "first tcp" });
  await refusedClient(
    processes,
    relay,
    tcp(oneTcp),
    /token "db" may hold 1 TCP tunnels; 1 are open \(too_many_tunnels\)/,
    { label: "second tcp" },
  );
  await refusedClient(
    processes,
    relay,
    tcp(noTcp),
    /token "web" may not open TCP tunnels \(not_permitted\)/,
    {
      label: "no tcp",
    },
  );
  await startClient(processes, relay, [String(origin.port), "web", `--token=${noTcp}`], { label: "http" });
});
