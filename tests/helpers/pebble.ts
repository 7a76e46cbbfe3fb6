/**
 * A real ACME server on loopback for the HTTPS tests: Debian's `pebble` (Let's Encrypt's test CA) with
 * `pebble-challtestsrv` as its DNS, which answers every name with 127.0.0.1, so HTTP-01 validation
 * reaches the relay's plain HTTP port and DNS-01 reads the TXT records a hook set through the
 * challenge server's management API. Every port is a free one; pebble's own HTTPS certificate is made
 * here with openssl.
 * @module
 */
import https from "node:https";
import { join } from "node:path";
import { Child, type Processes } from "./processes.ts";
import { selfSigned } from "./certs.ts";

export interface Pebble {
  /** The ACME directory URL, for `--acme-directory`. */
  directory: string;
  /** Pebble's own HTTPS certificate, for `--acme-ca`. */
  caFile: string;
  /** The root every certificate pebble issues chains to (PEM). */
  root: string;
  /** pebble-challtestsrv's DNS port (UDP and TCP) and management API. */
  dnsPort: number;
  management: string;
  /** Orders pebble has taken so far, read from its log. */
  orders(): number;
  child: Child;
}

/** A TCP port that was free a moment ago (UDP too when asked). */
export function freePort(udp = false): number {
  for (;;) {
    const tcp = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const { port } = tcp.addr as Deno.NetAddr;
    try {
      if (udp) Deno.listenDatagram({ hostname: "127.0.0.1", port, transport: "udp" }).close();
      return port;
    } catch {
      // Taken over UDP: pick another.
    } finally {
      tcp.close();
    }
  }
}

/**
 * Starts challtestsrv and pebble; pebble validates HTTP-01 at `httpPort` (the relay's `--http-port`)
 * and issues certificates valid for `validitySeconds`.
 */
export async function startPebble(
  processes: Processes,
  options: { httpPort: number; validitySeconds?: number },
): Promise<Pebble> {
  const dir = await processes.tempDir();
  const tls = await selfSigned(dir, "pebble-tls", ["localhost", "127.0.0.1"]);
  const [acmePort, managementPort, dnsPort, challengePort] = [
    freePort(),
    freePort(),
    freePort(true),
    freePort(),
  ];
  const challenges = processes.add(
    new Child("challtestsrv", "pebble-challtestsrv", [
      ...["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""],
      ...["-dns01", `127.0.0.1:${dnsPort}`, "-management", `127.0.0.1:${challengePort}`],
      ...["-http01", "", "-https01", "", "-tlsalpn01", ""],
    ]),
  );
  await challenges.waitFor(/Starting management server/);
  const config = join(dir, "pebble.json");
  await Deno.writeTextFile(
    config,
    JSON.stringify({
      pebble: {
        listenAddress: `127.0.0.1:${acmePort}`,
        managementListenAddress: `127.0.0.1:${managementPort}`,
        certificate: tls.cert,
        privateKey: tls.key,
        httpPort: options.httpPort,
        // No TLS-ALPN-01 responder: a port nothing listens on.
        tlsPort: freePort(),
        ocspResponderURL: "",
        externalAccountBindingRequired: false,
        certificateValidityPeriod: options.validitySeconds ?? 3600,
      },
    }),
  );
  const child = processes.add(
    new Child("pebble", "pebble", ["-config", config, "-dnsserver", `127.0.0.1:${dnsPort}`], {
      PEBBLE_VA_NOSLEEP: "1",
      PEBBLE_WFE_NONCEREJECT: "0",
    }),
  );
  await child.waitFor(/ACME directory available/, { timeoutMs: 30_000 });
  const caPem = await Deno.readTextFile(tls.cert);
  return {
    directory: `https://127.0.0.1:${acmePort}/dir`,
    caFile: tls.cert,
    root: await rootOnceListening(`https://127.0.0.1:${managementPort}/roots/0`, caPem),
    dnsPort,
    management: `http://127.0.0.1:${challengePort}`,
    orders: () => child.lines.filter((line) => /Added order/.test(line)).length,
    child,
  };
}

/**
 * Pebble's root: its management listener may come up a moment after the directory says it is available,
 * so a refused connection is tried again, for 5 s at most.
 */
async function rootOnceListening(url: string, ca: string): Promise<string> {
  for (const deadline = Date.now() + 5_000;;) {
    try {
      return await httpsText(url, ca);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "ECONNREFUSED" || Date.now() > deadline) throw error;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }
}

/** GET over HTTPS trusting only `ca`. */
function httpsText(url: string, ca: string): Promise<string> {
  return new Promise((resolve, reject) => {
    https.get(url, { ca, agent: false }, (response) => {
      let text = "";
      response.setEncoding("utf8");
      response.on("data", (chunk: string) => text += chunk);
      response.on("end", () => resolve(text));
      response.on("error", reject);
    }).on("error", reject);
  });
}
