/**
 * A program on a real terminal for tests of terminal screens: tmux runs it in
 * a detached session on a private server (its own socket, so tests never touch
 * the user's tmux or each other's), keys are typed with `send-keys`, the
 * screen is read with `capture-pane`, and the server is killed at the end.
 * @module
 */
import { ROOT, withoutProxies } from "./processes.ts";

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** One tmux session running one command; use with `await using`. */
export class Terminal implements AsyncDisposable {
  readonly #socket = `reverprox-test-${crypto.randomUUID()}`;

  private constructor(private readonly statusFile: string) {}

  /** Runs `command` on a `columns`×`rows` terminal with `env` added; the pane stays once it exits. */
  static async start(
    command: string[],
    options: { env?: Record<string, string>; columns: number; rows: number },
  ): Promise<Terminal> {
    const terminal = new Terminal(await Deno.makeTempFile({ prefix: "reverprox-exit-" }));
    const env = Object.entries(options.env ?? {}).flatMap(([name, value]) => ["-e", `${name}=${value}`]);
    // A shell writes the exit status to a file: tmux sometimes marks a pane dead without ever reporting
    // its status.
    const reported = ["sh", "-c", `"$@"; echo $? > '${terminal.statusFile}'`, "sh", ...command];
    // remain-on-exit, set in the same tmux call, keeps the pane (and its exit status) once the command ends.
    await terminal.tmux(
      "new-session",
      "-d",
      "-x",
      String(options.columns),
      "-y",
      String(options.rows),
      "-c",
      ROOT,
      ...env,
      ...reported,
      ";",
      "set-option",
      "-g",
      "remain-on-exit",
      "on",
    );
    return terminal;
  }

  /** The screen as text, one string per row (trailing blanks trimmed); with `escapes`, colours kept. */
  async screen(options: { escapes?: boolean } = {}): Promise<string> {
    return await this.tmux("capture-pane", "-p", ...(options.escapes ? ["-e"] : []));
  }

  /** Waits until the screen matches `pattern`; returns the screen. */
  async waitFor(pattern: RegExp, timeoutMs = 15_000): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    for (;; await sleep(100)) {
      const screen = await this.screen();
      if (pattern.test(screen)) return screen;
      if (Date.now() > deadline) throw new Error(`the screen did not show ${pattern}:\n${screen}`);
    }
  }

  /** Types `keys` (tmux key names: `q`, `C-c`, `Tab`). */
  async keys(...keys: string[]): Promise<void> {
    await this.tmux("send-keys", ...keys);
  }

  async resize(columns: number, rows: number): Promise<void> {
    await this.tmux("resize-window", "-x", String(columns), "-y", String(rows));
  }

  /** Waits for the command to exit; its exit status (128 + n when signal n killed it). */
  async exited(timeoutMs = 15_000): Promise<number> {
    const deadline = Date.now() + timeoutMs;
    for (;; await sleep(100)) {
      const status = (await Deno.readTextFile(this.statusFile)).trim();
      if (status !== "") return Number(status);
      if (Date.now() > deadline) throw new Error(`the program did not exit:\n${await this.screen()}`);
    }
  }

  async [Symbol.asyncDispose]() {
    await this.tmux("kill-server").catch(() => {
      // The server is gone already (it had nothing left to run).
    });
    await Deno.remove(this.statusFile);
  }

  private async tmux(...args: string[]): Promise<string> {
    // The server it starts passes its environment to the program: without the machine's proxy variables.
    const output = await new Deno.Command("tmux", {
      args: ["-L", this.#socket, ...args],
      env: withoutProxies(Deno.env.toObject()),
      clearEnv: true,
    }).output();
    const text = new TextDecoder().decode(output.stdout);
    if (!output.success) {
      throw new Error(`tmux ${args.join(" ")} failed: ${new TextDecoder().decode(output.stderr)}`);
    }
    return text;
  }
}
