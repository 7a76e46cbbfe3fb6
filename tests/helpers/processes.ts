/**
 * Starts the real programs for end-to-end tests: the relay (`server.ts`), the
 * client (`client.ts`) and the test origin, each as its own `deno` process on
 * loopback, and always stops them. Every process gets a private config/state
 * dir, so tests never touch the user's files or each other's.
 * @module
 */
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { V8_FLAGS } from "../../scripts/v8_flags.ts";

export const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const STOP_TIMEOUT_MS = 5_000;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * `env` without the proxy variables: the machine's proxy (a CI runner's, for its package registries) must
 * not carry a test's traffic to loopback or its own namespaces; a test that wants a proxy sets one.
 */
export function withoutProxies(env: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.entries(env).filter(([name]) => !/^(https?|all|no)_proxy$/i.test(name)));
}

/** A running child process whose output lines are kept for assertions and failure reports. */
export class Child {
  readonly lines: string[] = [];
  readonly status: Promise<Deno.CommandStatus>;
  #process: Deno.ChildProcess;
  #pumps: Promise<void>[];

  /**
   * Runs one of this repository's scripts with `deno run -A`; with `fileLimit`, under that open-file
   * limit (`ulimit -n`, set by a shell that then becomes the script); with `netns`, in that network
   * namespace (`ip netns exec`, which becomes the script).
   */
  static script(
    label: string,
    script: string,
    args: string[],
    env: Record<string, string> = {},
    options: { fileLimit?: number; netns?: string } = {},
  ): Child {
    const deno = [Deno.execPath(), "run", "-A", `--v8-flags=${V8_FLAGS}`, join(ROOT, script), ...args];
    const command = options.netns ? ["ip", "netns", "exec", options.netns, ...deno] : deno;
    if (options.fileLimit === undefined) return new Child(label, command[0], command.slice(1), env);
    return new Child(
      label,
      "bash",
      ["-c", `ulimit -n ${options.fileLimit} && exec "$@"`, "bash", ...command],
      env,
    );
  }

  constructor(readonly label: string, command: string, args: string[], env: Record<string, string> = {}) {
    this.#process = new Deno.Command(command, {
      args,
      cwd: ROOT,
      env: { ...withoutProxies(Deno.env.toObject()), ...env },
      clearEnv: true,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    this.#pumps = [this.#pump(this.#process.stdout), this.#pump(this.#process.stderr)];
    this.status = this.#process.status;
  }

  get pid(): number {
    return this.#process.pid;
  }

  /** Waits for an output line at index `from` or later matching `pattern`; returns the match and its index. */
  async waitFor(
    pattern: RegExp,
    options: { from?: number; timeoutMs?: number } = {},
  ): Promise<RegExpMatchArray & { line: number }> {
    const deadline = Date.now() + (options.timeoutMs ?? 15_000);
    let exited = false;
    this.status.then(() => exited = true);
    for (let seen = options.from ?? 0;; await sleep(50)) {
      for (; seen < this.lines.length; seen++) {
        const match = this.lines[seen].match(pattern);
        if (match) return Object.assign(match, { line: seen });
      }
      if (exited) {
        await Promise.all(this.#pumps);
        if (seen === this.lines.length) {
          throw new Error(`${this.label} exited before printing ${pattern}\n${this.output()}`);
        }
      } else if (Date.now() > deadline) {
        throw new Error(`${this.label} did not print ${pattern}\n${this.output()}`);
      }
    }
  }

  output(): string {
    return this.lines.map((line) => `  [${this.label}] ${line}`).join("\n");
  }

  kill(signal: Deno.Signal): void {
    try {
      this.#process.kill(signal);
    } catch {
      // Already gone.
    }
  }

  /** Waits for the process to exit by itself, and for its output to be read. */
  async done(): Promise<Deno.CommandStatus> {
    const status = await this.status;
    await Promise.all(this.#pumps);
    return status;
  }

  /** SIGTERM, then SIGKILL after a grace time; resolves once the process and its pipes are done. */
  async stop(): Promise<Deno.CommandStatus> {
    this.kill("SIGTERM");
    const timer = setTimeout(() => this.kill("SIGKILL"), STOP_TIMEOUT_MS);
    const status = await this.status;
    clearTimeout(timer);
    await Promise.all(this.#pumps);
    return status;
  }

  async #pump(stream: ReadableStream<Uint8Array>) {
    let partial = "";
    for await (const text of stream.pipeThrough(new TextDecoderStream())) {
      const parts = (partial + text).split("\n");
      partial = parts.pop()!;
      this.lines.push(...parts);
    }
    if (partial) this.lines.push(partial);
  }
}

/** Stops everything registered with it, in reverse order; use with `await using`. */
export class Processes implements AsyncDisposable {
  #children: Child[] = [];
  #dirs: string[] = [];
  #deferred: (() => Promise<void>)[] = [];

  add<T extends Child>(child: T): T {
    this.#children.push(child);
    return child;
  }

  /** Runs `cleanup` when the test ends, before the children are stopped (say, a daemon a CLI started). */
  defer(cleanup: () => Promise<void>): void {
    this.#deferred.push(cleanup);
  }

  async tempDir(): Promise<string> {
    const dir = await Deno.makeTempDir({ prefix: "reverprox-test-" });
    this.#dirs.push(dir);
    return dir;
  }

  /** Every child's output, for failure messages. */
  output(): string {
    return this.#children.map((child) => child.output()).join("\n");
  }

  async [Symbol.asyncDispose]() {
    for (const cleanup of this.#deferred.reverse()) await cleanup();
    for (const child of this.#children.reverse()) await child.stop();
    for (const dir of this.#dirs) await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

export interface RelayHandle {
  child: Child;
  httpPort: number;
  /** With `--tls` on. */
  httpsPort?: number;
  quicPort: number;
  fingerprint: string;
  stateDir: string;
  server: string;
}

/** Starts `server.ts` on loopback (free ports unless given) and waits for its ready line. */
export async function startRelay(
  processes: Processes,
  options: {
    stateDir?: string;
    httpPort?: number;
    quicPort?: number;
    args?: string[];
    fileLimit?: number;
    /** A network namespace to run in, and the address to bind there (127.0.0.1 by default). */
    netns?: { name: string; address: string };
  } = {},
): Promise<RelayHandle> {
  const stateDir = options.stateDir ?? await processes.tempDir();
  const hostname = options.netns?.address ?? "127.0.0.1";
  const child = processes.add(
    Child.script(
      "relay",
      "server.ts",
      [
        `--hostname=${hostname}`,
        `--http-port=${options.httpPort ?? 0}`,
        `--quic-port=${options.quicPort ?? 0}`,
        `--state-dir=${stateDir}`,
        "--heartbeat=1",
        ...(options.args ?? []),
      ],
      {},
      { fileLimit: options.fileLimit, netns: options.netns?.name },
    ),
  );
  const [, http, quic, fingerprint, https] = await child.waitFor(
    /^ready http=(\d+) quic=(\d+) fingerprint=(\w+)(?: https=(\d+))?/,
  );
  return {
    child,
    httpPort: Number(http),
    httpsPort: https === undefined ? undefined : Number(https),
    quicPort: Number(quic),
    fingerprint,
    stateDir,
    server: `quic://${hostname}:${quic}`,
  };
}

export interface ClientHandle {
  child: Child;
  /** Public URLs the client printed, in order. */
  urls: string[];
  configDir: string;
}

/** Starts `client.ts` against `relay` with its own config dir, and waits until it is online. */
export async function startClient(
  processes: Processes,
  relay: RelayHandle,
  args: string[],
  options: ClientOptions & { tunnels?: number } = {},
): Promise<ClientHandle> {
  const { child, configDir } = await spawnClient(processes, relay, args, options);
  return { child, configDir, urls: await onlineUrls(child, options.tunnels ?? 1) };
}

interface ClientOptions {
  /** Its own config dir (a new temp dir by default). */
  configDir?: string;
  env?: Record<string, string>;
  label?: string;
}

/** Starts a client for `relay` without waiting for it to come online. */
export async function spawnClient(
  processes: Processes,
  relay: RelayHandle,
  args: string[],
  options: ClientOptions = {},
): Promise<{ child: Child; configDir: string }> {
  const configDir = options.configDir ?? await processes.tempDir();
  const child = processes.add(
    Child.script(options.label ?? "client", "client.ts", [...args, `--server=${relay.server}`], {
      REVERPROX_CONFIG_DIR: configDir,
      // Each client its own agent: state beside its config, its control API on a free port.
      REVERPROX_STATE_DIR: configDir,
      REVERPROX_API_ADDR: "127.0.0.1:0",
      ...options.env,
    }),
  );
  return { child, configDir };
}

/** Starts a client the relay must refuse: it has to exit with code 1 after printing `pattern`. */
export async function refusedClient(
  processes: Processes,
  relay: RelayHandle,
  args: string[],
  pattern: RegExp,
  options: ClientOptions = {},
): Promise<void> {
  const { child } = await spawnClient(processes, relay, args, options);
  // The message first: waitFor is bounded in time, while a client that was let in never exits.
  await child.waitFor(pattern);
  const { code } = await child.status;
  if (code !== 1) throw new Error(`the client exited with ${code}, not 1\n${child.output()}`);
}

/** Waits for an "online" line at or after line `from` and returns the tunnel URLs printed under it. */
export async function onlineUrls(child: Child, tunnels: number, from = 0): Promise<string[]> {
  const online = await child.waitFor(/^reverprox: online/, { from, timeoutMs: 30_000 });
  const urls: string[] = [];
  for (let line = online.line + 1; urls.length < tunnels;) {
    const found = await child.waitFor(/^\s+(\w+:\/\/\S+) →/, { from: line });
    urls.push(found[1]);
    line = found.line + 1;
  }
  return urls;
}

/** Starts the test origin and returns its port. */
export async function startOrigin(
  processes: Processes,
  port = 0,
): Promise<{ child: Child; port: number }> {
  const child = processes.add(Child.script("origin", "tests/fixtures/origin.ts", [String(port)]));
  const [, bound] = await child.waitFor(/^ready port=(\d+)/);
  return { child, port: Number(bound) };
}

/** Starts a relay again on `relay`'s state dir and ports, after it was stopped or killed. */
export function restartRelay(
  processes: Processes,
  relay: RelayHandle,
  args: string[] = [],
): Promise<RelayHandle> {
  return startRelay(processes, {
    stateDir: relay.stateDir,
    httpPort: relay.httpPort,
    quicPort: relay.quicPort,
    args,
  });
}

/** Resident memory of a process in MB, now (VmRSS) and at its peak (VmHWM); NaN once it is gone. */
export function memoryMB(pid: number): { now: number; peak: number } {
  let status = "";
  try {
    status = Deno.readTextFileSync(`/proc/${pid}/status`);
  } catch {
    // The process has exited.
  }
  const mb = (field: string) => {
    const match = status.match(new RegExp(`${field}:\\s+(\\d+) kB`));
    return match ? Math.round(Number(match[1]) / 1024) : NaN;
  };
  return { now: mb("VmRSS"), peak: mb("VmHWM") };
}

/** Clock ticks per second in /proc/<pid>/stat (USER_HZ, 100 on Linux everywhere we run). */
const CLOCK_TICKS = 100;

/** CPU time a process has used so far, user plus system, in ms; NaN once it is gone. */
export function cpuMs(pid: number): number {
  let stat: string;
  try {
    stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
  } catch {
    // The process has exited.
    return NaN;
  }
  // Fields after the command name (which may hold spaces, in parentheses): utime is the 12th, stime the 13th.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) * 1000 / CLOCK_TICKS;
}
