/**
 * HTTPS at the relay, end to end: a real ACME server (pebble, with challtestsrv as its DNS) on
 * loopback issues the relay's certificates; visitors check them against pebble's root and the name
 * they asked for. Also a wildcard of the user's own (`--tls FILE`) reloaded from disk, the DNS-01
 * hook, and the plain HTTP port's challenges and redirects.
 */
import assert from "node:assert/strict";
import { X509Certificate } from "node:crypto";
import { join } from "node:path";
import tls from "node:tls";
import {
  Child,
  onlineUrls,
  Processes,
  type RelayHandle,
  restartRelay,
  startClient,
  startOrigin,
  startRelay,
} from "./helpers/processes.ts";
import { freePort, type Pebble, startPebble } from "./helpers/pebble.ts";
import { selfSigned } from "./helpers/certs.ts";
import { peerCertificate, visit } from "./helpers/visit.ts";
import { connectWebSocket } from "./helpers/websocket.ts";
import { patternSha256, patternStream, streamSha256 } from "./helpers/pattern.ts";

const DOMAIN = "tunnel.test";

/** A relay for `tunnel.test` with TLS on: HTTPS on a free port, plain HTTP on `httpPort`. */
function startTlsRelay(processes: Processes, httpPort: number, args: string[], stateDir?: string) {
  return startRelay(processes, {
    httpPort,
    stateDir,
    args: [`--domain=${DOMAIN}`, "--https-port=0", ...args],
  });
}

function acmeArgs(pebble: Pebble): string[] {
  return ["--tls=acme", `--acme-directory=${pebble.directory}`, `--acme-ca=${pebble.caFile}`];
}

/** `https://<name>.tunnel.test:<port>`, or the bare domain without a name. */
function httpsUrl(relay: RelayHandle, name?: string): string {
  return `https://${name ? `${name}.` : ""}${DOMAIN}:${relay.httpsPort}`;
}

async function echoHeaders(response: Response): Promise<Map<string, string>> {
  const seen = await response.json() as { headers: [string, string][] };
  return new Map(seen.headers.map(([name, value]) => [name.toLowerCase(), value]));
}

/** What a log line looks like once its output is captured, for waitFor. */
function logged(child: Child, pattern: RegExp, timeoutMs = 30_000) {
  return child.waitFor(pattern, { timeoutMs });
}

Deno.test("ACME: a certificate per tunnel name and for the bare domain, trusted, reused after a restart", async (t) => {
  await using processes = new Processes();
  const httpPort = freePort();
  const pebble = await startPebble(processes, { httpPort });
  const origin = await startOrigin(processes);
  let relay = await startTlsRelay(processes, httpPort, acmeArgs(pebble));
  const api = await startClient(processes, relay, ["http", String(origin.port), "--name=api"]);
  const web = await startClient(processes, relay, ["http", String(origin.port), "--name=web"]);
  const serials = new Map<string, string>();

  await t.step("the public URLs are https", () => {
    assert.equal(api.urls[0], httpsUrl(relay, "api"));
    assert.equal(web.urls[0], httpsUrl(relay, "web"));
  });

  await t.step("visitors get the origin over HTTPS, with X-Forwarded-Proto: https", async () => {
    const response = await visit(`${httpsUrl(relay, "api")}/echo`, { ca: pebble.root });
    assert.equal(response.status, 200);
    assert.equal((await echoHeaders(response)).get("x-forwarded-proto"), "https");
  });

  await t.step("each name and the bare domain get their own certificate from the ACME server", async () => {
    for (const name of ["api", "web", undefined]) {
      const host = name ? `${name}.${DOMAIN}` : DOMAIN;
      const certificate = await peerCertificate(httpsUrl(relay, name), pebble.root);
      assert.equal(certificate.subjectaltname, `DNS:${host}`);
      assert.match(String(certificate.issuer.CN), /^Pebble Intermediate CA/);
      serials.set(host, certificate.serialNumber);
    }
    const page = await visit(`${httpsUrl(relay)}/`, { ca: pebble.root });
    assert.equal(await page.text(), `reverprox relay for *.${DOMAIN}\n`);
    assert.equal(pebble.orders(), 3);
  });

  await t.step("WebSocket over HTTPS", async () => {
    const socket = connectWebSocket(`${httpsUrl(relay, "web")}/ws`, [], { cookie: "visitor=1" }, pebble.root);
    await socket.opened;
    socket.socket.send("over tls");
    assert.equal(String((await socket.next()).data), "over tls");
    socket.socket.close(1000);
    await socket.closed;
  });

  await t.step("server-sent events over HTTPS arrive as the origin writes them", async () => {
    const response = await visit(`${httpsUrl(relay, "web")}/sse?count=3&interval=50`, { ca: pebble.root });
    assert.equal(response.headers.get("content-type"), "text/event-stream");
    const events = (await response.text()).split("\n\n").filter(Boolean);
    assert.equal(events.length, 3);
  });

  await t.step("20 MB bodies stream both ways over HTTPS with equal checksums", async () => {
    const size = 20 * 1024 * 1024;
    const download = await visit(`${httpsUrl(relay, "web")}/download?bytes=${size}`, { ca: pebble.root });
    assert.deepEqual(await streamSha256(download.body!), { sha256: patternSha256(size), bytes: size });
    const upload = await visit(`${httpsUrl(relay, "web")}/echo`, {
      method: "POST",
      body: patternStream(size),
      ca: pebble.root,
    });
    const seen = await upload.json() as { bytes: number; sha256: string };
    assert.deepEqual([seen.bytes, seen.sha256], [size, patternSha256(size)]);
  });

  await t.step("plain HTTP redirects to HTTPS (308), but for ACME challenges", async () => {
    const redirect = await visit(`http://api.${DOMAIN}:${httpPort}/some/path?q=1`, {
      method: "POST",
      body: "x",
    });
    assert.equal(redirect.status, 308);
    assert.equal(redirect.headers.get("location"), `${httpsUrl(relay, "api")}/some/path?q=1`);
    const challenge = await visit(
      `http://api.${DOMAIN}:${httpPort}/.well-known/acme-challenge/no-such-token`,
    );
    assert.equal(challenge.status, 404);
    assert.match(await challenge.text(), /No ACME challenge is open/);
    const stranger = await visit(`http://example.com:${httpPort}/`);
    assert.equal(stranger.status, 421);
  });

  await t.step("a visitor who comes while the name's certificate is being issued waits for it", async () => {
    // A stopped pebble holds the order: the visitor's handshake has to wait until it is let go.
    pebble.child.kill("SIGSTOP");
    try {
      await startClient(processes, relay, ["http", String(origin.port), "--name=late"]);
      const started = Date.now();
      const answer = visit(`${httpsUrl(relay, "late")}/echo`, { ca: pebble.root });
      await new Promise((resolve) => setTimeout(resolve, 1_000));
      pebble.child.kill("SIGCONT");
      assert.equal((await answer).status, 200);
      assert.ok(Date.now() - started >= 1_000, "the handshake did not wait for the certificate");
    } finally {
      pebble.child.kill("SIGCONT");
    }
  });

  await t.step("a failed order is logged with the ACME server's reason and retried later", async () => {
    // Pebble is told the name lives at 127.0.0.2, where nothing listens.
    const added = await fetch(`${pebble.management}/add-a`, {
      method: "POST",
      body: JSON.stringify({ host: `broken.${DOMAIN}.`, addresses: ["127.0.0.2"] }),
    });
    assert.equal(added.status, 200);
    const broken = await startClient(processes, relay, ["http", String(origin.port), "--name=broken"]);
    // The reason is pebble's own: `… dial tcp 127.0.0.2:…: connect: connection refused`.
    await logged(
      relay.child,
      /no certificate for broken\.tunnel\.test \(attempt 1\): .*refused.*; next try in 60 s/,
    );
    // Gone before the restart below, which would order its certificate again.
    await broken.child.stop();
  });

  await t.step("a restart serves the stored certificates and orders nothing", async () => {
    const ordersBefore = pebble.orders();
    const before = [api.child.lines.length, web.child.lines.length];
    await relay.child.stop();
    const again = [`--domain=${DOMAIN}`, `--https-port=${relay.httpsPort}`, ...acmeArgs(pebble)];
    relay = await restartRelay(processes, relay, again);
    await logged(relay.child, /4 stored certificates loaded/);
    await onlineUrls(api.child, 1, before[0]);
    await onlineUrls(web.child, 1, before[1]);
    for (const host of [DOMAIN, `api.${DOMAIN}`, `web.${DOMAIN}`]) {
      const name = host === DOMAIN ? undefined : host.split(".")[0];
      const certificate = await peerCertificate(httpsUrl(relay, name), pebble.root);
      assert.equal(certificate.serialNumber, serials.get(host), `${host} was issued anew`);
    }
    assert.equal(pebble.orders(), ordersBefore);
    assert.equal((await visit(`${httpsUrl(relay, "api")}/echo`, { ca: pebble.root })).status, 200);
  });
});

Deno.test("ACME: a certificate near its end is renewed; past the weekly limit new names wait, renewals go on", async (t) => {
  await using processes = new Processes();
  const httpPort = freePort();
  // 15 s certificates: renewed with a third of that left, 10 s after they are issued.
  const pebble = await startPebble(processes, { httpPort, validitySeconds: 15 });
  const origin = await startOrigin(processes);
  const relay = await startTlsRelay(processes, httpPort, [...acmeArgs(pebble), "--acme-weekly-limit=2"]);
  await startClient(processes, relay, ["http", String(origin.port), "--name=api"]);

  await t.step("renewed before it runs out, and the new one served at once", async () => {
    const first = await peerCertificate(httpsUrl(relay, "api"), pebble.root);
    await logged(relay.child, /certificate for \[ "api\.tunnel\.test" \] renewed/);
    const second = await peerCertificate(httpsUrl(relay, "api"), pebble.root);
    assert.notEqual(second.serialNumber, first.serialNumber);
    assert.ok(Date.parse(second.valid_to) > Date.parse(first.valid_to));
  });

  await t.step("a new name past the weekly limit is refused with advice; nothing is ordered", async () => {
    await startClient(processes, relay, ["http", String(origin.port), "--name=more"]);
    await logged(
      relay.child,
      /no certificate for more\.tunnel\.test \(attempt 1\): 2 new certificates in seven days.*--acme-dns-hook/,
    );
    assert.ok(!relay.child.lines.some((line) => line.includes('ordering a certificate for [ "more.')));
    // Its visitors get the bare domain's certificate, which does not name them.
    await assert.rejects(
      peerCertificate(httpsUrl(relay, "more"), pebble.root),
      (error: NodeJS.ErrnoException) => error.code === "ERR_TLS_CERT_ALTNAME_INVALID",
    );
  });
});

Deno.test("--tls FILE --key FILE: a wildcard of one's own serves every name and is reloaded when it changes", async (t) => {
  await using processes = new Processes();
  const dir = await processes.tempDir();
  const names = [DOMAIN, `*.${DOMAIN}`];
  const first = await selfSigned(dir, "wildcard", names);
  const origin = await startOrigin(processes);
  const relay = await startTlsRelay(processes, 0, [`--tls=${first.cert}`, `--key=${first.key}`]);
  await startClient(processes, relay, ["http", String(origin.port), "--name=api"]);
  const firstPem = await Deno.readTextFile(first.cert);

  await t.step("every name and the bare domain are served with it", async () => {
    for (const name of ["api", undefined]) {
      const certificate = await peerCertificate(httpsUrl(relay, name), firstPem);
      assert.equal(certificate.fingerprint256, new X509Certificate(firstPem).fingerprint256);
    }
    assert.equal((await visit(`${httpsUrl(relay, "api")}/echo`, { ca: firstPem })).status, 200);
  });

  await t.step("a renewed pair written over the files is served without a restart", async () => {
    const next = await selfSigned(await processes.tempDir(), "wildcard", names);
    // As certbot and editors do: new files renamed over the old, the key first.
    await Deno.rename(next.key, first.key);
    await Deno.rename(next.cert, first.cert);
    const nextPem = await Deno.readTextFile(first.cert);
    await logged(relay.child, /reloaded .*wildcard\.pem/, 5_000);
    const certificate = await peerCertificate(httpsUrl(relay, "api"), nextPem);
    assert.equal(certificate.fingerprint256, new X509Certificate(nextPem).fingerprint256);
    assert.equal((await visit(`${httpsUrl(relay, "api")}/echo`, { ca: nextPem })).status, 200);
  });

  await t.step("a certificate whose key is not beside it yet keeps the current one in service", async () => {
    const serving = await Deno.readTextFile(first.cert);
    const stray = await selfSigned(await processes.tempDir(), "wildcard", names);
    await Deno.rename(stray.cert, first.cert);
    await logged(relay.child, /wildcard\.pem changed but does not load .*private key does not belong/, 5_000);
    const certificate = await peerCertificate(httpsUrl(relay, "api"), serving);
    assert.equal(certificate.fingerprint256, new X509Certificate(serving).fingerprint256);
  });

  await t.step("plain HTTP redirects to the HTTPS port", async () => {
    const redirect = await visit(`http://api.${DOMAIN}:${relay.httpPort}/x`);
    assert.equal(redirect.status, 308);
    assert.equal(redirect.headers.get("location"), `${httpsUrl(relay, "api")}/x`);
  });
});

Deno.test("ACME over DNS-01: the hook sets and clears the TXT records, and one wildcard serves every name", async (t) => {
  await using processes = new Processes();
  const httpPort = freePort();
  const pebble = await startPebble(processes, { httpPort });
  const dir = await processes.tempDir();
  const calls = join(dir, "hook-calls");
  const hook = join(dir, "dns-hook.sh");
  // The hook an operator writes for their DNS provider; here, challtestsrv's management API. Its clear takes
  // every value at the name, as many providers' APIs do, and its second set returns 2 s late (a slow DNS API):
  // the first proof is checked meanwhile, and clearing right after it would take the second's value away.
  await Deno.writeTextFile(
    hook,
    `#!/bin/sh
set -eu
echo "$1 $2" >> '${calls}'
case "$1" in
  set) printf '{"host": "%s.", "value": "%s"}' "$2" "$3" | curl -sf --data-binary @- '${pebble.management}/set-txt'
    if [ -e '${calls}.once' ]; then sleep 2; else touch '${calls}.once'; fi ;;
  clear) printf '{"host": "%s."}' "$2" | curl -sf --data-binary @- '${pebble.management}/clear-txt' ;;
esac
`,
    { mode: 0o755 },
  );
  const origin = await startOrigin(processes);
  const relay = await startTlsRelay(processes, httpPort, [...acmeArgs(pebble), `--acme-dns-hook=${hook}`]);
  await startClient(processes, relay, ["http", String(origin.port), "--name=api"]);

  await t.step("one wildcard for the domain and every name, in one order", async () => {
    await logged(relay.child, /certificate for \[ "tunnel\.test", "\*\.tunnel\.test" \] issued/);
    for (const name of ["api", "other", undefined]) {
      const certificate = await peerCertificate(httpsUrl(relay, name), pebble.root);
      assert.deepEqual(
        certificate.subjectaltname?.split(", ").sort(),
        [`DNS:*.${DOMAIN}`, `DNS:${DOMAIN}`],
      );
    }
    assert.equal((await visit(`${httpsUrl(relay, "api")}/echo`, { ca: pebble.root })).status, 200);
    assert.equal(pebble.orders(), 1);
  });

  await t.step("the TXT records were set for the order and are cleared after it", async () => {
    const lines = (await Deno.readTextFile(calls)).trim().split("\n").sort();
    const fqdn = `_acme-challenge.${DOMAIN}`;
    assert.deepEqual(lines, [`clear ${fqdn}`, `clear ${fqdn}`, `set ${fqdn}`, `set ${fqdn}`]);
    const left = await Deno.resolveDns(fqdn, "TXT", {
      nameServer: { ipAddr: "127.0.0.1", port: pebble.dnsPort },
    })
      .catch(() => []);
    assert.deepEqual(left, []);
  });
});

Deno.test("the HTTPS listener keeps the public side's protections: connection caps, silent and slow visitors", async (t) => {
  await using processes = new Processes();
  const dir = await processes.tempDir();
  const wildcard = await selfSigned(dir, "wildcard", [DOMAIN, `*.${DOMAIN}`]);
  const ca = await Deno.readTextFile(wildcard.cert);
  const relay = await startTlsRelay(processes, 0, [
    `--tls=${wildcard.cert}`,
    `--key=${wildcard.key}`,
    "--header-timeout=1",
    "--max-conns-per-ip=3",
  ]);

  await t.step(
    "past --max-conns-per-ip a connection is closed at once; silent ones once the handshake times out",
    async () => {
      const started = Date.now();
      const conns = await Promise.all(
        Array.from({ length: 5 }, () => Deno.connect({ hostname: "127.0.0.1", port: relay.httpsPort! })),
      );
      const closedAfter = await Promise.all(conns.map(async (conn) => {
        // Nothing is sent, so nothing comes back: a read ends when the relay closes the connection.
        await conn.read(new Uint8Array(16)).catch(() => null);
        conn.close();
        return Date.now() - started;
      }));
      closedAfter.sort((a, b) => a - b);
      assert.ok(closedAfter[1] < 500, `the two over the cap were kept: ${closedAfter}`);
      assert.ok(closedAfter[2] >= 900 && closedAfter[4] < 4_000, `silent handshakes: ${closedAfter}`);
    },
  );

  await t.step("a request head that does not arrive in time gets 408 over TLS", async () => {
    const started = Date.now();
    const answer = await new Promise<string>((resolve, reject) => {
      const socket = tls.connect({
        host: "127.0.0.1",
        port: relay.httpsPort,
        servername: `api.${DOMAIN}`,
        ca,
      });
      let text = "";
      socket.on("secureConnect", () => socket.write(`GET / HTTP/1.1\r\nHost: api.${DOMAIN}\r\n`));
      socket.on("data", (chunk) => text += chunk);
      socket.on("close", () => resolve(text));
      socket.on("error", reject);
    });
    assert.match(answer, /^HTTP\/1\.1 408 /);
    assert.ok(Date.now() - started < 4_000);
  });
});
