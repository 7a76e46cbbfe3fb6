/**
 * The live terminal dashboard of a foreground agent: the screen of
 * `dashboard_view.ts` drawn on the terminal's alternate screen with
 * `log-update`, redrawn as events come (at most ten times a second, and once
 * a second for the round trip), at once on resize, with keys read raw:
 *
 * - `q` or Ctrl-C quits (the agent says goodbye, freeing its names);
 * - `i` shows the inspector's URL on the status line;
 * - `p` pauses or resumes the selected tunnel (the first; Tab or the arrow keys pick another).
 *
 * Log lines go to the status line while it shows, since a line written under
 * the frame would tear it.
 *
 * @example
 * ```ts
 * import type { AgentControl } from "./control.ts";
 * declare const control: AgentControl;
 * const stopping = new AbortController();
 * const dashboard = showDashboard(control, { quit: () => stopping.abort() });
 * stopping.signal.addEventListener("abort", () => dashboard.close());
 * ```
 * @module
 */
import process from "node:process";
import ansiEscapes from "ansi-escapes";
import { createLogUpdate } from "log-update";
import pc from "picocolors";
import { divertLogs } from "../shared/log.ts";
import type { AgentControl, TunnelView } from "./control.ts";
import { DashboardFeed } from "./dashboard_feed.ts";
import { renderDashboard } from "./dashboard_view.ts";

/** Redraws are at least this far apart, however fast requests come (ten a second). */
const REDRAW_INTERVAL_MS = 100;
/** A redraw at least this often, for what changes without an event: the round trip. */
const TICK_MS = 1000;

/** Keys that select the next tunnel (Tab, down, right) and the one before (Shift-Tab, up, left). */
const NEXT_KEYS = ["\t", "\x1b[B", "\x1b[C"];
const PREVIOUS_KEYS = ["\x1b[Z", "\x1b[A", "\x1b[D"];

export interface Dashboard {
  /** Leaves the alternate screen and gives the terminal back as it was. Safe to call twice. */
  close(): void;
}

/** Takes over the terminal (stdout must be one) to show `control`'s agent live; `quit` is called on q or Ctrl-C. */
export function showDashboard(control: AgentControl, options: { quit: () => void }): Dashboard {
  return new TerminalDashboard(control, options.quit);
}

class TerminalDashboard implements Dashboard {
  #frame = createLogUpdate(process.stdout, { showCursor: true });
  #feed: DashboardFeed;
  #restoreLogs: () => void;
  #tick: ReturnType<typeof setInterval>;
  #timer?: ReturnType<typeof setTimeout>;
  #lastDraw = 0;
  #raw = Deno.stdin.isTerminal();
  #closed = false;
  #selected?: string;
  #notice?: string;

  constructor(private readonly control: AgentControl, private readonly quit: () => void) {
    process.stdout.write(ansiEscapes.enterAlternativeScreen + ansiEscapes.cursorHide);
    this.#feed = new DashboardFeed(control.events, () => this.#schedule());
    this.#restoreLogs = divertLogs((line) => this.#say(line));
    Deno.addSignalListener("SIGWINCH", this.#resized);
    // Whatever ends the process (an uncaught error included) must not leave the terminal raw and hidden.
    globalThis.addEventListener("unload", this.close);
    this.#tick = setInterval(() => this.#schedule(), TICK_MS);
    if (this.#raw) {
      Deno.stdin.setRaw(true);
      void this.#readKeys();
    }
    this.#draw();
  }

  close = () => {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#timer);
    clearInterval(this.#tick);
    Deno.removeSignalListener("SIGWINCH", this.#resized);
    globalThis.removeEventListener("unload", this.close);
    this.#feed.close();
    this.#restoreLogs();
    this.#frame.done();
    if (this.#raw) Deno.stdin.setRaw(false);
    process.stdout.write(ansiEscapes.cursorShow + ansiEscapes.exitAlternativeScreen);
  };

  #draw() {
    this.#timer = undefined;
    this.#lastDraw = Date.now();
    const { columns, rows } = Deno.consoleSize();
    const view = {
      status: this.control.status(),
      tunnels: this.control.list(),
      open: this.#feed.open(),
      connections: this.#feed.connections(),
      requests: this.#feed.requests(),
      selected: this.#selectedTunnel()?.name,
      notice: this.#notice,
    };
    // One row less than the terminal: log-update leaves the cursor on the line below its frame.
    this.#frame(renderDashboard(view, { columns, rows: rows - 1 }, pc).join("\n"));
  }

  #schedule() {
    if (this.#timer !== undefined || this.#closed) return;
    const wait = Math.max(0, this.#lastDraw + REDRAW_INTERVAL_MS - Date.now());
    this.#timer = setTimeout(() => this.#draw(), wait);
  }

  /** A new size: lines drawn at the old width may have wrapped, so the screen is cleared and drawn anew. */
  #resized = () => {
    if (this.#closed) return;
    clearTimeout(this.#timer);
    this.#frame.done();
    process.stdout.write(ansiEscapes.clearViewport);
    this.#draw();
  };

  #say(notice: string) {
    this.#notice = notice;
    this.#schedule();
  }

  async #readKeys() {
    const buffer = new Uint8Array(64);
    const decoder = new TextDecoder();
    while (!this.#closed) {
      const read = await Deno.stdin.read(buffer);
      if (read === null || this.#closed) return;
      this.#key(decoder.decode(buffer.subarray(0, read)));
    }
  }

  /** One read of the keyboard: a key, an escape sequence (arrows), or several keys pasted at once. */
  #key(keys: string) {
    if (NEXT_KEYS.includes(keys)) return this.#select(1);
    if (PREVIOUS_KEYS.includes(keys)) return this.#select(-1);
    for (const key of keys) {
      if (key === "q" || key === "\x03") {
        this.close();
        return this.quit();
      }
      if (key === "i") this.#say(`inspector: ${this.control.status().api}`);
      if (key === "p") void this.#togglePause();
    }
  }

  #selectedTunnel(): TunnelView | undefined {
    const tunnels = this.control.list();
    return tunnels.find((tunnel) => tunnel.name === this.#selected) ?? tunnels[0];
  }

  /** Moves the selection `by` tunnels, round the list. */
  #select(by: number) {
    const tunnels = this.control.list();
    if (!tunnels.length) return;
    const at = tunnels.findIndex((tunnel) => tunnel.name === this.#selectedTunnel()?.name);
    this.#selected = tunnels[(at + by + tunnels.length) % tunnels.length].name;
    this.#schedule();
  }

  async #togglePause() {
    const tunnel = this.#selectedTunnel();
    if (!tunnel) return this.#say("no tunnel to pause");
    const resume = tunnel.state === "suspended";
    try {
      const view = resume ? await this.control.resume(tunnel.name) : await this.control.suspend(tunnel.name);
      this.#say(`${view.name} ${resume ? "resumed" : "paused: visitors get 503 until p again"}`);
    } catch (error) {
      this.#say(`cannot ${resume ? "resume" : "pause"} ${tunnel.name}: ${(error as Error).message}`);
    }
  }
}
