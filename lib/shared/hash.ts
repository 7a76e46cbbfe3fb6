/**
 * SHA-256 for both sides, on `node:crypto`: token hashes, password checks at
 * the relay, and certificate fingerprints, which the agent compares without
 * loading an X.509 library.
 *
 * @example
 * ```ts
 * sha256Hex("s3cret");                       // 64 lowercase hex digits
 * normalizeFingerprint("AB:CD");             // "abcd"
 * ```
 * @module
 */
import { createHash, X509Certificate } from "node:crypto";

/** SHA-256 of a UTF-8 string or of bytes, lowercase hex. */
export function sha256Hex(data: string | Uint8Array): string {
  return createHash("sha256").update(data).digest("hex");
}

/** SHA-256 of the first certificate in a PEM text (its DER bytes), lowercase hex. */
export function pemFingerprint(pem: string): string {
  return sha256Hex(new X509Certificate(pem).raw);
}

/** Lowercase hex without separators, so `AB:CD:…` and `abcd…` compare equal. */
export function normalizeFingerprint(text: string): string {
  return text.replace(/^sha256:/i, "").replace(/[:\s]/g, "").toLowerCase();
}
