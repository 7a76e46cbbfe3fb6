/**
 * The terminal dashboard as a person sees it: the real client on a real
 * terminal (tmux), in front of a real relay and origin; requests made through
 * the tunnel appear on the screen, the keys pause and resume the tunnel, show
 * the inspector's URL and quit; the screen follows the terminal's size.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { V8_FLAGS } from "../scripts/v8_flags.ts";
import {
  Processes,
  type RelayHandle,
  ROOT,
  startClient,
  startOrigin,
  startRelay,
} from "./helpers/processes.ts";
import { Terminal } from "./helpers/tmux.ts";
import { eventually, visit } from "./helpers/visit.ts";

/** `reverprox <args>` on a terminal of its own, with its own config and state, against `relay`. */
async function clientOnTerminal(
  processes: Processes,
  relay: RelayHandle,
  args: string[],
  size = { columns: 120, rows: 30 },
): Promise<Terminal> {
  const dir = await processes.tempDir();
  const command = [Deno.execPath(), "run", "-A", `--v8-flags=${V8_FLAGS}`, join(ROOT, "client.ts"), ...args];
  return await Terminal.start([...command, `--server=${relay.server}`, "--api-addr=127.0.0.1:0"], {
    ...size,
    env: {
      REVERPROX_CONFIG_DIR: dir,
      REVERPROX_STATE_DIR: dir,
      REVERPROX_FINGERPRINT: relay.fingerprint,
    },
  });
}

/** The screen's rows. */
function rows(screen: string): string[] {
  return screen.replace(/\n$/, "").split("\n");
}

Deno.test("the dashboard shows the tunnel and its requests live, follows resizes, pauses with p, quits with q", async () => {
  await using processes = new Processes();
  const origin = await startOrigin(processes);
  const relay = await startRelay(processes);
  await using terminal = await clientOnTerminal(processes, relay, [String(origin.port), "dash"]);
  const url = `http://dash.localhost:${relay.httpPort}`;
  let screen = await terminal.waitFor(/^ +dash +online +up +0 +0 /m, 30_000);
  assert.match(screen, new RegExp(`^Forwarding +${url} → http://localhost:${origin.port}$`, "m"));
  assert.match(screen, /^Session +online$/m);
  assert.match(screen, /^Relay +127\.0\.0\.1:\d+ over quic$/m);
  assert.match(screen, /^Inspector +http:\/\/127\.0\.0\.1:\d+$/m);

  assert.equal((await visit(`${url}/echo/first?x=1`)).status, 200);
  assert.equal((await visit(`${url}/status/404`)).status, 404);
  screen = await terminal.waitFor(/GET +\/status\/404 +404 Not Found +[\d.]+ m?s +\d+ B/);
  assert.match(screen, /^\d\d:\d\d:\d\d +GET +\/echo\/first\?x=1 +200 OK +[\d.]+ m?s +[\d.]+ k?B$/m);
  assert.match(screen, /^ +dash +online +up +2 +0 +[\d.]+ m?s +[\d.]+ m?s$/m, "2 requests, none open");
  // Newest first, and coloured by status class.
  assert.ok(screen.indexOf("/status/404") < screen.indexOf("/echo/first"));
  const colours = await terminal.screen({ escapes: true });
  assert.ok(colours.includes("\x1b[33m404 Not Found"), colours);
  assert.ok(colours.includes("\x1b[32m200 OK"), colours);

  await terminal.resize(72, 20);
  screen = await terminal.waitFor(/^reverprox \S+ {2,}q quit · i inspector · p pause\/resume$/m);
  const narrow = rows(screen);
  assert.equal(narrow[0].length, 72, "the title line spans the new width");
  assert.ok(narrow.every((row) => row.length <= 72));
  assert.match(screen, /GET +\/status\/404 +404 Not Found/);

  await terminal.keys("p");
  await terminal.waitFor(/^ +dash +paused /m);
  assert.equal((await visit(`${url}/echo/paused`)).status, 503);
  await terminal.keys("p");
  await terminal.waitFor(/^ +dash +online /m);
  await eventually(`${url}/echo/resumed`, 200);

  await terminal.keys("i");
  await terminal.waitFor(/^inspector: http:\/\/127\.0\.0\.1:\d+$/m);

  await terminal.keys("q");
  assert.equal(await terminal.exited(), 0);
  // The terminal is given back: the dashboard's screen is gone.
  assert.doesNotMatch(await terminal.screen(), /Forwarding/);
  // It said goodbye: another client (another install) gets the name at once.
  const next = await startClient(processes, relay, [String(origin.port), "dash"], { label: "next" });
  assert.deepEqual(next.urls, [url]);
});

Deno.test("the dashboard counts open TCP connections, and Ctrl-C quits it", async () => {
  await using processes = new Processes();
  const origin = await startOrigin(processes);
  const relay = await startRelay(processes, { args: ["--tcp-ports=21800-21899"] });
  await using terminal = await clientOnTerminal(processes, relay, ["tcp", String(origin.port)]);
  const [, port] = (await terminal.waitFor(/^ +(\d+) +online +up /m, 30_000)).match(/^ +(\d+) +online/m)!;
  const conns = await Promise.all(
    [0, 1].map(() => Deno.connect({ hostname: "127.0.0.1", port: Number(port) })),
  );
  const counts = (total: number, open: number) =>
    new RegExp(`^ +${port} +online +up +${total} +${open} `, "m");
  await terminal.waitFor(counts(2, 2));
  conns[0].close();
  await terminal.waitFor(counts(2, 1));
  conns[1].close();
  await terminal.waitFor(counts(2, 0));
  await terminal.keys("C-c");
  assert.equal(await terminal.exited(), 0);
});

Deno.test("--log keeps the plain lines on a terminal", async () => {
  await using processes = new Processes();
  const origin = await startOrigin(processes);
  const relay = await startRelay(processes);
  await using terminal = await clientOnTerminal(processes, relay, [String(origin.port), "plain", "--log"]);
  const url = `http://plain.localhost:${relay.httpPort}`;
  await terminal.waitFor(
    new RegExp(`^reverprox: online via .*\\n {2}${url} → http://localhost:${origin.port}$`, "m"),
    30_000,
  );
  await visit(`${url}/echo/logged`).then((response) => response.body?.cancel());
  const screen = await terminal.waitFor(/^\d\d:\d\d:\d\d GET \/echo\/logged 200 \d+ ms$/m);
  assert.doesNotMatch(screen, /Forwarding/);
});
