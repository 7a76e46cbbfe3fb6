import assert from "node:assert/strict";
import { proxyFor } from "./proxy.ts";

Deno.test("HTTPS_PROXY wins over HTTP_PROXY; credentials become Basic proxy authorization", () => {
  const env = { HTTPS_PROXY: "http://me:s%40cret@proxy.corp:3128", HTTP_PROXY: "http://other:80" };
  assert.deepEqual(proxyFor("relay.example.com", 4433, env), {
    hostname: "proxy.corp",
    port: 3128,
    authorization: `Basic ${btoa("me:s@cret")}`,
  });
  assert.deepEqual(proxyFor("relay.example.com", 4433, { http_proxy: "proxy:8080" }), {
    hostname: "proxy",
    port: 8080,
    authorization: undefined,
  });
  assert.equal(proxyFor("relay.example.com", 4433, {}), undefined);
});

Deno.test("NO_PROXY: *, exact names, suffixes and ports", () => {
  const proxied = (host: string, port: number, noProxy: string) =>
    proxyFor(host, port, { HTTPS_PROXY: "http://proxy:3128", NO_PROXY: noProxy }) !== undefined;
  assert.equal(proxied("relay.example.com", 4433, "*"), false);
  assert.equal(proxied("relay.example.com", 4433, "localhost, example.com"), false);
  assert.equal(proxied("relay.example.com", 4433, ".example.com"), false);
  assert.equal(proxied("relay.example.com", 4433, "relay.example.com:4433"), false);
  assert.equal(proxied("relay.example.com", 4433, "relay.example.com:443"), true);
  assert.equal(proxied("notexample.com", 4433, "example.com"), true);
  assert.equal(proxied("10.0.0.1", 4433, "10.0.0.2"), true);
});

Deno.test("a proxy URL that is not http:// is refused with its variable named", () => {
  assert.throws(() => proxyFor("relay", 1, { HTTPS_PROXY: "socks5://proxy:1080" }), /only http:\/\/ proxies/);
  assert.throws(() => proxyFor("relay", 1, { HTTPS_PROXY: "http://[bad" }), /HTTPS_PROXY/);
});
