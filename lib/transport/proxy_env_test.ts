import assert from "node:assert/strict";
import { proxyFor } from "./proxy_env.ts";

const env = {
  HTTP_PROXY: "http://proxy.corp:3128",
  https_proxy: "proxy.corp:8443",
  NO_PROXY: "localhost, .internal,example.org:8080",
};

Deno.test("proxyFor picks the proxy by scheme, in either case, with or without a scheme", () => {
  assert.equal(proxyFor(new URL("http://relay.example.com/"), env)?.href, "http://proxy.corp:3128/");
  assert.equal(proxyFor(new URL("https://relay.example.com/"), env)?.href, "http://proxy.corp:8443/");
  assert.equal(proxyFor(new URL("http://relay.example.com/"), {}), undefined);
});

Deno.test("NO_PROXY skips names, their subdomains, a port, or everything", () => {
  assert.equal(proxyFor(new URL("http://localhost:8080/"), env), undefined);
  assert.equal(proxyFor(new URL("http://a.b.internal/"), env), undefined);
  assert.equal(proxyFor(new URL("http://example.org:8080/"), env), undefined);
  assert.ok(proxyFor(new URL("http://example.org:9090/"), env), "another port still goes through the proxy");
  assert.ok(proxyFor(new URL("http://notinternal/"), env), "a suffix is matched at a dot only");
  assert.equal(proxyFor(new URL("http://anything/"), { ...env, NO_PROXY: "*" }), undefined);
});

Deno.test("a proxy that is not http:// is refused with its variable named", () => {
  assert.throws(() => proxyFor(new URL("http://x/"), { HTTP_PROXY: "socks5://p:1080" }), /HTTP_PROXY/);
});
