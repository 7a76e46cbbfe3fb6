/**
 * `reverprox`: put a local server on a public URL through a reverprox relay.
 *
 * ```
 * reverprox 3000 api                          # http://localhost:3000 → https://api.<relay domain>
 * reverprox http localhost:8000 --name docs
 * reverprox start tunnels.json                # several tunnels in one process
 * reverprox config set server quic://tunnel.example.com:4433
 * ```
 * @module
 */
import { Command, InvalidArgumentError, Option } from "commander";
import { join } from "node:path";
import { Agent, AgentError, type TunnelSpec } from "./lib/agent.ts";
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
} from "./lib/config.ts";
import { isValidName, randomName } from "./lib/names.ts";
import { parseOrigin, probeOrigin, readTunnelsFile, TargetError } from "./lib/targets.ts";
import { parseServerUrl, TrustError } from "./lib/trust.ts";
import { setupLogging } from "./lib/log.ts";
import { basicAuthRule } from "./lib/access.ts";

interface ConnectFlags {
  server?: string;
  token?: string;
  fingerprint?: string;
  originTimeout: number;
  logLevel: string;
}

interface AccessFlags {
  basicAuth?: string;
  allow: string[];
  deny: string[];
}

const collect = (value: string, previous: string[]) => [...previous, value];

/** Options of the commands that share an HTTP server: who may reach it. */
function accessOptions(command: Command): Command {
  return command
    .option("--basic-auth <user:password>", "visitors must log in (checked at the relay)")
    .option("--allow <cidr>", "only these addresses may visit (repeatable)", collect, [])
    .option("--deny <cidr>", "these addresses may not visit (repeatable)", collect, []);
}

const program = new Command("reverprox")
  .description("Put a local server on a public URL through your reverprox relay (QUIC).")
  .showHelpAfterError()
  .enablePositionalOptions();

function connectOptions(command: Command): Command {
  return command
    .addOption(
      new Option("--server <url>", "relay address, quic://host:port").env("REVERPROX_SERVER"),
    )
    .addOption(new Option("--token <token>", "token the relay asks for").env("REVERPROX_TOKEN"))
    .addOption(
      new Option("--fingerprint <sha256>", "pin the relay's CA fingerprint").env(
        "REVERPROX_FINGERPRINT",
      ),
    )
    .option(
      "--origin-timeout <ms>",
      "time the local server has to start answering",
      positiveInt,
      60_000,
    )
    .option("--log-level <level>", "trace, debug, info, warning, error", "info");
}

connectOptions(accessOptions(
  program
    .argument("[port]", "local port (or host:port, or URL) to share")
    .argument("[name]", "subdomain to ask for; random when left out"),
)).action(async (port: string | undefined, name: string | undefined, flags: ConnectFlags & AccessFlags) => {
  if (!port) return program.help();
  await runTunnels([await httpTunnel(port, name, flags)], flags);
});

connectOptions(accessOptions(
  program.command("http")
    .description("share a local HTTP server")
    .argument("<target>", "local port, host:port or URL")
    .option("--name <name>", "subdomain to ask for; random when left out"),
)).action(async (target: string, flags: ConnectFlags & AccessFlags & { name?: string }) => {
  await runTunnels([await httpTunnel(target, flags.name, flags)], flags);
});

connectOptions(
  program.command("tcp")
    .description("share a local TCP port (databases, SSH, anything)")
    .argument("<target>", "local port or host:port")
    .option("--remote-port <port>", "public port to ask for (within the relay's range)", positiveInt),
).action(async (target: string, flags: ConnectFlags & { remotePort?: number }) => {
  const origin = parseOrigin(/^\d+$/.test(target) ? `127.0.0.1:${target}` : target);
  await runTunnels([{ kind: "tcp", remotePort: flags.remotePort, origin }], flags);
});

connectOptions(
  program.command("start")
    .description(
      'run every tunnel listed in a JSON file: {"tunnels": [{"name": "api", "target": "3000"}]}',
    )
    .argument("<file>", "tunnels file"),
).action(async (file: string, flags: ConnectFlags) => {
  const entries = await readTunnelsFile(file);
  const tunnels = await Promise.all(
    entries.map((entry) => httpTunnel(entry.target, entry.name, flags)),
  );
  await runTunnels(tunnels, flags);
});

const config = program.command("config").description(`settings in ${configDir()}/config.json`);
config.command("set").argument("<key>", CONFIG_KEYS.join(" | ")).argument("<value>")
  .description("store a setting").action(async (key: string, value: string) => {
    await setConfigValue(
      configDir(),
      configKey(key),
      key === "server" ? checkServer(value) : value,
    );
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
  if (!isConfigKey(key)) {
    throw new InvalidArgumentError(`unknown key ${key}; use ${CONFIG_KEYS.join(", ")}`);
  }
  return key;
}

function checkServer(value: string): string {
  parseServerUrl(value);
  return value;
}

function positiveInt(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n <= 0) {
    throw new InvalidArgumentError("expected a positive whole number");
  }
  return n;
}

/** A tunnel spec for `target`; without a name, the random one used before for this target. */
async function httpTunnel(
  target: string,
  name: string | undefined,
  flags: ConnectFlags & Partial<AccessFlags>,
): Promise<TunnelSpec> {
  const origin = parseOrigin(target);
  if (name !== undefined && !isValidName(name)) {
    throw new InvalidArgumentError(
      `"${name}" is not a valid name: use a-z, 0-9 and inner "-", up to 63`,
    );
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
  return { kind: "http", name, origin, access: Object.values(access).some(Boolean) ? access : undefined };
}

/** `parse()`, with its error turned into commander's invalid-argument error. */
function parsedOrInvalid<T>(parse: () => T): T {
  try {
    return parse();
  } catch (error) {
    throw new InvalidArgumentError((error as Error).message);
  }
}

async function runTunnels(tunnels: TunnelSpec[], flags: ConnectFlags) {
  setupLogging(flags.logLevel);
  const dir = configDir();
  const settings = await resolveSettings(dir, flags);
  for (const tunnel of tunnels) {
    const problem = await probeOrigin(tunnel.origin);
    if (problem) console.error(`warning: ${problem}; visitors get 502 until it starts`);
  }
  const agent = new Agent({
    relay: parseServerUrl(settings.server),
    token: settings.token,
    fingerprint: settings.fingerprint,
    knownRelaysFile: join(dir, "known_relays"),
    clientId: await clientId(dir),
    tunnels,
    originTimeoutMs: flags.originTimeout,
    onOnline(grants, trusted) {
      console.log(
        `reverprox: online via ${settings.server} (CA ${trusted.fingerprint.slice(0, 16)}…)`,
      );
      grants.forEach((grant, i) => {
        const { origin, kind } = tunnels[i];
        const local = `${kind === "http" ? origin.protocol + "//" : ""}${origin.hostname}:${origin.port}`;
        console.log(`  ${grant.url} → ${local}`);
      });
    },
    onRequest(tunnel, outcome) {
      const time = new Date().toTimeString().slice(0, 8);
      const prefix = tunnels.length > 1 ? `${tunnel} ` : "";
      console.log(
        `${time} ${prefix}${outcome.method} ${outcome.target} ${outcome.status} ${
          Math.round(outcome.durationMs)
        } ms`,
      );
    },
  });
  const stopping = new AbortController();
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    Deno.addSignalListener(signal, () => stopping.abort());
  }
  try {
    await agent.run(stopping.signal);
  } catch (error) {
    if (error instanceof AgentError || error instanceof TrustError) {
      console.error(`reverprox: ${error.message}`);
      Deno.exit(1);
    }
    throw error;
  }
  Deno.exit(0);
}

try {
  await program.parseAsync(Deno.args, { from: "user" });
} catch (error) {
  if (
    error instanceof InvalidArgumentError || error instanceof TrustError ||
    error instanceof TargetError
  ) {
    console.error(`reverprox: ${error.message}`);
    Deno.exit(2);
  }
  throw error;
}
