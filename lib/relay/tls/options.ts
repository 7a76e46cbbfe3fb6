/**
 * How the relay serves HTTPS: not at all (`tls: "off"`, plain HTTP as before), with certificates from an
 * ACME server (`"acme"`: one per tunnel name over HTTP-01, or one wildcard over DNS-01 when a DNS hook is
 * given), or with a certificate chain file of the user's own (typically a wildcard), reloaded when it
 * changes.
 *
 * @example
 * ```ts
 * const options: TlsOptions = { ...DEFAULT_TLS_OPTIONS, tls: "acme", acmeEmail: "ops@example.com" };
 * tlsMode(options); // "acme"
 * ```
 * @module
 */

export const LETS_ENCRYPT = "https://acme-v02.api.letsencrypt.org/directory";
export const LETS_ENCRYPT_STAGING = "https://acme-staging-v02.api.letsencrypt.org/directory";

export interface TlsOptions {
  /** `off`, `acme`, or the path of a PEM certificate chain (its key in `tlsKey`). */
  tls: string;
  /** PEM private key of the `tls` chain file. */
  tlsKey?: string;
  /** Public HTTPS port when TLS is on (the HTTP port then answers ACME challenges and redirects); 0 picks one. */
  httpsPort: number;
  /** The ACME server's directory URL. */
  acmeDirectory: string;
  /** Use Let's Encrypt's staging directory (untrusted certificates, generous limits) instead. */
  acmeStaging: boolean;
  /** Contact address for the ACME account (expiry and policy mail). */
  acmeEmail?: string;
  /** PEM file of a CA to trust for the ACME server's own HTTPS (a private ACME server). */
  acmeCa?: string;
  /** Script called `SCRIPT set|clear <fqdn> <value>` for DNS-01: the relay then gets one wildcard certificate. */
  acmeDnsHook?: string;
  /** New certificates (not renewals) per week the relay may ask for; Let's Encrypt allows 50 per registered domain. */
  acmeWeeklyLimit: number;
  /** Where ACME keeps its account key, certificates and issuance count (the relay's state dir). */
  stateDir?: string;
}

export const DEFAULT_TLS_OPTIONS: TlsOptions = {
  tls: "off",
  httpsPort: 443,
  acmeDirectory: LETS_ENCRYPT,
  acmeStaging: false,
  acmeWeeklyLimit: 50,
};

/** TLS cannot start as asked: a missing key, a certificate that does not load, conflicting flags. */
export class TlsSetupError extends Error {
  override name = "TlsSetupError";
}

/** Which way `options` serves HTTPS. */
export function tlsMode(options: Pick<TlsOptions, "tls">): "off" | "acme" | "files" {
  return options.tls === "off" || options.tls === "acme" ? options.tls : "files";
}

/** The directory URL in force: `--acme-staging` wins over the default, and must not meet another URL. */
export function acmeDirectory(options: Pick<TlsOptions, "acmeDirectory" | "acmeStaging">): string {
  if (!options.acmeStaging) return options.acmeDirectory;
  if (options.acmeDirectory !== LETS_ENCRYPT) {
    throw new TlsSetupError(
      "--acme-staging is Let's Encrypt's staging directory: leave out --acme-directory",
    );
  }
  return LETS_ENCRYPT_STAGING;
}
