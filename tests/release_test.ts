/**
 * The release path as far as this machine can run it: compile's file names (what install.sh asks
 * for), actionlint over the workflows, and the smoke test the release workflow runs on each Linux
 * build, here against the programs run from this checkout. Building real binaries needs Deno's
 * `denort` download, which only the release workflow's machine has.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { join } from "node:path";
import { promisify } from "node:util";
import { Child, Processes, ROOT } from "./helpers/processes.ts";
import { V8_FLAGS } from "../scripts/v8_flags.ts";
import { VERSION } from "../lib/shared/version.ts";
import { PROTOCOL_VERSION } from "../lib/wire/protocol.ts";

const run = promisify(execFile);

/** Waits for `child` to end; its exit code and its output (stdout and stderr) as one string. */
async function finish(processes: Processes, child: Child): Promise<{ code: number; out: string }> {
  processes.add(child);
  const { code } = await child.status;
  await child.stop();
  return { code, out: child.lines.join("\n") };
}

Deno.test("compile --target names both programs after the target, as install.sh asks for them", async () => {
  await using processes = new Processes();
  const outDir = await processes.tempDir();
  const target = "aarch64-unknown-linux-gnu";
  // deno itself stands in for denort: the result cannot run as reverprox, but it is written
  // under the name a real build gets.
  const { code, out } = await finish(
    processes,
    Child.script("compile", "scripts/compile.ts", ["--target", target, "--out-dir", outDir, "--no-check"], {
      DENORT_BIN: Deno.execPath(),
    }),
  );
  assert.equal(code, 0, out);
  const written = [`reverprox-${target}`, `reverprox-server-${target}`];
  for (const name of written) {
    assert.match(out, new RegExp(`^compile: ${join(outDir, name)}$`, "m"));
    assert.ok((await Deno.stat(join(outDir, name))).mode! & 0o100, `${name} is executable`);
  }
  assert.deepEqual(Array.from(Deno.readDirSync(outDir), (entry) => entry.name).sort(), written);
});

Deno.test("lint-workflows passes the repository's workflows and names each problem in a broken one", async () => {
  await using processes = new Processes();
  const clean = await finish(processes, Child.script("actionlint", "scripts/lint_workflows.ts", []));
  assert.equal(clean.code, 0, clean.out);
  assert.match(clean.out, /lint-workflows: 2 file\(s\), 0 problem\(s\)/);

  const broken = join(await processes.tempDir(), "broken.yml");
  const release = await Deno.readTextFile(join(ROOT, ".github/workflows/release.yml"));
  await Deno.writeTextFile(
    broken,
    release
      .replace("needs: [build, smoke]", "needs: [build, smoek]")
      .replace("matrix.emulator != ''", "matrix.emulater != ''")
      .replace('tags: ["v*"]', 'tags: ["v*"]\n  pushh:'),
  );
  const { code, out } = await finish(
    processes,
    Child.script("actionlint", "scripts/lint_workflows.ts", [broken]),
  );
  assert.equal(code, 1, out);
  assert.match(out, new RegExp(`${broken}:\\d+:\\d+: unknown Webhook event "pushh"`));
  assert.match(out, /job "publish" needs job "smoek" which does not exist in this workflow \[job-needs\]/);
  assert.match(out, /property "emulater" is not defined in object type \{emulator: string; target: string/);
  assert.match(out, /lint-workflows: 1 file\(s\), 3 problem\(s\)/);
});

Deno.test("smoke_release.sh is shellcheck-clean", {
  ignore: !(await run("sh", ["-c", "command -v shellcheck"]).then(() => true, () => false)),
}, async () => {
  await run("shellcheck", [join(ROOT, "scripts/smoke_release.sh")]);
});

/** A free loopback port for `transport`, released again for the program under test to take. */
function freePort(transport: "tcp" | "udp"): number {
  const listener = transport === "tcp"
    ? Deno.listen({ hostname: "127.0.0.1", port: 0 })
    : Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr as Deno.NetAddr;
  listener.close();
  return port;
}

/** Runs smoke_release.sh on `client` and `server` with free ports. */
function smoke(processes: Processes, client: string, server: string): Promise<{ code: number; out: string }> {
  return finish(
    processes,
    new Child("smoke", "bash", [join(ROOT, "scripts/smoke_release.sh"), client, server], {
      SMOKE_EXPECT_VERSION: VERSION,
      SMOKE_HTTP_PORT: String(freePort("tcp")),
      SMOKE_QUIC_PORT: String(freePort("udp")),
      SMOKE_ORIGIN_PORT: String(freePort("tcp")),
    }),
  );
}

/** An executable that runs `script` from this checkout, standing in for its compiled build. */
async function fromCheckout(processes: Processes, script: string): Promise<string> {
  const path = join(await processes.tempDir(), script.replace(".ts", ""));
  const command = `exec "${Deno.execPath()}" run -A --v8-flags=${V8_FLAGS} "${join(ROOT, script)}" "$@"`;
  await Deno.writeTextFile(path, `#!/bin/sh\n${command}\n`, { mode: 0o755 });
  return path;
}

Deno.test("--version: both programs name their release, the protocol version and the Deno version", async () => {
  for (const [script, name] of [["client.ts", "reverprox"], ["server.ts", "reverprox-server"]]) {
    const { stdout } = await run(Deno.execPath(), ["run", "-A", join(ROOT, script), "--version"]);
    assert.equal(stdout, `${name} ${VERSION} (protocol ${PROTOCOL_VERSION}, Deno ${Deno.version.deno})\n`);
  }
});

Deno.test("smoke_release.sh: --version, then a relay and a client serve one request through a tunnel", async () => {
  await using processes = new Processes();
  const { code, out } = await smoke(
    processes,
    await fromCheckout(processes, "client.ts"),
    await fromCheckout(processes, "server.ts"),
  );
  assert.equal(code, 0, out);
  assert.match(out, new RegExp(`^smoke: reverprox --version: reverprox ${VERSION} \\(protocol`, "m"));
  assert.match(out, new RegExp(`^smoke: reverprox-server --version: reverprox-server ${VERSION} `, "m"));
  assert.match(
    out,
    /^smoke: ok: http:\/\/smoke\.localhost:\d+\/ served the origin's page through the tunnel$/m,
  );
});

Deno.test("smoke_release.sh fails loudly when a program does not answer --version", async () => {
  await using processes = new Processes();
  const server = await fromCheckout(processes, "server.ts");
  const { code, out } = await smoke(processes, await fromCheckout(processes, "no_such_program.ts"), server);
  assert.equal(code, 1, out);
  assert.match(out, /^smoke: FAILED: reverprox --version exited with 1: .*Module not found/m);
});
