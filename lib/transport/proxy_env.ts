/**
 * Which HTTP proxy a request to a URL goes through, from the usual variables:
 * `HTTP_PROXY` for `http:` URLs, `HTTPS_PROXY` for `https:` (either spelled
 * in lower case too, lower case winning as curl does), and `NO_PROXY`: a
 * comma-separated list of host names (`example.com` also covers its
 * subdomains, a leading `.` or `*.` the same), `host:port`, or `*` for all.
 *
 * @example
 * ```ts
 * const env = { HTTPS_PROXY: "http://proxy.corp:3128", NO_PROXY: "localhost,.internal" };
 * proxyFor(new URL("https://relay.example.com/"), env)?.host; // "proxy.corp:3128"
 * proxyFor(new URL("https://a.internal/"), env);              // undefined
 * ```
 * @module
 */

/** The proxy for `url` (an `http:` proxy URL), or undefined to go direct. */
export function proxyFor(
  url: URL,
  env: Record<string, string | undefined> = Deno.env.toObject(),
): URL | undefined {
  const scheme = url.protocol.replace(":", "");
  const proxy = env[`${scheme}_proxy`] || env[`${scheme.toUpperCase()}_PROXY`];
  if (!proxy || bypassed(url, env.no_proxy ?? env.NO_PROXY ?? "")) return undefined;
  const variable = `${scheme.toUpperCase()}_PROXY`;
  let parsed: URL;
  try {
    parsed = new URL(proxy.includes("://") ? proxy : `http://${proxy}`);
  } catch {
    throw new Error(`proxy URL ${JSON.stringify(proxy)} is not a URL (${variable})`);
  }
  if (parsed.protocol !== "http:") {
    throw new Error(
      `only http:// proxies are supported, not ${parsed.protocol}// (${variable})`,
    );
  }
  return parsed;
}

function bypassed(url: URL, noProxy: string): boolean {
  const host = url.hostname.replace(/^\[|\]$/g, "").toLowerCase();
  const port = url.port || (url.protocol === "https:" ? "443" : "80");
  return noProxy.split(/[,\s]+/).filter(Boolean).some((entry) => {
    if (entry === "*") return true;
    const [name, entryPort] = entry.toLowerCase().replace(/^\*?\./, "").split(/:(?=\d+$)/);
    if (entryPort && entryPort !== port) return false;
    return host === name || host.endsWith(`.${name}`);
  });
}
