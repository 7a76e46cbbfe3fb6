/**
 * `reverprox-server service install`: the systemd unit it writes (checked with
 * `systemd-analyze verify` where systemd is installed), `--print`, and the input it refuses
 * without writing anything.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { Processes, ROOT } from "./helpers/processes.ts";

/** Runs `reverprox-server ...args` from this checkout; its exit code and output. */
async function server(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", join(ROOT, "server.ts"), ...args],
    stdout: "piped",
    stderr: "piped",
  }).output();
  return { code, stdout: new TextDecoder().decode(stdout), stderr: new TextDecoder().decode(stderr) };
}

const hasSystemdAnalyze = new Deno.Command("sh", { args: ["-c", "command -v systemd-analyze"] }).outputSync()
  .success;

const RELAY_FLAGS = ["--domain", "tunnel.example.com", "--tls", "acme", "--acme-email", "ops@example.com"];

Deno.test("service install writes a hardened unit that runs the relay with the flags after --", async () => {
  await using processes = new Processes();
  const unitDir = await processes.tempDir();
  // A value systemd must see quoted: a space, a quote and its specifier sign.
  const hook = `/opt/dns hook/"set"%.sh`;
  const { code, stdout, stderr } = await server(
    "service",
    "install",
    "--unit-dir",
    unitDir,
    "--",
    ...RELAY_FLAGS,
    "--acme-dns-hook",
    hook,
  );
  assert.equal(code, 0, stderr);
  const file = join(unitDir, "reverprox-server.service");
  assert.match(stdout, new RegExp(`^wrote ${file}$`, "m"));
  assert.match(stdout, /systemctl daemon-reload && systemctl enable --now reverprox-server$/m);
  const unit = await Deno.readTextFile(file);
  const execStart = unit.match(/^ExecStart=(.*)$/m)![1];
  assert.ok(execStart.startsWith(`${Deno.execPath()} run -A --unstable-net ${join(ROOT, "server.ts")} `));
  assert.ok(
    execStart.endsWith(`${RELAY_FLAGS.join(" ")} --acme-dns-hook "/opt/dns hook/\\"set\\"%%.sh"`),
    execStart,
  );
  for (
    const line of [
      "DynamicUser=yes",
      "StateDirectory=reverprox-server",
      "Environment=REVERPROX_STATE_DIR=%S/reverprox-server",
      "Restart=on-failure",
      "AmbientCapabilities=CAP_NET_BIND_SERVICE",
      "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
      "NoNewPrivileges=yes",
      "ProtectSystem=strict",
      "WantedBy=multi-user.target",
    ]
  ) assert.match(unit, new RegExp(`^${line}$`, "m"));
  assert.equal((await Deno.stat(file)).mode! & 0o777, 0o644);
  if (hasSystemdAnalyze) {
    const verify = await new Deno.Command("systemd-analyze", { args: ["verify", file] }).output();
    const said = new TextDecoder().decode(verify.stderr);
    assert.ok(verify.success, said);
    assert.equal(said.trim(), "", "systemd-analyze verify has remarks");
  }
});

Deno.test("service install --print writes nothing; --user runs it as that account", async () => {
  await using processes = new Processes();
  const unitDir = await processes.tempDir();
  const { code, stdout } = await server(
    "service",
    "install",
    "--print",
    "--user",
    "reverprox",
    "--unit-dir",
    unitDir,
    "--",
    ...RELAY_FLAGS,
  );
  assert.equal(code, 0);
  assert.match(stdout, /^\[Unit\]$/m);
  assert.match(stdout, /^User=reverprox$/m);
  assert.doesNotMatch(stdout, /DynamicUser/);
  assert.deepEqual([...Deno.readDirSync(unitDir)], []);
});

Deno.test("service install refuses what would make a broken unit, and writes nothing", async () => {
  await using processes = new Processes();
  const unitDir = await processes.tempDir();
  const refused: [string[], number, RegExp][] = [
    [["--", "--domain", "a.example", "--bogus"], 2, /^reverprox-server: not a relay flag: --bogus$/m],
    [["--", "stray"], 2, /^reverprox-server: not a relay flag: stray$/m],
    [["--", "--http-port", "http"], 1, /--http-port <port>' argument 'http' is invalid/],
    [["--", "--state-dir=/srv/x"], 1, /--state-dir=\/srv\/x: the unit keeps the relay's state in \/var\/lib/],
    [["--user", "no body", "--"], 1, /--user "no body" is not a user name/],
  ];
  for (const [args, status, message] of refused) {
    const { code, stderr } = await server("service", "install", "--unit-dir", unitDir, ...args);
    assert.equal(code, status, `${args.join(" ")}: ${stderr}`);
    assert.match(stderr, message);
  }
  assert.deepEqual([...Deno.readDirSync(unitDir)], []);
  const missing = join(unitDir, "no-such-dir");
  const { code, stderr } = await server("service", "install", "--unit-dir", missing);
  assert.equal(code, 1);
  assert.match(stderr, new RegExp(`--unit-dir ${missing} is not a directory`));
});
