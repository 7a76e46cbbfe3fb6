/**
 * `reverprox-server`: the relay. Serves `<name>.<domain>` over HTTP and takes
 * tunnel clients over QUIC.
 *
 * ```
 * reverprox-server --domain tunnel.example.com --cert auto
 * reverprox-server --cert fullchain.pem --key privkey.pem --tokens-file tokens.txt
 * ```
 * @module
 */
import { Command, InvalidArgumentError, Option } from "commander";
import { join } from "node:path";
import { loadIdentityFiles, loadOrCreateIdentity } from "./lib/cert.ts";
import { DEFAULT_RELAY_OPTIONS, Relay } from "./lib/relay.ts";
import { loadTokenHashes } from "./lib/tokens.ts";
import { TokenStore } from "./lib/token_store.ts";
import { getLogger, setupLogging } from "./lib/log.ts";
import { isValidName } from "./lib/names.ts";

interface ServerFlags {
  domain: string;
  hostname: string;
  httpPort: number;
  quicPort: number;
  cert: string;
  key?: string;
  stateDir: string;
  token: string[];
  tokensFile?: string;
  grace: number;
  responseTimeout: number;
  helloTimeout: number;
  headerTimeout: number;
  bodyTimeout: number;
  heartbeat: number;
  maxBodyBytes?: number;
  maxHeaderBytes: number;
  maxHeaderCount: number;
  maxInFlight: number;
  maxInFlightPerTunnel: number;
  activePerTunnel: number;
  maxClientsPerIp: number;
  ratePerTunnel: number;
  ratePerIp: number;
  registration: boolean;
  publicScheme: "http" | "https";
  publicPort?: number;
  tcpPorts: { min: number; max: number } | null;
  maxTcpConns: number;
  logLevel: string;
}

const defaults = DEFAULT_RELAY_OPTIONS;

function int(min: number, max: number) {
  return (value: string) => {
    const n = Number(value);
    if (!Number.isInteger(n) || n < min || n > max) {
      throw new InvalidArgumentError(`expected ${min}..${max}`);
    }
    return n;
  };
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

function defaultStateDir(): string {
  const xdg = Deno.env.get("XDG_STATE_HOME");
  return xdg
    ? join(xdg, "reverprox-server")
    : join(Deno.env.get("HOME") ?? ".", ".local", "state", "reverprox-server");
}

const program = new Command("reverprox-server")
  .enablePositionalOptions()
  .description("The reverprox relay: public HTTP for <name>.<domain>, QUIC for tunnel clients.")
  .addOption(
    new Option("--domain <domain>", "tunnels live at <name>.<domain>").env("REVERPROX_DOMAIN")
      .default(defaults.domain),
  )
  .addOption(
    new Option("--hostname <addr>", "address to bind").env("REVERPROX_HOSTNAME").default(
      defaults.hostname,
    ),
  )
  .addOption(
    new Option("--http-port <port>", "public HTTP port").env("REVERPROX_HTTP_PORT").argParser(
      int(0, 65535),
    )
      .default(defaults.httpPort),
  )
  .addOption(
    new Option("--quic-port <port>", "QUIC (UDP) port for clients; same TCP port serves the CA")
      .env("REVERPROX_QUIC_PORT").argParser(int(0, 65535)).default(defaults.quicPort),
  )
  .addOption(
    new Option(
      "--cert <auto|file>",
      "TLS certificate chain for QUIC, or auto (private CA in --state-dir)",
    )
      .env("REVERPROX_CERT").default("auto"),
  )
  .addOption(new Option("--key <file>", "private key for --cert FILE").env("REVERPROX_KEY"))
  .addOption(
    new Option("--state-dir <dir>", "where keys and state live").env("REVERPROX_STATE_DIR").default(
      defaultStateDir(),
    ),
  )
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
    new Option("--grace <seconds>", "how long a dropped client's names stay reserved").env(
      "REVERPROX_GRACE",
    )
      .argParser(int(0, 86_400)).default(defaults.graceMs / 1000),
  )
  .addOption(
    new Option(
      "--heartbeat <seconds>",
      "heartbeat interval; clients silent for 3 beats are dropped",
    )
      .env("REVERPROX_HEARTBEAT").argParser(int(1, 3600)).default(defaults.heartbeatMs / 1000),
  )
  .addOption(
    new Option("--header-timeout <seconds>", "time a visitor has to send a request head before 408").env(
      "REVERPROX_HEADER_TIMEOUT",
    )
      .argParser(int(1, 3600)).default(defaults.headerTimeoutMs / 1000),
  )
  .addOption(
    new Option("--body-timeout <seconds>", "longest pause in a request body before 408").env(
      "REVERPROX_BODY_TIMEOUT",
    )
      .argParser(int(1, 86_400)).default(defaults.bodyIdleTimeoutMs / 1000),
  )
  .addOption(
    new Option("--hello-timeout <seconds>", "time a new QUIC connection has to say hello before it is closed")
      .env("REVERPROX_HELLO_TIMEOUT").argParser(int(1, 3600)).default(defaults.handshakeTimeoutMs / 1000),
  )
  .addOption(
    new Option("--response-timeout <seconds>", "time a tunnel has to answer before 504")
      .env("REVERPROX_RESPONSE_TIMEOUT").argParser(int(1, 86_400)).default(
        defaults.responseTimeoutMs / 1000,
      ),
  )
  .addOption(
    new Option("--max-body-bytes <n>", "request body cap (413); no cap by default")
      .env("REVERPROX_MAX_BODY_BYTES").argParser(int(0, Number.MAX_SAFE_INTEGER)),
  )
  .addOption(
    new Option("--max-header-count <n>", "request headers before 431").env("REVERPROX_MAX_HEADER_COUNT")
      .argParser(int(8, 10_000)).default(defaults.maxHeaderCount),
  )
  .addOption(
    new Option("--max-header-bytes <n>", "request header cap (431)").env(
      "REVERPROX_MAX_HEADER_BYTES",
    )
      .argParser(int(1024, 1 << 20)).default(defaults.maxHeaderBytes),
  )
  .addOption(
    new Option("--max-clients-per-ip <n>", "QUIC connections one address may hold; more are refused")
      .env("REVERPROX_MAX_CLIENTS_PER_IP").argParser(int(1, 1 << 20)).default(defaults.maxConnectionsPerIp),
  )
  .addOption(
    new Option("--max-in-flight-per-tunnel <n>", "requests in flight on one tunnel before 503")
      .env("REVERPROX_MAX_IN_FLIGHT_PER_TUNNEL").argParser(int(1, 1 << 20)).default(
        defaults.maxInFlightPerTunnel,
      ),
  )
  .addOption(
    new Option(
      "--active-per-tunnel <n>",
      "requests one tunnel may have in progress while the relay is overloaded and shared; more wait their turn",
    )
      .env("REVERPROX_ACTIVE_PER_TUNNEL").argParser(int(1, 1 << 20)).default(defaults.activePerTunnel),
  )
  .addOption(
    new Option("--max-in-flight <n>", "requests in flight on the relay before 503")
      .env("REVERPROX_MAX_IN_FLIGHT").argParser(int(1, 1 << 20)).default(defaults.maxInFlight),
  )
  .addOption(
    new Option(
      "--registration",
      "let visitors sign up for tokens: POST /api/register, /api/auth on the bare domain",
    )
      .env("REVERPROX_REGISTRATION").default(defaults.registration),
  )
  .addOption(
    new Option(
      "--rate-per-tunnel <n>",
      "requests per second one tunnel may receive before 429 (0 = no limit)",
    )
      .env("REVERPROX_RATE_PER_TUNNEL").argParser(int(0, 1 << 30)).default(defaults.ratePerTunnel),
  )
  .addOption(
    new Option("--rate-per-ip <n>", "requests per second one visitor IP may send before 429 (0 = no limit)")
      .env("REVERPROX_RATE_PER_IP").argParser(int(0, 1 << 30)).default(defaults.ratePerIp),
  )
  .addOption(
    new Option(
      "--public-scheme <scheme>",
      "scheme visitors use (https when a TLS proxy is in front)",
    )
      .env("REVERPROX_PUBLIC_SCHEME").choices(["http", "https"]).default(defaults.publicScheme),
  )
  .addOption(
    new Option("--public-port <port>", "port visitors use, when it differs from --http-port")
      .env("REVERPROX_PUBLIC_PORT").argParser(int(1, 65535)),
  )
  .addOption(
    new Option("--tcp-ports <min-max|none>", "public ports for TCP tunnels").env("REVERPROX_TCP_PORTS")
      .argParser(portRange).default(defaults.tcpPorts, "20000-20999"),
  )
  .addOption(
    new Option("--max-tcp-conns <n>", "open connections per TCP tunnel before new ones are refused")
      .env("REVERPROX_MAX_TCP_CONNS").argParser(int(1, 1 << 20)).default(defaults.maxTcpConnections),
  )
  .addOption(
    new Option("--log-level <level>", "trace, debug, info, warning, error").env(
      "REVERPROX_LOG_LEVEL",
    ).default("info"),
  )
  .action(main);

const token = program.command("token").description("manage client tokens kept (hashed) in --state-dir");
const stateDirOption = () =>
  new Option("--state-dir <dir>", "where keys and state live").env("REVERPROX_STATE_DIR").default(
    defaultStateDir(),
  );
token.command("add")
  .description("make a token and print it (shown only this once)")
  .option("--label <label>", "who or what the token is for", "unnamed")
  .option("--names <pattern>", "only http names matching this glob, e.g. team-*")
  .option("--max-tunnels <n>", "most tunnels the token may hold at once", int(1, 1_000_000))
  .addOption(stateDirOption())
  .action((flags: { label: string; names?: string; maxTunnels?: number; stateDir: string }) => {
    const store = TokenStore.open(flags.stateDir);
    const { token, record } = store.add({
      label: flags.label,
      namePattern: flags.names,
      maxTunnels: flags.maxTunnels,
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

async function main(flags: ServerFlags) {
  setupLogging(flags.logLevel);
  const log = getLogger(["reverprox", "server"]);
  const domain = flags.domain.toLowerCase();
  if (!domain.split(".").every(isValidName)) {
    throw new InvalidArgumentError(`--domain ${flags.domain} is not a host name`);
  }
  let identity;
  if (flags.cert === "auto") {
    identity = await loadOrCreateIdentity(flags.stateDir, domain);
    log.info("{what} certificate in {dir}", {
      what: identity.created ? "made a new" : "reusing the",
      dir: flags.stateDir,
    });
  } else {
    if (!flags.key) throw new InvalidArgumentError("--cert FILE needs --key FILE");
    identity = await loadIdentityFiles(flags.cert, flags.key);
  }
  const tokenHashes = await loadTokenHashes(flags.token, flags.tokensFile);
  const tokenStore = TokenStore.open(flags.stateDir);
  if (!tokenHashes && !tokenStore.hasTokens()) {
    log.warn(
      "no tokens (--token, --tokens-file or `reverprox-server token add`): this is an open relay; " +
        "anyone who reaches it can open tunnels",
    );
  }

  const relay = await Relay.start({
    ...defaults,
    domain,
    hostname: flags.hostname,
    httpPort: flags.httpPort,
    quicPort: flags.quicPort,
    identity,
    tokenHashes,
    tokenStore,
    graceMs: flags.grace * 1000,
    heartbeatMs: flags.heartbeat * 1000,
    responseTimeoutMs: flags.responseTimeout * 1000,
    handshakeTimeoutMs: flags.helloTimeout * 1000,
    headerTimeoutMs: flags.headerTimeout * 1000,
    bodyIdleTimeoutMs: flags.bodyTimeout * 1000,
    maxBodyBytes: flags.maxBodyBytes,
    maxHeaderBytes: flags.maxHeaderBytes,
    maxHeaderCount: flags.maxHeaderCount,
    maxInFlight: flags.maxInFlight,
    maxInFlightPerTunnel: flags.maxInFlightPerTunnel,
    activePerTunnel: flags.activePerTunnel,
    maxConnectionsPerIp: flags.maxClientsPerIp,
    ratePerTunnel: flags.ratePerTunnel,
    ratePerIp: flags.ratePerIp,
    registration: flags.registration,
    publicScheme: flags.publicScheme,
    publicPort: flags.publicPort,
    tcpPorts: flags.tcpPorts,
    maxTcpConnections: flags.maxTcpConns,
  });
  console.log(`reverprox-server: tunnels at ${relay.publicUrl("<name>")}`);
  console.log(`  clients connect to quic://${domain}:${relay.quicPort}`);
  console.log(`  CA fingerprint ${identity.fingerprint}`);
  console.log(`  reverprox config set server quic://${domain}:${relay.quicPort}`);
  console.log(`  reverprox config set fingerprint ${identity.fingerprint}`);
  // A stable line for scripts and tests that start the relay on port 0.
  console.log(
    `ready http=${relay.httpPort} quic=${relay.quicPort} fingerprint=${identity.fingerprint}`,
  );

  const stop = async (signal: string) => {
    log.info("{signal}: draining and closing client connections", { signal });
    await relay.shutdown();
    Deno.exit(0);
  };
  Deno.addSignalListener("SIGINT", () => stop("SIGINT"));
  Deno.addSignalListener("SIGTERM", () => stop("SIGTERM"));
}

try {
  await program.parseAsync(Deno.args, { from: "user" });
} catch (error) {
  if (error instanceof InvalidArgumentError) {
    console.error(`reverprox-server: ${error.message}`);
    Deno.exit(2);
  }
  if (error instanceof Deno.errors.AddrInUse) {
    console.error(
      `reverprox-server: ${error.message}; another program holds the port (see --http-port, --quic-port)`,
    );
    Deno.exit(1);
  }
  throw error;
}
