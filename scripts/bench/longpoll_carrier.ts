/**
 * The long-polling carrier alone, no TLS or multiplexer over it: a relay process whose carriers echo
 * (`tests/fixtures/longpoll_echo_relay.ts`) and `dialLongPoll` here. Prints MB/s each way for
 * `MB` megabytes echoed (up and down at once), then round trips per second of 1-byte writes.
 * Run: `npx deno run -A scripts/bench/longpoll_carrier.ts [MB=100] [requests=4]`.
 * @module
 */
import { createHash } from "node:crypto";
import { Child, Processes } from "../../tests/helpers/processes.ts";
import { dialLongPoll } from "../../lib/transport/longpoll_client.ts";

const MB = Number(Deno.args[0] ?? 100);
const requests = Number(Deno.args[1] ?? 4);
await using processes = new Processes();
const relay = processes.add(
  Child.script("relay", "tests/fixtures/longpoll_echo_relay.ts", [await processes.tempDir()]),
);
const [, port] = await relay.waitFor(/^ready http=(\d+)/);
const carrier = await dialLongPoll({ url: `http://localhost:${port}`, proxy: null, requests });

const sent = createHash("sha256");
const received = createHash("sha256");
let count = 0;
let echoed = () => {};
let hashing = true;
carrier.on("data", (chunk: Uint8Array) => {
  if (hashing) received.update(chunk);
  count += chunk.length;
  echoed();
});
const started = performance.now();
const chunk = new Uint8Array(256 * 1024);
for (let at = 0; at < MB * 1024 * 1024; at += chunk.length) {
  crypto.getRandomValues(chunk.subarray(0, 65536));
  const piece = chunk.slice();
  sent.update(piece);
  if (!carrier.write(piece)) await new Promise((resolve) => carrier.once("drain", resolve));
}
while (count < MB * 1024 * 1024) await new Promise<void>((resolve) => echoed = resolve);
const seconds = (performance.now() - started) / 1000;
hashing = false;
const same = sent.digest("hex") === received.digest("hex");
console.log(
  `${MB} MB each way in ${seconds.toFixed(1)} s: ${(MB / seconds).toFixed(1)} MB/s each way, ` +
    `${carrier.stats.requests} requests (${
      (carrier.stats.requests / seconds).toFixed(0)
    }/s), checksums equal: ${same}`,
);

const before = carrier.stats.requests;
const pingStart = performance.now();
let trips = 0;
while (performance.now() - pingStart < 5_000) {
  const target = count + 1;
  carrier.write(new Uint8Array([trips & 255]));
  while (count < target) await new Promise<void>((resolve) => echoed = resolve);
  trips++;
}
const pingSeconds = (performance.now() - pingStart) / 1000;
console.log(
  `1-byte round trips: ${(trips / pingSeconds).toFixed(0)}/s, ` +
    `${((carrier.stats.requests - before) / pingSeconds).toFixed(0)} requests/s`,
);
carrier.destroy();
