/**
 * Base64 for binary bodies and messages in JSON (the inspector's API, HAR), on
 * the Web-standard `Uint8Array.prototype.toBase64` and `Uint8Array.fromBase64`.
 *
 * @example
 * ```ts
 * encodeBase64(new Uint8Array([1, 2, 3])); // "AQID"
 * decodeBase64("AQID");                    // Uint8Array [1, 2, 3]
 * ```
 * @module
 */

export function encodeBase64(bytes: Uint8Array): string {
  return bytes.toBase64();
}

export function decodeBase64(text: string): Uint8Array {
  return Uint8Array.fromBase64(text);
}
