/**
 * How a client comes to trust a relay before its first QUIC handshake.
 *
 * Deno's QUIC trusts only the CA certificates it is given, so the client first
 * asks the relay (plain HTTP on the QUIC port number, over TCP) for its CA and
 * domain, then checks the CA's SHA-256 fingerprint: against a pinned value when
 * one is configured, else against `known_relays` (trust on first use, like
 * SSH's known_hosts). A changed fingerprint is refused loudly, never trusted.
 *
 * @example
 * ```ts
 * import { dialQuic } from "../transport/quic.ts";
 * import { ALPN } from "../wire/protocol.ts";
 * const relay = parseServerUrl("quic://tunnel.example.com:4433");
 * const trusted = await trustRelay(relay, { pinned: undefined, knownRelaysFile: "known_relays" });
 * await dialQuic({ ...relay, serverName: trusted.domain, caCert: trusted.caCert, alpn: ALPN, timeoutMs: 5_000 });
 * ```
 * @module
 */
import { dirname } from "node:path";
import { type RelayInfo, RelayInfoSchema } from "../wire/protocol.ts";
import { hostPort } from "../shared/host_port.ts";
import { normalizeFingerprint, pemFingerprint } from "../shared/hash.ts";

/** Where a relay listens for clients. */
export interface RelayAddress {
  hostname: string;
  port: number;
  /**
   * Set for the relay's public port (`http://` or `https://tunnel.example.com`, say behind a TLS proxy):
   * reached over the TCP transport only, its CA fetched from the bare domain there.
   */
  via?: "http" | "https";
}

/** A relay could not be trusted or reached; the message says what to do. */
export class TrustError extends Error {
  /** `fatal`: the relay is not the one trusted before (a changed or wrong fingerprint); retrying cannot help. */
  constructor(message: string, readonly fatal = false) {
    super(message);
    this.name = "TrustError";
  }
}

/**
 * `quic://host:port` (or `host:port`, or `host`) → address; the default port is 4433. `https://host` or
 * `http://host[:port]` names the relay's public port instead (443 or 80 by default).
 */
export function parseServerUrl(text: string): RelayAddress {
  const url = new URL(text.includes("://") ? text : `quic://${text}`);
  const defaults: Record<string, number> = { "quic:": 4433, "https:": 443, "http:": 80 };
  if (!(url.protocol in defaults)) {
    throw new TrustError(
      `server must be quic://host:port (or https://host for its public port), not ${text}`,
    );
  }
  const hostname = url.hostname.replace(/^\[(.*)\]$/, "$1");
  if (!hostname) throw new TrustError(`server ${text} has no host`);
  const port = url.port ? Number(url.port) : defaults[url.protocol];
  if (url.protocol === "quic:") return { hostname, port };
  return { hostname, port, via: url.protocol === "https:" ? "https" : "http" };
}

/** What the client needs to open QUIC to a trusted relay. */
export interface TrustedRelay {
  domain: string;
  caCert: string;
  fingerprint: string;
  /** The protocol version the relay speaks. */
  protocol: number;
  /** Set when this call trusted the relay for the first time. */
  firstUse: boolean;
}

export interface TrustOptions {
  /** Fingerprint the user pinned; wins over known_relays. */
  pinned?: string;
  knownRelaysFile: string;
}

/** Longest the relay's info document may take to arrive over TCP. */
const INFO_FETCH_TIMEOUT_MS = 5_000;

/** Fetches the relay's CA and decides whether to trust it. */
export async function trustRelay(
  relay: RelayAddress,
  options: TrustOptions,
): Promise<TrustedRelay> {
  const info = await fetchRelayInfo(relay, INFO_FETCH_TIMEOUT_MS);
  const fingerprint = pemFingerprint(info.caCert);
  const label = addressLabel(relay);
  if (options.pinned !== undefined) {
    if (normalizeFingerprint(options.pinned) !== fingerprint) {
      throw new TrustError(
        `relay ${label} presents CA fingerprint ${fingerprint}, but ${
          normalizeFingerprint(options.pinned)
        } is pinned. ` +
          `Refusing to connect: someone may be impersonating the relay.`,
        true,
      );
    }
    return {
      domain: info.domain,
      caCert: info.caCert,
      fingerprint,
      protocol: info.protocol,
      firstUse: false,
    };
  }
  const known = await readKnownRelays(options.knownRelaysFile);
  const remembered = known.get(label);
  if (remembered && remembered !== fingerprint) {
    throw new TrustError(
      `WARNING: the fingerprint of relay ${label} has changed!\n` +
        `  known:     ${remembered}\n  presented: ${fingerprint}\n` +
        `Refusing to connect: someone may be impersonating the relay. If the relay's certificate was ` +
        `replaced on purpose, remove its line from ${options.knownRelaysFile}.`,
      true,
    );
  }
  if (!remembered) {
    await Deno.mkdir(dirname(options.knownRelaysFile), { recursive: true, mode: 0o700 });
    await Deno.writeTextFile(options.knownRelaysFile, `${label} ${fingerprint}\n`, {
      append: true,
      mode: 0o600,
    });
  }
  return {
    domain: info.domain,
    caCert: info.caCert,
    fingerprint,
    protocol: info.protocol,
    firstUse: !remembered,
  };
}

/** GETs the relay's info document over TCP on its QUIC port number. */
async function fetchRelayInfo(relay: RelayAddress, timeoutMs: number): Promise<RelayInfo> {
  let response: Response;
  try {
    response = await fetch(`${relay.via ?? "http"}://${addressLabel(relay)}/.well-known/reverprox.json`, {
      signal: AbortSignal.timeout(timeoutMs),
    });
  } catch (error) {
    throw new TrustError(
      `cannot reach relay ${addressLabel(relay)} over TCP to fetch its certificate: ${
        error instanceof Error ? error.message : error
      }`,
    );
  }
  // A body that is not JSON fails the schema check, answered below like any wrong document.
  const parsed = RelayInfoSchema.safeParse(await response.json().catch(() => null));
  if (!response.ok || !parsed.success) {
    throw new TrustError(
      `${addressLabel(relay)} did not answer like a reverprox relay (HTTP ${response.status})`,
    );
  }
  return parsed.data;
}

function addressLabel(relay: RelayAddress): string {
  return hostPort(relay.hostname, relay.port);
}

async function readKnownRelays(file: string): Promise<Map<string, string>> {
  const known = new Map<string, string>();
  let text = "";
  try {
    text = await Deno.readTextFile(file);
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  }
  for (const line of text.split("\n")) {
    const [address, fingerprint] = line.trim().split(/\s+/);
    if (address && fingerprint && !address.startsWith("#")) known.set(address, fingerprint);
  }
  return known;
}
