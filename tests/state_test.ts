/**
 * The relay's state dir under stress: a state.db another process holds
 * locked, a corrupt state.db, and two relays pointed at one state dir.
 */
import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import {
  Child,
  onlineUrls,
  Processes,
  type RelayHandle,
  spawnClient,
  startClient,
  startOrigin,
  startRelay,
} from "./helpers/processes.ts";
import { visit } from "./helpers/visit.ts";
import { rawQuic, rawTunnel } from "./helpers/raw_quic.ts";
import { withTimeout } from "../lib/shared/async.ts";

/** Opens the relay's state.db as another process would, and holds its write lock. */
function lockStateDb(relay: RelayHandle): { release(): void } {
  const db = new DatabaseSync(`${relay.stateDir}/state.db`);
  db.exec("begin exclusive");
  return {
    release() {
      if (!db.isOpen) return;
      db.exec("commit");
      db.close();
    },
  };
}

Deno.test("a state.db write that fails refuses the client with a clear error and leaves no name behind", async (t) => {
  await using processes = new Processes();
  const origin = await startOrigin(processes);
  const relay = await startRelay(processes);
  const port = String(origin.port);

  await t.step("a lock shorter than the busy timeout is waited out", async () => {
    const quic = await rawQuic(processes, relay);
    const lock = lockStateDb(relay);
    const timer = setTimeout(() => lock.release(), 500);
    try {
      const tunnel = await rawTunnel(quic, "brief");
      assert.match(tunnel.url, /^http:\/\/brief\./);
      await tunnel.close();
    } finally {
      clearTimeout(timer);
      lock.release();
      quic.close();
    }
  });
  await t.step(
    "past it the client is refused with internal, retries, and gets its name once the lock is gone",
    async () => {
      const lock = lockStateDb(relay);
      try {
        const abandoned = await spawnClient(processes, relay, [port, "alpha"], { label: "abandoned" });
        const refusal = await abandoned.child.waitFor(/relay refused: .*\(internal\)/);
        abandoned.child.kill("SIGKILL");
        await abandoned.child.status;
        assert.match(
          refusal[0],
          /the relay could not save its state \(database is locked\); try again shortly/,
        );
        const patient = await spawnClient(processes, relay, [port, "gamma"], { label: "patient" });
        await patient.child.waitFor(/\(internal\)/);
        lock.release();
        await onlineUrls(patient.child, 1);
      } finally {
        lock.release();
      }
    },
  );
  await t.step("the abandoned client's name went to nobody: another client takes it", async () => {
    const rival = await startClient(processes, relay, [port, "alpha"], { label: "rival" });
    assert.equal((await visit(`${rival.urls[0]}/`)).status, 200);
  });
});

/** Runs `server.ts` with `args` on `stateDir` (ports picked freely) and returns its exit code and output. */
async function serverRun(processes: Processes, label: string, stateDir: string, ...args: string[]) {
  const child = processes.add(
    Child.script(label, "server.ts", [
      ...args,
      ...(args[0] === "token" ? [] : ["--hostname=127.0.0.1", "--http-port=0", "--quic-port=0"]),
      `--state-dir=${stateDir}`,
    ]),
  );
  const { code } = await withTimeout(child.status, 15_000, `${label} to exit`);
  await child.stop();
  return { code, lines: child.lines.filter((line) => line.trim() !== "") };
}

Deno.test("a corrupt state.db stops the relay and the token commands with one line naming the file", async () => {
  await using processes = new Processes();
  const stateDir = await processes.tempDir();
  await Deno.writeTextFile(`${stateDir}/state.db`, "not a database at all\n".repeat(100));
  for (const args of [[], ["token", "list"]]) {
    const { code, lines } = await serverRun(processes, args.join(" ") || "relay", stateDir, ...args);
    assert.equal(code, 1);
    assert.equal(lines.length, 1, lines.join("\n"));
    assert.match(
      lines[0],
      new RegExp(
        `^reverprox-server: state\\.db at ${stateDir}/state\\.db cannot be used: file is not a database \\(`,
      ),
    );
  }
});

Deno.test("a second relay on the same state dir is refused with the first one's pid; a killed relay leaves no stale lock", async () => {
  await using processes = new Processes();
  const first = await startRelay(processes);
  const second = await serverRun(processes, "second relay", first.stateDir);
  assert.equal(second.code, 1);
  assert.deepEqual(second.lines, [
    `reverprox-server: another relay (pid ${first.child.pid}) is using the state dir ${first.stateDir}; ` +
    "stop it first, or give this one its own --state-dir",
  ]);
  const listed = await serverRun(processes, "token list", first.stateDir, "token", "list");
  assert.equal(listed.code, 0, "token commands work beside a running relay");
  first.child.kill("SIGKILL");
  await first.child.status;
  await startRelay(processes, { stateDir: first.stateDir });
});
