/**
 * The relay's public listeners. With TLS off, the public app on plain HTTP, as always. With TLS on, the
 * public app on HTTPS (`node:https` through `servePublic`, so the head timeout, connection limits and
 * response writer are the plain listener's own; SNI picks the certificate), and a small app on the
 * plain HTTP port that answers ACME HTTP-01 challenges and sends everything else to HTTPS with a 308
 * (same host, path and query; the method and body are kept).
 *
 * @example
 * ```ts
 * import { Hono } from "hono";
 * import { DEFAULT_TLS_OPTIONS } from "./options.ts";
 * const app = new Hono();
 * const front = await bindPublicFront(app.fetch, { headerTimeoutMs: 10_000, maxHeadBytes: 48_000, admit: () => () => {} }, {
 *   ...DEFAULT_TLS_OPTIONS,
 *   tls: "/etc/tls/fullchain.pem",
 *   tlsKey: "/etc/tls/privkey.pem",
 *   domain: "tunnel.example.com",
 *   hostname: "0.0.0.0",
 *   httpPort: 80,
 *   inUse: () => true,
 * });
 * console.log(front.httpsPort); // 443
 * await front.shutdown(5_000);
 * ```
 * @module
 */
import { Hono } from "hono";
import { isValidName } from "../../shared/names.ts";
import { hostName, tunnelName } from "../public/middleware.ts";
import { errorPage } from "../public/pages.ts";
import { type PublicServer, type PublicServerOptions, servePublic } from "../public/server.ts";
import { AcmeCertificates } from "./acme_certificates.ts";
import { AcmeIssuer } from "./acme_issuer.ts";
import { AcmeStore } from "./acme_store.ts";
import { type Certificates, sniCallback } from "./certificates.ts";
import { FileCertificates } from "./file_certificates.ts";
import { acmeDirectory, tlsMode, type TlsOptions, TlsSetupError } from "./options.ts";

type Fetch = Parameters<typeof servePublic>[0];

export interface FrontOptions extends TlsOptions {
  domain: string;
  hostname: string;
  httpPort: number;
  /** The HTTPS port visitors use, when a proxy in front differs from `httpsPort`. */
  publicPort?: number;
  /** Whether a tunnel holds `name`: ACME renews and retries only such names. */
  inUse: (name: string) => boolean;
}

export interface PublicFront {
  readonly httpPort: number;
  /** Set when TLS is on. */
  readonly httpsPort?: number;
  /** A tunnel name was handed out: with ACME, its certificate is ordered now unless it has one. */
  want(name: string): void;
  /** Stops accepting; waits up to `drainMs` for requests in flight. */
  shutdown(drainMs: number): Promise<void>;
}

/** The listener options both ports share; each gets its own port. */
type ListenerOptions = Omit<PublicServerOptions, "hostname" | "port" | "tls">;

/** Binds the public side: plain HTTP with TLS off; HTTPS plus the challenge-and-redirect port with it on. */
export async function bindPublicFront(
  fetch: Fetch,
  listener: ListenerOptions,
  options: FrontOptions,
): Promise<PublicFront> {
  const at = (port: number) => ({ ...listener, hostname: options.hostname, port });
  if (tlsMode(options) === "off") {
    const http = await servePublic(fetch, at(options.httpPort));
    return { httpPort: http.port, want: () => {}, shutdown: (drainMs) => http.shutdown(drainMs) };
  }
  const certificates = await openCertificates(options);
  let https: PublicServer | undefined;
  try {
    https = await servePublic(fetch, {
      ...at(options.httpsPort),
      // A visitor whose name's certificate is being issued waits in the handshake (SNI) for it.
      tls: {
        SNICallback: sniCallback(certificates),
        handshakeTimeout: listener.headerTimeoutMs + certificates.maxWaitMs,
      },
    });
    const httpsPort = https.port;
    const app = challengesAndRedirects(options.domain, certificates, options.publicPort ?? httpsPort);
    const http = await servePublic(app.fetch, at(options.httpPort));
    return {
      httpPort: http.port,
      httpsPort,
      want: (name) => certificates.want(name),
      shutdown: async (drainMs) => {
        await Promise.all([https!.shutdown(drainMs), http.shutdown(0)]);
        certificates.close();
      },
    };
  } catch (error) {
    certificates.close();
    await https?.shutdown(0);
    throw error;
  }
}

/** The certificate source `options.tls` names; a {@link TlsSetupError} says why there is none. */
async function openCertificates(options: FrontOptions): Promise<Certificates> {
  if (tlsMode(options) === "files") {
    if (!options.tlsKey) {
      throw new TlsSetupError("--tls FILE needs --key FILE (the certificate's private key)");
    }
    try {
      return await FileCertificates.open(options.tls, options.tlsKey, options.domain);
    } catch (error) {
      throw new TlsSetupError(`--tls ${error instanceof Error ? error.message : error}`);
    }
  }
  if (!options.stateDir) {
    throw new TlsSetupError("--tls acme needs a state dir for its account and certificates");
  }
  const directory = acmeDirectory(options);
  const store = AcmeStore.open(options.stateDir, directory);
  const issuer = await AcmeIssuer.open({
    directory,
    store,
    email: options.acmeEmail,
    caCert: options.acmeCa && await Deno.readTextFile(options.acmeCa).catch((error) => {
      throw new TlsSetupError(`--acme-ca ${options.acmeCa}: ${error.message}`);
    }),
    dnsHook: options.acmeDnsHook,
  });
  return await AcmeCertificates.open({
    domain: options.domain,
    issuer,
    store,
    wildcard: options.acmeDnsHook !== undefined,
    weeklyLimit: options.acmeWeeklyLimit,
    inUse: options.inUse,
  });
}

/** The plain HTTP port with TLS on: ACME HTTP-01 answers, and a 308 to HTTPS for the relay's own hosts. */
function challengesAndRedirects(domain: string, certificates: Certificates, httpsPort: number): Hono {
  const app = new Hono();
  app.get("/.well-known/acme-challenge/:token", (c) => {
    const answer = certificates.challengeAnswer(c.req.param("token"));
    return answer !== undefined
      ? c.text(answer)
      : errorPage(404, "not_found", "No ACME challenge is open for this token.");
  });
  app.all("*", (c) => {
    const host = hostName(c.req.header("host") ?? "");
    const name = tunnelName(host, domain);
    if (name !== undefined && !(name && isValidName(name))) {
      return errorPage(
        421,
        "misdirected_request",
        `This relay serves ${domain} and *.${domain}, not ${host}.`,
      );
    }
    const url = new URL(c.req.url);
    const port = httpsPort === 443 ? "" : `:${httpsPort}`;
    return new Response(null, {
      status: 308,
      headers: { location: `https://${host}${port}${url.pathname}${url.search}` },
    });
  });
  return app;
}
