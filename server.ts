/**
 * `reverprox-server`: the relay. Serves `<name>.<domain>` over HTTP and takes
 * tunnel clients over QUIC.
 *
 * ```
 * reverprox-server --domain tunnel.example.com --cert auto
 * reverprox-server --cert fullchain.pem --key privkey.pem --tokens-file tokens.txt
 * ```
 *
 * Every flag that sets a relay option is declared once, in {@link RELAY_FLAGS}, beside the option it
 * sets; its environment variable is its name in capitals (`--max-conns` → `REVERPROX_MAX_CONNS`).
 * @module
 */
import { Command, InvalidArgumentError, Option } from "commander";
import { join } from "node:path";
import { loadIdentityFiles, loadOrCreateIdentity, type RelayIdentity } from "./lib/relay/identity.ts";
import { DEFAULT_RELAY_OPTIONS, Relay, type RelayOptions } from "./lib/relay/relay.ts";
import { loadTokenHashes } from "./lib/relay/state/tokens.ts";
import { lockStateDir, StateError, type TokenRule, TokenStore } from "./lib/relay/state/token_store.ts";
import { getLogger, setupLogging } from "./lib/shared/log.ts";
import { tlsMode, TlsSetupError } from "./lib/relay/tls/options.ts";
import { isValidName } from "./lib/shared/names.ts";
import { versionLine } from "./lib/wire/protocol.ts";
import { isCompiled, selfCommand } from "./lib/shared/service.ts";
import {
  checkRelayUnitSpec,
  installRelayUnit,
  RELAY_UNIT,
  relayUnit,
  ServiceSetupError,
} from "./lib/relay/service.ts";

const defaults = DEFAULT_RELAY_OPTIONS;

/** A flag that sets one relay option: the commander option, and how its value becomes the option's. */
interface RelayFlag {
  option: Option;
  toOption: (value: unknown) => unknown;
}

/** `--some-flag` → `REVERPROX_SOME_FLAG`. */
function envName(flags: string): string {
  return `REVERPROX_${flags.match(/^--([a-z-]+)/)![1].replaceAll("-", "_").toUpperCase()}`;
}

function flag(
  flags: string,
  help: string,
  fallback?: unknown,
  parse?: (value: string) => unknown,
): RelayFlag {
  const option = new Option(flags, help).env(envName(flags));
  if (parse) option.argParser(parse);
  if (fallback !== undefined) option.default(fallback);
  return { option, toOption: (value) => value };
}

/** A whole number between `min` and `max`. */
function int(min: number, max: number) {
  return (value: string) => {
    const n = Number(value);
    if (!Number.isInteger(n) || n < min || n > max) throw new InvalidArgumentError(`expected ${min}..${max}`);
    return n;
  };
}

function count(
  flags: string,
  help: string,
  fallback: number | undefined,
  min: number,
  max: number,
): RelayFlag {
  return flag(flags, help, fallback, int(min, max));
}

/** A duration given in seconds for an option kept in milliseconds. */
function seconds(flags: string, help: string, fallbackMs: number, max = 86_400): RelayFlag {
  const { option } = flag(flags, help, fallbackMs / 1000, int(1, max));
  return { option, toOption: (value) => (value as number) * 1000 };
}

function portRange(value: string): { min: number; max: number } | null {
  if (value === "none") return null;
  const match = value.match(/^(\d+)-(\d+)$/);
  const [min, max] = match ? [Number(match[1]), Number(match[2])] : [NaN, NaN];
  if (!(min >= 1 && max <= 65535 && min <= max)) {
    throw new InvalidArgumentError("expected MIN-MAX (1-65535) or none");
  }
  return { min, max };
}

/** Every flag that sets a relay option, keyed by the option. */
const RELAY_FLAGS: Partial<Record<keyof RelayOptions, RelayFlag>> = {
  domain: flag("--domain <domain>", "tunnels live at <name>.<domain>", defaults.domain),
  hostname: flag("--hostname <addr>", "address to bind", defaults.hostname),
  // No default here: it is 8080, or 80 with --tls on (where ACME's HTTP-01 challenges arrive); see main.
  httpPort: count(
    "--http-port <port>",
    "public HTTP port (default 8080; 80 with --tls on, where it answers ACME challenges and redirects to HTTPS)",
    undefined,
    0,
    65535,
  ),
  tls: flag(
    "--tls <off|acme|file>",
    "HTTPS: off, acme (a certificate per tunnel name from an ACME server), or a certificate chain file with --key",
    defaults.tls,
  ),
  httpsPort: count("--https-port <port>", "public HTTPS port with --tls on", defaults.httpsPort, 0, 65535),
  acmeDirectory: flag("--acme-directory <url>", "ACME server directory", defaults.acmeDirectory, (value) => {
    if (!URL.canParse(value) || !value.startsWith("https://")) {
      throw new InvalidArgumentError("expected an https URL");
    }
    return value;
  }),
  acmeStaging: flag(
    "--acme-staging",
    "use Let's Encrypt's staging directory (untrusted certificates, higher limits: for trying things out)",
    defaults.acmeStaging,
  ),
  acmeEmail: flag("--acme-email <address>", "contact address for the ACME account (expiry notices)"),
  acmeCa: flag("--acme-ca <file>", "PEM CA to trust for the ACME server's own HTTPS (a private ACME server)"),
  acmeDnsHook: flag(
    "--acme-dns-hook <script>",
    "one wildcard certificate over DNS-01: the relay runs SCRIPT set|clear <fqdn> <value> for the TXT record",
  ),
  acmeWeeklyLimit: count(
    "--acme-weekly-limit <n>",
    "new certificates in 7 days before the relay stops asking (Let's Encrypt: 50 per registered domain)",
    defaults.acmeWeeklyLimit,
    1,
    1 << 20,
  ),
  quicPort: count(
    "--quic-port <port>",
    "QUIC (UDP) port for clients; the same TCP port serves the CA",
    defaults.quicPort,
    0,
    65535,
  ),
  graceMs: seconds("--grace <seconds>", "how long a dropped client's names stay reserved", defaults.graceMs),
  heartbeatMs: seconds(
    "--heartbeat <seconds>",
    "heartbeat interval; clients silent for 3 beats are dropped",
    defaults.heartbeatMs,
    3600,
  ),
  headerTimeoutMs: seconds(
    "--header-timeout <seconds>",
    "time a visitor has to send a request head before 408",
    defaults.headerTimeoutMs,
    3600,
  ),
  bodyTimeoutMs: seconds(
    "--body-timeout <seconds>",
    "window over which a request body must keep --min-body-rate (408); also how long the tunnel may take none of it (504)",
    defaults.bodyTimeoutMs,
  ),
  helloTimeoutMs: seconds(
    "--hello-timeout <seconds>",
    "time a new client connection has to say hello before it is closed",
    defaults.helloTimeoutMs,
    3600,
  ),
  responseTimeoutMs: seconds(
    "--response-timeout <seconds>",
    "time a tunnel has to answer before 504",
    defaults.responseTimeoutMs,
  ),
  minBodyRate: count(
    "--min-body-rate <bytes>",
    "bytes per second a request body must keep up over each --body-timeout, or 408",
    defaults.minBodyRate,
    0,
    1 << 30,
  ),
  maxBodyBytes: count(
    "--max-body-bytes <n>",
    "request body cap (413); no cap by default",
    undefined,
    0,
    Number.MAX_SAFE_INTEGER,
  ),
  maxHeaderCount: count(
    "--max-header-count <n>",
    "request headers before 431",
    defaults.maxHeaderCount,
    8,
    10_000,
  ),
  maxHeaderBytes: count(
    "--max-header-bytes <n>",
    "request header cap (431)",
    defaults.maxHeaderBytes,
    1024,
    1 << 20,
  ),
  maxClientsPerIp: count(
    "--max-clients-per-ip <n>",
    "client connections one address may hold; more are refused",
    defaults.maxClientsPerIp,
    1,
    1 << 20,
  ),
  maxInFlightPerTunnel: count(
    "--max-in-flight-per-tunnel <n>",
    "requests in flight on one tunnel before 503",
    defaults.maxInFlightPerTunnel,
    1,
    1 << 20,
  ),
  activePerTunnel: count(
    "--active-per-tunnel <n>",
    "requests one tunnel may have in progress while the relay is overloaded and shared; more wait their turn",
    defaults.activePerTunnel,
    1,
    1 << 20,
  ),
  maxInFlight: count(
    "--max-in-flight <n>",
    "requests in flight on the relay before 503",
    defaults.maxInFlight,
    1,
    1 << 20,
  ),
  registration: flag(
    "--registration",
    "let visitors sign up for tokens: POST /api/register, /api/auth on the bare domain",
    defaults.registration,
  ),
  allowPunycode: flag(
    "--allow-punycode",
    "allow tunnel names and usernames starting with xn-- (shown by browsers as Unicode look-alikes)",
    defaults.allowPunycode,
  ),
  ratePerTunnel: count(
    "--rate-per-tunnel <n>",
    "requests per second one tunnel may receive before 429 (0 = no limit)",
    defaults.ratePerTunnel,
    0,
    1 << 30,
  ),
  ratePerIp: count(
    "--rate-per-ip <n>",
    "requests per second one visitor IP may send before 429 (0 = no limit)",
    defaults.ratePerIp,
    0,
    1 << 30,
  ),
  publicScheme: {
    option: new Option(
      "--public-scheme <scheme>",
      "scheme visitors use (https when a TLS proxy is in front; always https with --tls on)",
    )
      .env("REVERPROX_PUBLIC_SCHEME").choices(["http", "https"]).default(defaults.publicScheme),
    toOption: (value) => value,
  },
  publicPort: count(
    "--public-port <port>",
    "port visitors use, when it differs from --http-port (--https-port with --tls on)",
    undefined,
    1,
    65535,
  ),
  tcpPorts: flag("--tcp-ports <min-max|none>", "public ports for TCP tunnels", defaults.tcpPorts, portRange),
  maxTcpConns: count(
    "--max-tcp-conns <n>",
    "open connections per TCP tunnel before new ones are refused",
    defaults.maxTcpConns,
    1,
    1 << 20,
  ),
  maxTcpTunnelsPerClient: count(
    "--max-tcp-tunnels-per-client <n>",
    "TCP tunnels one client (client id) may hold",
    defaults.maxTcpTunnelsPerClient,
    0,
    65535,
  ),
  maxConns: count(
    "--max-conns <n>",
    "TCP connections the relay keeps open in all; more are closed at once (default: what `ulimit -n` allows)",
    defaults.maxConns,
    1,
    1 << 24,
  ),
  maxConnsPerIp: count(
    "--max-conns-per-ip <n>",
    "TCP connections one visitor address may keep open",
    defaults.maxConnsPerIp,
    1,
    1 << 24,
  ),
};

/** The flags that set up the relay's identity, tokens and logs rather than an option. */
interface SetupFlags {
  cert: string;
  key?: string;
  stateDir: string;
  token: string[];
  tokensFile?: string;
  logLevel: string;
}

function defaultStateDir(): string {
  const xdg = Deno.env.get("XDG_STATE_HOME");
  return xdg
    ? join(xdg, "reverprox-server")
    : join(Deno.env.get("HOME") ?? ".", ".local", "state", "reverprox-server");
}

const stateDirOption = () =>
  new Option("--state-dir <dir>", "where keys and state live").env("REVERPROX_STATE_DIR").default(
    defaultStateDir(),
  );

const program = new Command("reverprox-server")
  .enablePositionalOptions()
  .description("The reverprox relay: public HTTP for <name>.<domain>, QUIC for tunnel clients.")
  .version(versionLine("reverprox-server"), "-V, --version")
  .addOption(
    new Option("--cert <auto|file>", "TLS certificate chain for QUIC, or auto (private CA in --state-dir)")
      .env("REVERPROX_CERT").default("auto"),
  )
  .addOption(new Option("--key <file>", "private key for --cert FILE and --tls FILE").env("REVERPROX_KEY"))
  .addOption(stateDirOption())
  .addOption(
    new Option("--token <token>", "accept this client token (repeatable)").env("REVERPROX_RELAY_TOKEN")
      .argParser((value: string, previous: string[] = []) => [...previous, value]).default([]),
  )
  .addOption(
    new Option("--tokens-file <file>", "accept the tokens in this file, one per line").env(
      "REVERPROX_TOKENS_FILE",
    ),
  )
  .addOption(
    new Option("--log-level <level>", "trace, debug, info, warning, error").env("REVERPROX_LOG_LEVEL")
      .default("info"),
  )
  .action(main);
for (const { option } of Object.values(RELAY_FLAGS)) program.addOption(option);

/** The relay options the parsed flags set. */
function relayOptionsFrom(parsed: Record<string, unknown>): Partial<RelayOptions> {
  const options: Record<string, unknown> = {};
  for (const [key, { option, toOption }] of Object.entries(RELAY_FLAGS)) {
    const value = parsed[option.attributeName()];
    if (value !== undefined) options[key] = toOption(value);
  }
  return options as Partial<RelayOptions>;
}

const token = program.command("token").description("manage client tokens kept (hashed) in --state-dir");
token.command("add")
  .description("make a token and print it (shown only this once)")
  .option("--label <label>", "who or what the token is for", "unnamed")
  .option("--names <pattern>", "only http names matching this glob, e.g. team-*")
  .option("--max-tunnels <n>", "most tunnels the token may hold at once", int(1, 1_000_000))
  .option("--max-tcp-tunnels <n>", "most TCP tunnels among them (0 = none)", int(0, 65535))
  .option("--debug", "may attach to any tunnel as its debug receiver (reverprox … --debug)")
  .addOption(stateDirOption())
  .action((flags: TokenRule & { names?: string; stateDir: string }) => {
    const store = TokenStore.open(flags.stateDir);
    const { token, record } = store.add({
      label: flags.label,
      namePattern: flags.names,
      maxTunnels: flags.maxTunnels,
      maxTcpTunnels: flags.maxTcpTunnels,
      debug: flags.debug,
    });
    store.close();
    console.log(token);
    console.error(
      `token ${record.id} ("${record.label}") added; give it to the client: reverprox config set token …`,
    );
  });
token.command("list")
  .description("list tokens (never their values)")
  .addOption(stateDirOption())
  .action((flags: { stateDir: string }) => {
    const store = TokenStore.open(flags.stateDir);
    for (const t of store.list()) {
      console.log(
        `${t.id}\t${t.label}\tnames=${t.namePattern ?? "*"}\tmax=${t.maxTunnels ?? "-"}\t` +
          `tcp=${t.maxTcpTunnels ?? "-"}\t${t.debug ? "debug\t" : ""}` +
          `${t.revokedAt ? `revoked ${t.revokedAt}` : `created ${t.createdAt}`}`,
      );
    }
    store.close();
  });
token.command("revoke")
  .description("revoke a token; clients using it are refused from their next connection")
  .argument("<id>", "token id from `token list`")
  .addOption(stateDirOption())
  .action((id: string, flags: { stateDir: string }) => {
    const store = TokenStore.open(flags.stateDir);
    const revoked = store.revoke(Number(id));
    store.close();
    if (!revoked) throw new InvalidArgumentError(`no live token with id ${id}`);
    console.log(`token ${id} revoked`);
  });

program.command("service").description("run the relay as a systemd service").command("install")
  .description(
    "write a systemd unit that runs the relay with the flags after --, " +
      "e.g. service install -- --domain tunnel.example.com --tls acme --acme-email you@example.com",
  )
  .argument("[relay-flags...]", "the relay's flags (after --)")
  .option("--unit-dir <dir>", "where the unit goes", "/etc/systemd/system")
  .option("--user <name>", "run as this existing user (default: a dynamic user systemd makes per run)")
  .option("--print", "print the unit instead of writing it")
  .action(installService);

async function installService(
  relayFlags: string[],
  flags: { unitDir: string; user?: string; print?: boolean },
) {
  checkRelayUnitSpec(relayFlags, flags.user);
  // The unit would fail at every start on a flag the relay does not take: refuse it now.
  const { operands, unknown } = program.parseOptions(relayFlags);
  if (operands.length + unknown.length > 0) {
    throw new InvalidArgumentError(`not a relay flag: ${[...operands, ...unknown][0]}`);
  }
  const unit = relayUnit({ command: selfCommand(new URL(import.meta.url), relayFlags), user: flags.user });
  if (flags.print) return console.log(unit);
  const file = await installRelayUnit(unit, flags);
  console.log(`wrote ${file}`);
  if (!isCompiled()) {
    console.log(
      `  it runs ${import.meta.filename} with ${Deno.execPath()}; the service's user must read both`,
    );
  }
  console.log(
    `start it now and at every boot: systemctl daemon-reload && systemctl enable --now ${RELAY_UNIT}`,
  );
  console.log(`its log: journalctl -u ${RELAY_UNIT} -f`);
}

async function main(flags: SetupFlags & Record<string, unknown>) {
  setupLogging(flags.logLevel);
  const log = getLogger(["reverprox", "server"]);
  const options = relayOptionsFrom(flags);
  const domain = (options.domain ?? defaults.domain).toLowerCase();
  if (!domain.split(".").every(isValidName)) {
    throw new InvalidArgumentError(`--domain ${domain} is not a host name`);
  }
  // Before anything in the state dir is touched: another relay may be using it.
  const stateLock = await lockStateDir(flags.stateDir);
  const tokenStore = TokenStore.open(flags.stateDir);
  const identity = await relayIdentity(flags, domain, log);
  const tokenHashes = await loadTokenHashes(flags.token, flags.tokensFile);
  if (!tokenHashes && !tokenStore.hasTokens()) {
    log.warn(
      "no tokens (--token, --tokens-file or `reverprox-server token add`): this is an open relay; " +
        "anyone who reaches it can open tunnels",
    );
  }
  if (options.httpPort === undefined && tlsMode({ ...defaults, ...options }) !== "off") options.httpPort = 80;
  const setup = { tlsKey: flags.key, stateDir: flags.stateDir, domain, identity, tokenHashes, tokenStore };
  const relay = await Relay.start({ ...defaults, ...options, ...setup });
  printWelcome(relay, domain, identity.fingerprint);
  const stop = async (signal: string) => {
    log.info("{signal}: draining and closing client connections", { signal });
    await relay.shutdown();
    stateLock.close();
    Deno.exit(0);
  };
  Deno.addSignalListener("SIGINT", () => stop("SIGINT"));
  Deno.addSignalListener("SIGTERM", () => stop("SIGTERM"));
}

/** The relay's certificate: made once in the state dir (`--cert auto`), or the files given. */
async function relayIdentity(
  flags: SetupFlags,
  domain: string,
  log: ReturnType<typeof getLogger>,
): Promise<RelayIdentity> {
  if (flags.cert !== "auto") {
    if (!flags.key) throw new InvalidArgumentError("--cert FILE needs --key FILE");
    return await loadIdentityFiles(flags.cert, flags.key);
  }
  const identity = await loadOrCreateIdentity(flags.stateDir, domain);
  log.info("{what} certificate in {dir}", {
    what: identity.created ? "made a new" : "reusing the",
    dir: flags.stateDir,
  });
  return identity;
}

function printWelcome(relay: Relay, domain: string, fingerprint: string) {
  console.log(`reverprox-server: tunnels at ${relay.publicUrl("<name>")}`);
  console.log(`  clients connect to quic://${domain}:${relay.quicPort}`);
  console.log(`  CA fingerprint ${fingerprint}`);
  console.log(`  reverprox config set server quic://${domain}:${relay.quicPort}`);
  console.log(`  reverprox config set fingerprint ${fingerprint}`);
  // A stable line for scripts and tests that start the relay on port 0.
  const https = relay.httpsPort === undefined ? "" : ` https=${relay.httpsPort}`;
  console.log(`ready http=${relay.httpPort} quic=${relay.quicPort} fingerprint=${fingerprint}${https}`);
}

try {
  await program.parseAsync(Deno.args, { from: "user" });
} catch (error) {
  if (error instanceof InvalidArgumentError) {
    console.error(`reverprox-server: ${error.message}`);
    Deno.exit(2);
  }
  if (error instanceof StateError || error instanceof TlsSetupError || error instanceof ServiceSetupError) {
    console.error(`reverprox-server: ${error.message}`);
    Deno.exit(1);
  }
  if (error instanceof Deno.errors.AddrInUse) {
    console.error(
      `reverprox-server: ${error.message}; another program holds the port (see --http-port, --quic-port)`,
    );
    Deno.exit(1);
  }
  throw error;
}
