/**
 * The relay's TLS identity for QUIC: a small private CA and a leaf certificate
 * for the relay's domain, made once with `@peculiar/x509` and kept in the state
 * dir. Clients trust the CA (QUIC in Deno trusts only `caCerts`, and a
 * self-signed leaf marked CA:true is refused), pinned by its SHA-256 fingerprint.
 *
 * @example
 * ```ts
 * const identity = await loadOrCreateIdentity("/var/lib/reverprox", "tunnel.example.com");
 * console.log(identity.fingerprint); // 64 hex digits, what clients pin
 * ```
 * @module
 */
import "reflect-metadata";
import * as x509 from "@peculiar/x509";
import { join } from "node:path";
import { pemFingerprint } from "../shared/hash.ts";

/** What the QUIC listener needs, plus the CA that clients trust. */
export interface RelayIdentity {
  /** PEM of the leaf certificate followed by the CA certificate. */
  certChain: string;
  /** PEM (PKCS#8) private key of the leaf. */
  key: string;
  /** PEM of the CA certificate, served to clients for pinning. */
  caCert: string;
  /** SHA-256 of the CA certificate's DER bytes, lowercase hex. */
  fingerprint: string;
  /** True when this call made the files (first run). */
  created: boolean;
}

const CA_FILE = "ca.pem";
const CERT_FILE = "cert.pem";
const KEY_FILE = "key.pem";
const VALIDITY_YEARS = 10;
const KEY_ALGORITHM = { name: "ECDSA", namedCurve: "P-256", hash: "SHA-256" };

/** Reads the identity from `stateDir`, or makes and stores a new one for `domain`. */
export async function loadOrCreateIdentity(
  stateDir: string,
  domain: string,
): Promise<RelayIdentity> {
  const paths = [CA_FILE, CERT_FILE, KEY_FILE].map((f) => join(stateDir, f));
  try {
    const [caCert, leafCert, key] = await Promise.all(paths.map((p) => Deno.readTextFile(p)));
    return {
      certChain: leafCert + caCert,
      key,
      caCert,
      fingerprint: pemFingerprint(caCert),
      created: false,
    };
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  }
  const made = await createIdentity(domain);
  await Deno.mkdir(stateDir, { recursive: true, mode: 0o700 });
  await Deno.writeTextFile(paths[0], made.caCert);
  await Deno.writeTextFile(paths[1], made.leafCert);
  await Deno.writeTextFile(paths[2], made.key, { mode: 0o600 });
  return {
    certChain: made.leafCert + made.caCert,
    key: made.key,
    caCert: made.caCert,
    fingerprint: pemFingerprint(made.caCert),
    created: true,
  };
}

/** Reads a user-supplied certificate chain and key; `caCert` is the chain's last certificate. */
export async function loadIdentityFiles(certFile: string, keyFile: string): Promise<RelayIdentity> {
  const certChain = await Deno.readTextFile(certFile);
  const key = await Deno.readTextFile(keyFile);
  const pems = certChain.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g);
  if (!pems) throw new Error(`${certFile} holds no PEM certificate`);
  const caCert = pems[pems.length - 1] + "\n";
  return { certChain, key, caCert, fingerprint: pemFingerprint(caCert), created: false };
}

async function createIdentity(domain: string) {
  const notBefore = new Date(Date.now() - 60_000);
  const notAfter = new Date(notBefore);
  notAfter.setFullYear(notAfter.getFullYear() + VALIDITY_YEARS);

  const caKeys = await crypto.subtle.generateKey(KEY_ALGORITHM, true, ["sign", "verify"]);
  const ca = await x509.X509CertificateGenerator.createSelfSigned({
    name: `CN=reverprox relay CA for ${domain}`,
    keys: caKeys,
    notBefore,
    notAfter,
    signingAlgorithm: KEY_ALGORITHM,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(
        x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign,
        true,
      ),
      await x509.SubjectKeyIdentifierExtension.create(caKeys.publicKey),
    ],
  });

  const leafKeys = await crypto.subtle.generateKey(KEY_ALGORITHM, true, ["sign", "verify"]);
  const leaf = await x509.X509CertificateGenerator.create({
    subject: `CN=${domain}`,
    issuer: ca.subject,
    publicKey: leafKeys.publicKey,
    signingKey: caKeys.privateKey,
    notBefore,
    notAfter,
    signingAlgorithm: KEY_ALGORITHM,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
      new x509.SubjectAlternativeNameExtension([
        { type: "dns", value: domain },
        { type: "dns", value: `*.${domain}` },
      ]),
      await x509.AuthorityKeyIdentifierExtension.create(ca),
    ],
  });

  const pkcs8 = await crypto.subtle.exportKey("pkcs8", leafKeys.privateKey);
  return {
    caCert: ca.toString("pem") + "\n",
    leafCert: leaf.toString("pem") + "\n",
    key: x509.PemConverter.encode(pkcs8, "PRIVATE KEY") + "\n",
  };
}
