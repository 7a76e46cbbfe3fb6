/**
 * What the HTTPS listener asks of a certificate source, whichever it is (files of the user's own, or an
 * ACME server): the TLS context for the name a visitor's handshake asks for (SNI), and word of the
 * tunnel names the relay hands out. Also the one place PEM text becomes a checked TLS context: Deno's
 * `tls.createSecureContext` accepts anything, so a certificate whose key does not match it, or that is
 * not a certificate at all, would only fail in visitors' handshakes.
 *
 * @example
 * ```ts
 * import { createServer } from "node:https";
 * declare const certificates: Certificates;
 * const server = createServer({ SNICallback: sniCallback(certificates) });
 * ```
 * @module
 */
import { createPrivateKey, X509Certificate } from "node:crypto";
import { createSecureContext, type SecureContext, type TlsOptions as NodeTlsOptions } from "node:tls";

/** A certificate ready to serve, and what renewal and SNI need to know of it. */
export interface Certificate {
  context: SecureContext;
  /** The PEM chain and key it was made from. */
  chain: string;
  key: string;
  notBefore: Date;
  notAfter: Date;
  /** DNS names it covers, as written (`*.tunnel.example.com` for a wildcard). */
  names: string[];
}

export interface Certificates {
  /** Longest {@link contextFor} may keep a handshake waiting (for a certificate being issued). */
  readonly maxWaitMs: number;
  /** The context for a handshake asking for `servername` (lowercase; "" when the client named none). */
  contextFor(servername: string): Promise<SecureContext | undefined>;
  /** A tunnel name was handed out: its certificate should exist, or be on its way. */
  want(name: string): void;
  /** The key authorization that answers an ACME HTTP-01 challenge for `token`, while one is open. */
  challengeAnswer(token: string): string | undefined;
  /** Stops timers and file watchers. */
  close(): void;
}

/** A TLS context from PEM text, refused (with a reason) when the text is no certificate or the key is not its own. */
export function loadCertificate(chain: string, key: string): Certificate {
  // The first certificate of a chain is the leaf, which is what X509Certificate reads.
  const leaf = new X509Certificate(chain);
  if (!leaf.checkPrivateKey(createPrivateKey(key))) {
    throw new Error(`the private key does not belong to the certificate for ${leaf.subject}`);
  }
  return {
    context: createSecureContext({ cert: chain, key }),
    chain,
    key,
    notBefore: new Date(leaf.validFrom),
    notAfter: new Date(leaf.validTo),
    names: (leaf.subjectAltName ?? "").split(", ").filter((name) => name.startsWith("DNS:")).map((name) =>
      name.slice(4).toLowerCase()
    ),
  };
}

/** Whether `certificate` covers `host` (exactly, or through a wildcard one label deep). */
export function covers(certificate: Pick<Certificate, "names">, host: string): boolean {
  return certificate.names.some((name) =>
    name === host || (name.startsWith("*.") && host.endsWith(name.slice(1)) &&
      !host.slice(0, -(name.length - 1)).includes("."))
  );
}

/** node:tls's SNI hook over `certificates`: the handshake waits while the context is looked up (or issued). */
export function sniCallback(certificates: Certificates): NonNullable<NodeTlsOptions["SNICallback"]> {
  return (servername, callback) => {
    certificates.contextFor(servername.toLowerCase()).then(
      (context) => callback(null, context),
      (error) => callback(error instanceof Error ? error : new Error(String(error)), undefined),
    );
  };
}
