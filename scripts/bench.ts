/**
 * `deno task bench`: the same workloads, in one run, against
 *   1. the origin directly (the limit),
 *   2. `ssh -R` through a private sshd on loopback (the classic self-hosted tunnel),
 *   3. reverprox (relay + client as real processes),
 *   4. reverprox with the client on the TCP transport (`--transport tcp`, as when UDP is blocked) and on
 *      long-polling (`--transport http`, as when only HTTP requests pass),
 *   5. reverprox over HTTPS (`--tls FILE` with a self-signed wildcard made for the run; wrk and curl
 *      skip verification),
 * then a scale run of idle tunnels. Prints a table, writes `bench/results.json`
 * and `bench/ratios.svg`. Ratios against direct, from the same run, are what
 * compare across runs and machines.
 *
 * Flags: `--seconds N` per wrk run (10), `--mb N` transfer size (100),
 * `--scale 1000,10000` idle tunnel counts (empty to skip), `--no-ssh`.
 * Needs wrk and curl (and openssh-server for row 2): `apt-get install wrk curl openssh-server`.
 * @module
 */
import { Command } from "commander";
import { join } from "node:path";
import http from "node:http";
import https from "node:https";
import WebSocket from "ws";
import {
  Child,
  cpuMs,
  memoryMB,
  Processes,
  ROOT,
  startClient,
  startRelay,
} from "../tests/helpers/processes.ts";
import { selfSigned } from "../tests/helpers/certs.ts";
import { startSshTunnel } from "./bench/ssh.ts";
import { wrk, type WrkResult } from "./bench/wrk.ts";
import { ratioChart } from "./bench/chart.ts";

const flags = new Command("bench")
  .option("--seconds <n>", "duration of each wrk run", Number, 10)
  .option("--mb <n>", "size of the download and upload", Number, 100)
  .option("--big-mb <n>", "size of the long transfer each way (0 skips it)", Number, 2048)
  .option("--scale <counts>", "idle tunnel counts for the scale run, comma-separated", "1000,10000")
  .option("--no-ssh", "skip the ssh -R row")
  .parse(Deno.args, { from: "user" })
  .opts<{ seconds: number; mb: number; bigMb: number; scale: string; ssh: boolean }>();

/** One way to reach the origin. */
interface Target {
  name: string;
  /** Base URL to dial (always 127.0.0.1). */
  url: string;
  /** Host header to send, for reverprox's name routing. */
  host?: string;
  pids: Record<string, number>;
}

interface Row {
  target: string;
  c32: WrkResult;
  c1: WrkResult;
  downloadMBps: number;
  uploadMBps: number;
  wsRttMs: number;
  sseFirstEventMs: number;
  bigDownloadMBps: number;
  bigUploadMBps: number;
  /** CPU time per 1,000 requests of the c32 run, per process (ms): independent of how the cores are shared. */
  cpuMsPer1k: Record<string, number>;
  /** Resident memory now, and the peak over the run (VmHWM), per process. */
  rssMB: Record<string, { now: number; peak: number }>;
}

for (const tool of ["wrk", "curl"]) {
  const found = await new Deno.Command("sh", { args: ["-c", `command -v ${tool}`], stdout: "null" }).output();
  if (!found.success) {
    console.error(`bench: ${tool} is missing; install it with: apt-get install -y ${tool}`);
    Deno.exit(1);
  }
}

await using processes = new Processes();
const origin = processes.add(Child.script("origin", "scripts/bench/origin.ts", []));
const originPort = Number((await origin.waitFor(/^ready port=(\d+)/))[1]);
const targets: Target[] = [{
  name: "direct",
  url: `http://127.0.0.1:${originPort}`,
  pids: { origin: origin.pid },
}];

if (flags.ssh) {
  const ssh = await startSshTunnel(processes, originPort);
  if ("missing" in ssh) console.error(`bench: skipping ssh -R: ${ssh.missing} is missing`);
  else {targets.push({
      name: "ssh -R",
      url: `http://127.0.0.1:${ssh.port}`,
      pids: { sshd: ssh.sshdPid, ssh: ssh.sshPid },
    });}
}

targets.push(await reverprox("reverprox", []));
// What streams that survive the link (on by default) cost: the same without them.
targets.push(await reverprox("reverprox --grace 0", [], ["--grace=0"]));
// One row per fallback transport of the client (`--transport`).
for (const [name, transport] of [["reverprox tcp", "tcp"], ["reverprox long-poll", "http"]]) {
  targets.push(await reverprox(name, [], [`--transport=${transport}`]));
}
const wildcard = await selfSigned(await processes.tempDir(), "wildcard", ["localhost", "*.localhost"]);
targets.push(
  await reverprox("reverprox https", [`--tls=${wildcard.cert}`, `--key=${wildcard.key}`, "--https-port=0"]),
);

/** A relay (with `relayArgs`) and a client (with `clientArgs`) for the origin, as a target. */
async function reverprox(name: string, relayArgs: string[], clientArgs: string[] = []): Promise<Target> {
  const relay = await startRelay(processes, { args: ["--heartbeat=5", "--log-level=warning", ...relayArgs] });
  const client = await startClient(processes, relay, [
    "http",
    String(originPort),
    "--name=bench",
    "--log-level=warning",
    ...clientArgs,
  ]);
  const secure = relay.httpsPort !== undefined;
  return {
    name,
    url: secure ? `https://127.0.0.1:${relay.httpsPort}` : `http://127.0.0.1:${relay.httpPort}`,
    host: new URL(client.urls[0]).host,
    pids: { relay: relay.child.pid, client: client.child.pid },
  };
}

const bytes = flags.mb * 1024 * 1024;
const uploadFile = join(await processes.tempDir(), "upload.bin");
{
  const file = await Deno.open(uploadFile, { write: true, create: true });
  const block = new Uint8Array(1024 * 1024).fill(7);
  for (let i = 0; i < flags.mb; i++) await file.write(block);
  file.close();
}

const bigUploadFile = join(await processes.tempDir(), "big-upload.bin");
if (flags.bigMb) {
  const file = await Deno.open(bigUploadFile, { write: true, create: true });
  await file.truncate(flags.bigMb * 1024 * 1024);
  file.close();
}

const rows: Row[] = [];
for (const target of targets) {
  console.error(`bench: ${target.name} …`);
  const cpuBefore = Object.fromEntries(Object.entries(target.pids).map(([name, pid]) => [name, cpuMs(pid)]));
  const c32 = await wrk(`${target.url}/`, {
    connections: 32,
    threads: 2,
    seconds: flags.seconds,
    host: target.host,
  });
  const requests = c32.requestsPerSecond * flags.seconds;
  const cpuMsPer1k = Object.fromEntries(
    Object.entries(target.pids).map((
      [name, pid],
    ) => [name, (cpuMs(pid) - cpuBefore[name]) / requests * 1000]),
  );
  const c1 = await wrk(`${target.url}/`, {
    connections: 1,
    threads: 1,
    seconds: flags.seconds,
    host: target.host,
  });
  const downloadMBps = await curlSpeed(
    target,
    ["-o", "/dev/null", `${target.url}/download?bytes=${bytes}`],
    "download",
  );
  const uploadMBps = await curlSpeed(target, [
    "-o",
    "/dev/null",
    "-X",
    "POST",
    "-T",
    uploadFile,
    `${target.url}/upload`,
  ], "upload");
  const wsRttMs = await webSocketRtt(target).catch((error) => {
    console.error(`bench: WebSocket via ${target.name} failed: ${error.message}`);
    return NaN;
  });
  const sseFirstEventMs = await sseFirstEvent(target);
  const bigBytes = flags.bigMb * 1024 * 1024;
  const bigDownloadMBps = flags.bigMb
    ? await curlSpeed(target, ["-o", "/dev/null", `${target.url}/download?bytes=${bigBytes}`], "download")
    : NaN;
  const bigUploadMBps = flags.bigMb
    ? await curlSpeed(
      target,
      ["-o", "/dev/null", "-X", "POST", "-T", bigUploadFile, `${target.url}/upload`],
      "upload",
    )
    : NaN;
  const rssMB = Object.fromEntries(Object.entries(target.pids).map(([name, pid]) => [name, memoryMB(pid)]));
  rows.push({
    target: target.name,
    c32,
    c1,
    downloadMBps,
    uploadMBps,
    wsRttMs,
    sseFirstEventMs,
    bigDownloadMBps,
    bigUploadMBps,
    cpuMsPer1k,
    rssMB,
  });
}

const scale = [];
for (const count of flags.scale.split(",").filter(Boolean).map(Number)) {
  console.error(`bench: ${count} idle tunnels …`);
  scale.push(await scaleRun(count));
}

const results = {
  date: new Date().toISOString(),
  machine: `${navigator.hardwareConcurrency} cores, Deno ${Deno.version.deno}`,
  settings: { wrkSeconds: flags.seconds, transferMB: flags.mb },
  rows,
  scale,
};
await Deno.mkdir(join(ROOT, "bench"), { recursive: true });
await Deno.writeTextFile(join(ROOT, "bench/results.json"), JSON.stringify(results, null, 2) + "\n");
await Deno.writeTextFile(join(ROOT, "bench/ratios.svg"), ratioChart(rows, results.date));
console.log(table(rows, scale));
console.log(`\nwrote bench/results.json and bench/ratios.svg`);

/** MB/s that curl reports for one transfer (MB = 2^20 bytes). */
async function curlSpeed(target: Target, args: string[], direction: "download" | "upload"): Promise<number> {
  const headers = target.host ? ["-H", `Host: ${target.host}`] : [];
  // The HTTPS row's certificate is self-signed for the run.
  const insecure = target.url.startsWith("https:") ? ["--insecure"] : [];
  const output = await new Deno.Command("curl", {
    args: ["-s", "--fail", "-w", `%{speed_${direction}}`, ...insecure, ...headers, ...args],
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!output.success) {
    throw new Error(
      `curl ${direction} via ${target.name} failed: ${new TextDecoder().decode(output.stderr)}`,
    );
  }
  return Number(new TextDecoder().decode(output.stdout)) / (1024 * 1024);
}

/** Median round trip of 1,000 small WebSocket echoes, in ms. */
async function webSocketRtt(target: Target): Promise<number> {
  const socket = new WebSocket(`${target.url.replace("http", "ws")}/ws`, {
    headers: target.host ? { host: target.host } : {},
    rejectUnauthorized: false,
  });
  await new Promise((resolve, reject) => {
    socket.once("open", resolve);
    socket.once("error", reject);
  });
  const times: number[] = [];
  for (let i = 0; i < 1000; i++) {
    const started = performance.now();
    socket.send(`ping ${i}`);
    await new Promise((resolve) => socket.once("message", resolve));
    times.push(performance.now() - started);
  }
  socket.close();
  times.sort((a, b) => a - b);
  return times[Math.floor(times.length / 2)];
}

/** Median time from sending a request to reading the first server-sent event, over 20 requests, in ms. */
async function sseFirstEvent(target: Target): Promise<number> {
  const times: number[] = [];
  const url = new URL(`${target.url}/sse`);
  for (let i = 0; i < 20; i++) {
    const started = performance.now();
    await new Promise<void>((resolve, reject) => {
      const request = (url.protocol === "https:" ? https : http).get({
        hostname: url.hostname,
        port: url.port,
        path: url.pathname,
        headers: target.host ? { host: target.host } : {},
        agent: false,
        rejectUnauthorized: false,
      }, (response) => {
        response.once("data", () => {
          times.push(performance.now() - started);
          request.destroy();
          resolve();
        });
      });
      request.on("error", reject);
    });
  }
  times.sort((a, b) => a - b);
  return times[Math.floor(times.length / 2)];
}

/** Registers `count` idle tunnels from a few client processes; relay RSS and time to register. */
async function scaleRun(count: number) {
  await using scaleProcesses = new Processes();
  const scaleRelay = await startRelay(scaleProcesses, { args: ["--log-level=warning"] });
  await new Promise((resolve) => setTimeout(resolve, 500));
  const emptyMB = memoryMB(scaleRelay.child.pid).now;
  const clients = Math.max(1, Math.ceil(count / 1000));
  const started = performance.now();
  const dir = await scaleProcesses.tempDir();
  await Promise.all(Array.from({ length: clients }, async (_, c) => {
    const tunnels = Array.from({ length: Math.ceil(count / clients) }, (_, t) => ({
      name: `scale-${c}-${t}`,
      target: String(originPort),
    }));
    const file = join(dir, `tunnels-${c}.json`);
    await Deno.writeTextFile(file, JSON.stringify({ tunnels }));
    await startClient(scaleProcesses, scaleRelay, ["start", file, "--log-level=warning"], {
      tunnels: tunnels.length,
      label: `scale-client-${c}`,
    });
  }));
  const registerSeconds = (performance.now() - started) / 1000;
  await new Promise((resolve) => setTimeout(resolve, 1000));
  const loadedMB = memoryMB(scaleRelay.child.pid).now;
  return {
    tunnels: count,
    clients,
    registerSeconds,
    relayEmptyMB: emptyMB,
    relayLoadedMB: loadedMB,
    relayDeltaMB: loadedMB - emptyMB,
  };
}

function table(rows: Row[], scaleRows: Awaited<ReturnType<typeof scaleRun>>[]): string {
  const direct = rows[0];
  const ratio = (value: number, base: number) =>
    Number.isFinite(value) && base ? ` (${(value / base).toFixed(2)}x)` : "";
  const lines = [
    "| path | req/s c32 | p50 / p99 c32 (ms) | req/s c1 | p50 / p99 c1 (ms) | download MB/s | upload MB/s | WS echo RTT (ms) | SSE first event (ms) | long download / upload MB/s | CPU ms per 1k req (c32) | RSS now / peak (MB) |",
    "|---|---|---|---|---|---|---|---|---|---|---|---|",
  ];
  for (const row of rows) {
    lines.push(
      `| ${row.target} | ${row.c32.requestsPerSecond.toFixed(0)}${
        ratio(row.c32.requestsPerSecond, direct.c32.requestsPerSecond)
      } | ` +
        `${row.c32.p50Ms.toFixed(2)} / ${row.c32.p99Ms.toFixed(2)} | ` +
        `${row.c1.requestsPerSecond.toFixed(0)}${
          ratio(row.c1.requestsPerSecond, direct.c1.requestsPerSecond)
        } | ` +
        `${row.c1.p50Ms.toFixed(2)} / ${row.c1.p99Ms.toFixed(2)} | ` +
        `${row.downloadMBps.toFixed(0)}${ratio(row.downloadMBps, direct.downloadMBps)} | ` +
        `${row.uploadMBps.toFixed(0)}${ratio(row.uploadMBps, direct.uploadMBps)} | ` +
        `${row.wsRttMs.toFixed(3)} | ${row.sseFirstEventMs.toFixed(2)} | ` +
        `${row.bigDownloadMBps.toFixed(0)} / ${row.bigUploadMBps.toFixed(0)} | ` +
        `${Object.entries(row.cpuMsPer1k).map(([k, v]) => `${k} ${v.toFixed(0)}`).join(", ")} | ` +
        `${Object.entries(row.rssMB).map(([k, v]) => `${k} ${v.now} / ${v.peak}`).join(", ")} |`,
    );
  }
  if (scaleRows.length) {
    lines.push(
      "",
      "| idle tunnels | clients | time to register (s) | relay RSS empty → loaded (MB) |",
      "|---|---|---|---|",
    );
    for (const s of scaleRows) {
      lines.push(
        `| ${s.tunnels} | ${s.clients} | ${
          s.registerSeconds.toFixed(1)
        } | ${s.relayEmptyMB} → ${s.relayLoadedMB} (+${s.relayDeltaMB}) |`,
      );
    }
  }
  return lines.join("\n");
}
