/** The command lines users type: config, help, and clear errors for bad arguments. */
import assert from "node:assert/strict";
import { join } from "node:path";
import { Child, Processes } from "./helpers/processes.ts";

async function cli(
  processes: Processes,
  script: string,
  args: string[],
  env: Record<string, string> = {},
) {
  const child = processes.add(Child.script(script, script, args, env));
  const status = await child.status;
  await child.stop();
  return { code: status.code, out: child.lines.join("\n") };
}

Deno.test("config set/get/show store settings privately; env and flags override the file", async () => {
  await using processes = new Processes();
  const dir = await processes.tempDir();
  const env = { REVERPROX_CONFIG_DIR: dir };
  assert.equal(
    (await cli(processes, "client.ts", [
      "config",
      "set",
      "server",
      "quic://tunnel.example.com:4433",
    ], env)).code,
    0,
  );
  assert.equal(
    (await cli(processes, "client.ts", ["config", "set", "token", "s3cret"], env)).code,
    0,
  );
  assert.equal(
    (await cli(processes, "client.ts", ["config", "get", "server"], env)).out,
    "quic://tunnel.example.com:4433",
  );
  assert.equal((await Deno.stat(join(dir, "config.json"))).mode! & 0o077, 0);

  const shown = await cli(processes, "client.ts", ["config", "show"], env);
  assert.match(shown.out, /server:\s+quic:\/\/tunnel\.example\.com:4433/);
  assert.match(shown.out, /token:\s+\(set\)/);
  assert.doesNotMatch(shown.out, /s3cret/);

  const overridden = await cli(processes, "client.ts", ["config", "show"], {
    ...env,
    REVERPROX_SERVER: "quic://other:1",
  });
  assert.match(overridden.out, /server:\s+quic:\/\/other:1/);

  const unknown = await cli(processes, "client.ts", ["config", "set", "colour", "blue"], env);
  assert.equal(unknown.code, 2);
  assert.match(unknown.out, /unknown key colour/);
  const badServer = await cli(processes, "client.ts", ["config", "set", "server", "ftp://x"], env);
  assert.equal(badServer.code, 2);
  assert.match(badServer.out, /server must be quic:\/\/host:port/);
});

Deno.test("both binaries explain themselves and reject bad arguments with exit code 2", async () => {
  await using processes = new Processes();
  const env = { REVERPROX_CONFIG_DIR: await processes.tempDir() };
  const clientHelp = await cli(processes, "client.ts", ["--help"], env);
  assert.equal(clientHelp.code, 0);
  assert.match(clientHelp.out, /Usage: reverprox \[options\] \[command\] \[port\] \[name\]/);
  const serverHelp = await cli(processes, "server.ts", ["--help"]);
  assert.equal(serverHelp.code, 0);
  for (
    const flag of [
      "--domain",
      "--http-port",
      "--quic-port",
      "--cert",
      "--state-dir",
      "--token",
      "--tokens-file",
    ]
  ) {
    assert.match(serverHelp.out, new RegExp(flag));
  }
  const badName = await cli(processes, "client.ts", ["3000", "Not_A_Label"], env);
  assert.equal(badName.code, 2);
  assert.match(badName.out, /"Not_A_Label" is not a valid name/);
  const badTarget = await cli(processes, "client.ts", ["http", "ftp://x"], env);
  assert.equal(badTarget.code, 2);
  assert.match(badTarget.out, /only http and https origins/);
  const taken = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const busy = await cli(processes, "server.ts", [
    "--hostname=127.0.0.1",
    `--http-port=${(taken.addr as Deno.NetAddr).port}`,
    "--quic-port=0",
    `--state-dir=${await processes.tempDir()}`,
  ]);
  taken.close();
  assert.equal(busy.code, 1);
  assert.match(busy.out, /another program holds the port \(see --http-port, --quic-port\)/);
  const badPort = await cli(processes, "server.ts", ["--http-port", "99999"]);
  assert.equal(badPort.code, 1);
  assert.match(badPort.out, /expected 0\.\.65535/);
});
