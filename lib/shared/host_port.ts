/**
 * `host:port` as people and URLs write it: IPv6 addresses in brackets.
 *
 * @example
 * ```ts
 * hostPort("127.0.0.1", 4433); // "127.0.0.1:4433"
 * hostPort("::1", 4433);       // "[::1]:4433"
 * ```
 * @module
 */

/** `hostname:port`, with an IPv6 hostname bracketed. */
export function hostPort(hostname: string, port: number): string {
  return hostname.includes(":") ? `[${hostname}]:${port}` : `${hostname}:${port}`;
}
