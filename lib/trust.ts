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
 * const relay = parseServerUrl("quic://tunnel.example.com:4433");
 * const trusted = await trustRelay(relay, { pinned: undefined, knownRelaysFile: "known_relays" });
 * Deno.connectQuic({ ...relay, serverName: trusted.domain, caCerts: [trusted.caCert], alpnProtocols: [ALPN] });
 * ```
 * @module
 */
import { dirname } from "node:path";
import { z } from "zod";
import { normalizeFingerprint, pemFingerprint } from "./cert.ts";

/** Where a relay listens for clients. */
export interface RelayAddress {
  hostname: string;
  port: number;
}

/** A relay could not be trusted or reached; the message says what to do. */
export class TrustError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "TrustError";
  }
}

/** `quic://host:port` (or `host:port`, or `host`) → address; the default port is 4433. */
export function parseServerUrl(text: string): RelayAddress {
  const url = new URL(text.includes("://") ? text : `quic://${text}`);
  if (url.protocol !== "quic:") {
    throw new TrustError(`server must be quic://host:port, not ${text}`);
  }
  const hostname = url.hostname.replace(/^\[(.*)\]$/, "$1");
  if (!hostname) throw new TrustError(`server ${text} has no host`);
  return { hostname, port: url.port ? Number(url.port) : 4433 };
}

const RelayInfoSchema = z.object({
  relay: z.literal("reverprox"),
  protocol: z.number(),
  domain: z.string(),
  fingerprint: z.string(),
  caCert: z.string(),
});
export type RelayInfo = z.infer<typeof RelayInfoSchema>;

/** What the client needs to open QUIC to a trusted relay. */
export interface TrustedRelay {
  domain: string;
  caCert: string;
  fingerprint: string;
  /** Set when this call trusted the relay for the first time. */
  firstUse: boolean;
}

export interface TrustOptions {
  /** Fingerprint the user pinned; wins over known_relays. */
  pinned?: string;
  knownRelaysFile: string;
  fetchTimeoutMs?: number;
}

/** Fetches the relay's CA and decides whether to trust it. */
export async function trustRelay(
  relay: RelayAddress,
  options: TrustOptions,
): Promise<TrustedRelay> {
  const info = await fetchRelayInfo(relay, options.fetchTimeoutMs ?? 5_000);
  const fingerprint = pemFingerprint(info.caCert);
  const label = addressLabel(relay);
  if (options.pinned !== undefined) {
    if (normalizeFingerprint(options.pinned) !== fingerprint) {
      throw new TrustError(
        `relay ${label} presents CA fingerprint ${fingerprint}, but ${
          normalizeFingerprint(options.pinned)
        } is pinned. ` +
          `Refusing to connect: someone may be impersonating the relay.`,
      );
    }
    return { domain: info.domain, caCert: info.caCert, fingerprint, firstUse: false };
  }
  const known = await readKnownRelays(options.knownRelaysFile);
  const remembered = known.get(label);
  if (remembered && remembered !== fingerprint) {
    throw new TrustError(
      `WARNING: the fingerprint of relay ${label} has changed!\n` +
        `  known:     ${remembered}\n  presented: ${fingerprint}\n` +
        `Refusing to connect: someone may be impersonating the relay. If the relay's certificate was ` +
        `replaced on purpose, remove its line from ${options.knownRelaysFile}.`,
    );
  }
  if (!remembered) {
    await Deno.mkdir(dirname(options.knownRelaysFile), { recursive: true, mode: 0o700 });
    await Deno.writeTextFile(options.knownRelaysFile, `${label} ${fingerprint}\n`, {
      append: true,
      mode: 0o600,
    });
  }
  return { domain: info.domain, caCert: info.caCert, fingerprint, firstUse: !remembered };
}

/** GETs the relay's info document over TCP on its QUIC port number. */
export async function fetchRelayInfo(relay: RelayAddress, timeoutMs: number): Promise<RelayInfo> {
  const host = relay.hostname.includes(":") ? `[${relay.hostname}]` : relay.hostname;
  let response: Response;
  try {
    response = await fetch(`http://${host}:${relay.port}/.well-known/reverprox.json`, {
      signal: AbortSignal.timeout(timeoutMs),
    });
  } catch (error) {
    throw new TrustError(
      `cannot reach relay ${addressLabel(relay)} over TCP to fetch its certificate: ${
        error instanceof Error ? error.message : error
      }`,
    );
  }
  const parsed = RelayInfoSchema.safeParse(await response.json().catch(() => null));
  if (!response.ok || !parsed.success) {
    throw new TrustError(
      `${addressLabel(relay)} did not answer like a reverprox relay (HTTP ${response.status})`,
    );
  }
  return parsed.data;
}

function addressLabel(relay: RelayAddress): string {
  return relay.hostname.includes(":")
    ? `[${relay.hostname}]:${relay.port}`
    : `${relay.hostname}:${relay.port}`;
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
