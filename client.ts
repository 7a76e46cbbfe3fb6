/**
 * `reverprox`: put a local server on a public URL through a reverprox relay.
 *
 * ```
 * reverprox 3000 api                          # http://localhost:3000 → http://api.<relay domain>
 * reverprox 3000 api --detach                 # add it to the running agent and return
 * reverprox agent start | status | stop       # the background agent; reverprox ls, suspend, resume, rm
 * reverprox start tunnels.json                # several tunnels, following edits to the file
 * reverprox config set server quic://tunnel.example.com:4433
 * ```
 *
 * Tunnel commands go to the running agent when there is one (found from its state file, or at
 * `--api-addr`), else run an agent in the foreground; every other command talks to the agent's
 * control API only.
 * @module
 */
import { Command, InvalidArgumentError, Option } from "commander";
import { join } from "node:path";
import { basicAuthRule } from "./lib/agent/access_rules.ts";
import { AgentApiClient, ApiError } from "./lib/agent/api_client.ts";
import {
  DEFAULT_API,
  parseApiAddr,
  relayLabel,
  runAgentHere,
  runOnAgent,
  tunnelTable,
} from "./lib/agent/cli.ts";
import {
  clientId,
  CONFIG_KEYS,
  configDir,
  isConfigKey,
  readConfig,
  rememberedName,
  rememberName,
  resolveSettings,
  setConfigValue,
} from "./lib/agent/config.ts";
import type { AddTunnel } from "./lib/agent/control.ts";
import { agentLogFile, findAgent, startDaemon, stopDaemon } from "./lib/agent/daemon.ts";
import { parseTarget, probeOrigin, TargetError } from "./lib/agent/origin.ts";
import { launchdPlist, serviceLocation, systemdUnit } from "./lib/agent/service.ts";
import { readTunnelsFile, syncTunnels, type TunnelsFileEntry, watchFile } from "./lib/agent/tunnels_file.ts";
import { parseServerUrl, TrustError } from "./lib/agent/trust.ts";
import { setupLogging } from "./lib/shared/log.ts";
import { selfCommand } from "./lib/shared/service.ts";
import { isValidName, randomName } from "./lib/shared/names.ts";
import { versionLine } from "./lib/wire/protocol.ts";

interface ConnectFlags {
  server?: string;
  token?: string;
  fingerprint?: string;
  transport?: string;
  originTimeout: number;
  grace: number;
  healthInterval: number;
  inspectLimit: number;
  inspectBodyBytes: number;
  logLevel: string;
  apiAddr?: string;
  log?: boolean;
}

interface TunnelFlags extends ConnectFlags {
  basicAuth?: string;
  allow: string[];
  deny: string[];
  healthPath?: string;
  detach?: boolean;
  debug?: boolean;
}

const collect = (value: string, previous: string[]) => [...previous, value];

function positiveInt(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n <= 0) throw new InvalidArgumentError("expected a positive whole number");
  return n;
}

function nonNegativeInt(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0) throw new InvalidArgumentError("expected a whole number, 0 or more");
  return n;
}

const program = new Command("reverprox")
  .description("Put a local server on a public URL through your reverprox relay.")
  .version(versionLine("reverprox"), "-V, --version")
  .showHelpAfterError()
  .enablePositionalOptions();

/** `--api-addr`: where the running agent's control API is (else its state file says). */
function apiOption(command: Command): Command {
  return command.addOption(
    new Option(
      "--api-addr <host:port>",
      "the agent's control API (default: the running agent's, or 127.0.0.1:4040)",
    )
      .env("REVERPROX_API_ADDR"),
  );
}

/** Options of commands that may run an agent: how it reaches the relay and its origins. */
function connectOptions(command: Command): Command {
  return apiOption(command)
    .addOption(new Option("--server <url>", "relay address, quic://host:port").env("REVERPROX_SERVER"))
    .addOption(new Option("--token <token>", "token the relay asks for").env("REVERPROX_TOKEN"))
    .addOption(
      new Option("--fingerprint <sha256>", "pin the relay's CA fingerprint").env("REVERPROX_FINGERPRINT"),
    )
    .addOption(
      new Option("--transport <kind>", "auto (QUIC, else TCP), quic, tcp or http (default: auto)")
        .choices(["auto", "quic", "tcp", "http"]).env("REVERPROX_TRANSPORT"),
    )
    .option("--origin-timeout <ms>", "time the local server has to start answering", positiveInt, 60_000)
    .option(
      "--grace <seconds>",
      "keep open streams through a lost link this long, resuming them when it is back (0 = off)",
      nonNegativeInt,
      60,
    )
    .option("--health-interval <seconds>", "how often each origin is probed", positiveInt, 5)
    .option("--inspect-limit <n>", "requests the inspector keeps", positiveInt, 500)
    .option("--inspect-body-bytes <n>", "bytes of each body the inspector keeps", positiveInt, 1024 * 1024)
    .option("--log-level <level>", "trace, debug, info, warning, error", "info")
    .option("--log", "print plain lines (URLs, one per request) instead of the live dashboard in a terminal");
}

/** Options of the commands that add tunnels. */
function tunnelOptions(command: Command): Command {
  return connectOptions(command)
    .option("--detach", "add the tunnel to the running agent (started if need be), print its URL, return")
    .option("--health-path <path>", "a path that must answer 2xx/3xx for the origin to count as up")
    .option("--basic-auth <user:password>", "visitors must log in (checked at the relay)")
    .option("--allow <cidr>", "only these addresses may visit (repeatable)", collect, [])
    .option("--deny <cidr>", "these addresses may not visit (repeatable)", collect, [])
    .option("--debug", "attach to the http tunnel <name> another client holds, as its debug receiver");
}

tunnelOptions(
  program
    .argument("[port]", "local port (or host:port, or URL) to share")
    .argument("[name]", "subdomain to ask for; random when left out"),
).action(async (port: string | undefined, name: string | undefined, flags: TunnelFlags) => {
  if (!port) return program.help();
  await shareTunnels([await httpTunnel(port, name, flags)], flags);
});

tunnelOptions(
  program.command("http")
    .description("share a local HTTP server")
    .argument("<target>", "local port, host:port or URL")
    .option("--name <name>", "subdomain to ask for; random when left out"),
).action(async (target: string, flags: TunnelFlags & { name?: string }) => {
  await shareTunnels([await httpTunnel(target, flags.name, flags)], flags);
});

tunnelOptions(
  program.command("tcp")
    .description("share a local TCP port (databases, SSH, anything)")
    .argument("<target>", "local port or host:port")
    .option("--remote-port <port>", "public port to ask for (within the relay's range)", positiveInt),
).action(async (target: string, flags: TunnelFlags & { remotePort?: number }) => {
  parsedOrInvalid(() => parseTarget("tcp", target));
  await shareTunnels([{ kind: "tcp", target, options: { remotePort: flags.remotePort } }], flags);
});

connectOptions(
  program.command("start")
    .description(
      'run the tunnels of a JSON file and follow its edits: {"tunnels": [{"name": "api", "target": "3000"}]}',
    )
    .argument("<file>", "tunnels file"),
).action((file: string, flags: ConnectFlags) => startFromFile(file, flags));

apiOption(program.command("ls").description("list the running agent's tunnels"))
  .option("--json", "as JSON")
  .action(async (flags: { apiAddr?: string; json?: boolean }) => {
    const agent = await runningAgent(flags);
    const tunnels = await agent.list();
    if (flags.json) return console.log(JSON.stringify(tunnels, null, 2));
    const { relay, state, transport } = await agent.status();
    // Below the table, so scripts reading its first lines see the same as before.
    console.log(`${tunnelTable(tunnels)}\n\nrelay ${relay} ${state}${transport ? ` over ${transport}` : ""}`);
  });

for (
  const [verb, help] of [["suspend", 'pause a tunnel: its URL is kept, visitors get a "paused" page'], [
    "resume",
    "serve a paused tunnel again",
  ], ["rm", "remove a tunnel; its name is free at once"]] as const
) {
  apiOption(
    program.command(verb).description(help).argument("<name>", "tunnel name (as `reverprox ls` shows it)"),
  )
    .action(async (name: string, flags: { apiAddr?: string }) => {
      const api = await runningAgent(flags);
      if (verb === "rm") return void (await api.remove(name), console.log(`removed ${name}`));
      const tunnel = verb === "suspend" ? await api.suspend(name) : await api.resume(name);
      console.log(`${tunnel.name} ${tunnel.state}${tunnel.url ? ` (${tunnel.url})` : ""}`);
    });
}

const agent = program.command("agent").description(
  "the background agent: one relay connection for all tunnels",
);
connectOptions(agent.command("start").description("start the agent in the background"))
  .action(async (flags: ConnectFlags) => {
    const running = await findAgent(flags.apiAddr, reportStale);
    if (running) return console.log(`the agent is already running: pid ${running.pid}, API ${running.api}`);
    const state = await startDaemon(
      selfCommand(new URL(import.meta.url), ["agent", "run", ...forwardedFlags(flags)]),
    );
    console.log(`agent started: pid ${state.pid}, API ${state.api}, log ${agentLogFile()}`);
  });
connectOptions(
  agent.command("run").description("run the agent in the foreground (for systemd and containers)"),
)
  .action(async (flags: ConnectFlags) => {
    if (Deno.env.get("REVERPROX_DAEMON")) {
      // Detached from any terminal: a hangup is not meant for it, and its log goes to a file.
      Deno.addSignalListener("SIGHUP", () => {});
      setupLogging(flags.logLevel, agentLogFile());
    } else setupLogging(flags.logLevel);
    Deno.exit(await runAgentHere(await agentSettings(flags), [], runOptions(flags)));
  });
apiOption(agent.command("status").description("whether the agent runs, where, and its link to the relay"))
  .option("--json", "as JSON")
  .action(async (flags: { apiAddr?: string; json?: boolean }) => {
    const status = await (await runningAgent(flags)).status();
    if (flags.json) return console.log(JSON.stringify(status, null, 2));
    console.log(`agent: pid ${status.pid}, version ${status.version}, API ${status.api}`);
    console.log(
      `relay: ${status.relay || "-"} ${status.state}${status.transport ? ` over ${status.transport}` : ""}` +
        (status.reason ? ` (${status.reason})` : ""),
    );
    console.log(`tunnels: ${status.tunnels}`);
  });
apiOption(agent.command("stop").description("stop the background agent (its names are freed at once)"))
  .action(async (flags: { apiAddr?: string }) => {
    const running = await findAgent(flags.apiAddr, reportStale);
    if (!running) return console.log("no agent is running");
    await stopDaemon(running);
    console.log(`agent stopped (pid ${running.pid})`);
  });

const service = program.command("service").description("run the agent as a service of your login session");
service.command("install")
  .description(
    "write a systemd user unit (launchd agent on macOS) that runs `reverprox agent run`, and enable it",
  )
  .option("--print", "print the unit instead of installing it")
  .action(async (flags: { print?: boolean }) => await installService(flags.print ?? false));

const config = program.command("config").description(`settings in ${configDir()}/config.json`);
config.command("set").argument("<key>", CONFIG_KEYS.join(" | ")).argument("<value>")
  .description("store a setting").action(async (key: string, value: string) => {
    await setConfigValue(configDir(), configKey(key), key === "server" ? checkServer(value) : value);
  });
config.command("unset").argument("<key>", CONFIG_KEYS.join(" | ")).description("remove a setting")
  .action(async (key: string) => await setConfigValue(configDir(), configKey(key), undefined));
config.command("get").argument("<key>", CONFIG_KEYS.join(" | ")).description("print one setting")
  .action(async (key: string) => {
    const value = (await readConfig(configDir()))[configKey(key)];
    if (value !== undefined) console.log(value);
  });
config.command("show").description("print the settings in effect and where they come from")
  .action(async () => {
    const dir = configDir();
    const settings = await resolveSettings(dir, {});
    console.log(`config dir:  ${dir}`);
    console.log(`server:      ${settings.server}`);
    console.log(`token:       ${settings.token ? "(set)" : "(none)"}`);
    console.log(`fingerprint: ${settings.fingerprint ?? "(trust on first use)"}`);
  });

function configKey(key: string) {
  if (!isConfigKey(key)) throw new InvalidArgumentError(`unknown key ${key}; use ${CONFIG_KEYS.join(", ")}`);
  return key;
}

function checkServer(value: string): string {
  parseServerUrl(value);
  return value;
}

/** `parse()`, with its error turned into commander's invalid-argument error. */
function parsedOrInvalid<T>(parse: () => T): T {
  try {
    return parse();
  } catch (error) {
    throw new InvalidArgumentError((error as Error).message);
  }
}

/** An http tunnel for `target`; without a name, the random one used before for this target. */
async function httpTunnel(
  target: string,
  name: string | undefined,
  flags: Partial<TunnelFlags>,
): Promise<AddTunnel> {
  const origin = parsedOrInvalid(() => parseTarget("http", target));
  if (name !== undefined && !isValidName(name)) {
    throw new InvalidArgumentError(`"${name}" is not a valid name: use a-z, 0-9 and inner "-", up to 63`);
  }
  if (flags.debug && name === undefined) {
    throw new InvalidArgumentError("--debug attaches to an existing tunnel: give its name");
  }
  const dir = configDir();
  const { server } = await resolveSettings(dir, flags);
  const key = `${server} http ${origin.protocol}//${origin.hostname}:${origin.port}`;
  if (name === undefined) {
    name = await rememberedName(dir, key) ?? randomName();
    await rememberName(dir, key, name);
  }
  const access = {
    allow: flags.allow?.length ? flags.allow : undefined,
    deny: flags.deny?.length ? flags.deny : undefined,
    basicAuth: flags.basicAuth ? parsedOrInvalid(() => basicAuthRule(flags.basicAuth!)) : undefined,
  };
  const options = {
    access: Object.values(access).some(Boolean) ? access : undefined,
    healthPath: flags.healthPath,
    debug: flags.debug,
  };
  return { kind: "http", name, target, options };
}

/** A tunnels file's entries as tunnels to add (random names remembered as for `reverprox 3000`). */
function fileTunnels(entries: TunnelsFileEntry[], flags: ConnectFlags): Promise<AddTunnel[]> {
  return Promise.all(
    entries.map(async (entry) =>
      entry.kind === "tcp"
        ? { kind: "tcp" as const, target: entry.target, options: { remotePort: entry.remotePort } }
        : await httpTunnel(entry.target, entry.name, { ...flags, healthPath: entry.healthPath })
    ),
  );
}

/** Shares `tunnels`: through the running agent when there is one (or `--detach` starts one), else here. */
async function shareTunnels(tunnels: AddTunnel[], flags: TunnelFlags) {
  setupLogging(flags.logLevel);
  for (const tunnel of tunnels) {
    const problem = await probeOrigin(parseTarget(tunnel.kind, tunnel.target));
    if (problem) {
      console.error(
        `warning: ${problem}; visitors get ${
          tunnel.kind === "http" ? "502" : "closed connections"
        } until it starts`,
      );
    }
  }
  let running = await agentFor(flags);
  if (!running && flags.detach) {
    running = await startDaemon(
      selfCommand(new URL(import.meta.url), ["agent", "run", ...forwardedFlags(flags)]),
    );
    console.error(`reverprox: started the background agent (pid ${running.pid}, API ${running.api})`);
  }
  Deno.exit(
    running
      ? await runOnAgent(new AgentApiClient(running.api), tunnels, flags.detach ?? false)
      : await runAgentHere(await agentSettings(flags), tunnels, runOptions(flags)),
  );
}

/** `reverprox start FILE`: its tunnels, kept in step with the file while it is edited. */
async function startFromFile(file: string, flags: ConnectFlags) {
  setupLogging(flags.logLevel);
  const stopping = new AbortController();
  const follow = async (holder: Parameters<typeof syncTunnels>[0]) => {
    let managed = await syncTunnels(holder, new Set(), await fileTunnels(await readTunnelsFile(file), flags));
    watchFile(file, async () => {
      managed = await syncTunnels(holder, managed, await fileTunnels(await readTunnelsFile(file), flags));
    }, stopping.signal);
  };
  const running = await agentFor(flags);
  if (!running) {
    const options = {
      ...runOptions(flags),
      started: (control: Parameters<typeof follow>[0]) => void follow(control),
    };
    Deno.exit(await runAgentHere(await agentSettings(flags), [], options));
  }
  await follow(new AgentApiClient(running.api));
  console.log(`reverprox: following ${file} on the agent at ${running.api}; Ctrl-C stops following`);
  await new Promise<void>((resolve) => Deno.addSignalListener("SIGINT", () => resolve()));
  stopping.abort();
}

/**
 * The running agent to hand tunnels to: the one at `--api-addr`, or the one found from its state file if
 * it serves the relay these tunnels are for (else this command runs its own).
 */
async function agentFor(flags: ConnectFlags) {
  const running = await findAgent(flags.apiAddr, reportStale);
  if (!running || flags.apiAddr) return running;
  const { server } = await resolveSettings(configDir(), flags);
  const status = await new AgentApiClient(running.api).status().catch(() => undefined);
  if (status?.relay === relayLabel(server)) return running;
  console.error(
    `reverprox: the running agent serves ${
      status?.relay ?? "another relay"
    }, not ${server}; running one here`,
  );
  return undefined;
}

async function agentSettings(flags: ConnectFlags) {
  const dir = configDir();
  return { ...await resolveSettings(dir, flags), configDir: dir, clientId: await clientId(dir) };
}

function runOptions(flags: ConnectFlags) {
  return {
    api: flags.apiAddr ? parsedOrInvalid(() => parseApiAddr(flags.apiAddr!)) : DEFAULT_API,
    originTimeoutMs: flags.originTimeout,
    graceMs: flags.grace * 1000,
    healthIntervalMs: flags.healthInterval * 1000,
    dashboard: !flags.log && Deno.stdout.isTerminal(),
    inspect: { maxEntries: flags.inspectLimit, maxBodyBytes: flags.inspectBodyBytes },
  };
}

/** The flags a background agent needs to be started with. */
function forwardedFlags(flags: ConnectFlags): string[] {
  const pairs: [string, string | number | undefined][] = [
    ["--server", flags.server],
    ["--token", flags.token],
    ["--fingerprint", flags.fingerprint],
    ["--transport", flags.transport],
    ["--api-addr", flags.apiAddr],
    ["--origin-timeout", flags.originTimeout],
    ["--grace", flags.grace],
    ["--health-interval", flags.healthInterval],
    ["--inspect-limit", flags.inspectLimit],
    ["--inspect-body-bytes", flags.inspectBodyBytes],
    ["--log-level", flags.logLevel],
  ];
  return pairs.filter(([, value]) => value !== undefined).map(([name, value]) => `${name}=${value}`);
}

/** This program, as a command line that runs `args` (a compiled binary, or deno running client.ts). */
/** The running agent's API client; exits with a clear line when no agent runs. */
async function runningAgent(flags: { apiAddr?: string }): Promise<AgentApiClient> {
  const running = await findAgent(flags.apiAddr, reportStale);
  if (!running) {
    console.error("reverprox: no agent is running (start one with `reverprox agent start`)");
    Deno.exit(1);
  }
  return new AgentApiClient(running.api);
}

function reportStale(state: { pid: number }) {
  console.error(`reverprox: cleaned up after an agent that is gone (pid ${state.pid})`);
}

async function installService(print: boolean) {
  const home = Deno.env.get("HOME") ?? ".";
  const location = serviceLocation(home);
  const spec = {
    command: selfCommand(new URL(import.meta.url), ["agent", "run"]),
    env: { REVERPROX_CONFIG_DIR: configDir() },
  };
  const text = Deno.build.os === "darwin" ? launchdPlist(spec, agentLogFile()) : systemdUnit(spec);
  if (print || !location) return console.log(text);
  await Deno.mkdir(join(location.file, ".."), { recursive: true });
  await Deno.writeTextFile(location.file, text);
  console.log(`wrote ${location.file}`);
  for (const command of location.enable) {
    const { success } = await new Deno.Command(command[0], { args: command.slice(1) }).output().catch(() => ({
      success: false,
    }));
    console.log(`${success ? "ran" : "could not run (do it yourself)"}: ${command.join(" ")}`);
  }
}

try {
  await program.parseAsync(Deno.args, { from: "user" });
} catch (error) {
  if (error instanceof InvalidArgumentError || error instanceof TrustError || error instanceof TargetError) {
    console.error(`reverprox: ${error.message}`);
    Deno.exit(2);
  }
  if (error instanceof ApiError) {
    console.error(`reverprox: ${error.message}${error.code !== "unreachable" ? ` (${error.code})` : ""}`);
    Deno.exit(1);
  }
  throw error;
}
