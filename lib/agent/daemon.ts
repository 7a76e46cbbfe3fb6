/**
 * The agent as a background process: where it says it runs
 * (`$XDG_STATE_HOME/reverprox/agent.json`: pid and API address) and logs
 * (`agent.log` beside it), how the CLI finds it, starts it and stops it.
 *
 * A state file is believed only when the agent it names answers on its API
 * with the same pid: after a `kill -9` the file is stale, and is cleaned
 * instead of claiming an agent that is not there.
 *
 * @example
 * ```ts
 * const running = await findAgent();          // { api, pid } or undefined
 * if (!running) await startDaemon(["agent", "run"]);
 * ```
 * @module
 */
import { join } from "node:path";
import { delay } from "../shared/async.ts";
import { AgentApiClient } from "./api_client.ts";

/** What a running agent writes about itself. */
export interface AgentState {
  pid: number;
  /** Its control API, `http://127.0.0.1:4040`. */
  api: string;
  startedAt: string;
}

/** How long `agent start` and `agent stop` wait for the agent to come up or go away. */
const WAIT_MS = 15_000;

/** Where the agent keeps its state and log: `$REVERPROX_STATE_DIR`, `$XDG_STATE_HOME/reverprox`, `~/.local/state/reverprox`. */
export function agentStateDir(): string {
  const explicit = Deno.env.get("REVERPROX_STATE_DIR");
  if (explicit) return explicit;
  const xdg = Deno.env.get("XDG_STATE_HOME");
  if (xdg) return join(xdg, "reverprox");
  return join(Deno.env.get("HOME") ?? Deno.env.get("USERPROFILE") ?? ".", ".local", "state", "reverprox");
}

export function agentLogFile(): string {
  return join(agentStateDir(), "agent.log");
}

function stateFile(): string {
  return join(agentStateDir(), "agent.json");
}

/** Records that this process is the agent, serving its API at `api`. */
export async function writeAgentState(api: string): Promise<void> {
  await Deno.mkdir(agentStateDir(), { recursive: true, mode: 0o700 });
  const state: AgentState = { pid: Deno.pid, api, startedAt: new Date().toISOString() };
  await Deno.writeTextFile(stateFile(), JSON.stringify(state, null, 2) + "\n", { mode: 0o600 });
}

/** Removes the state file if it is still this process's. */
export async function clearAgentState(): Promise<void> {
  const state = await readAgentState();
  if (state?.pid === Deno.pid) {
    await Deno.remove(stateFile()).catch(() => {
      // Removed already (by a CLI that found it stale): nothing is left to clear.
    });
  }
}

async function readAgentState(): Promise<AgentState | undefined> {
  try {
    return JSON.parse(await Deno.readTextFile(stateFile())) as AgentState;
  } catch {
    // No file, or a torn one: either way no agent is described there.
    return undefined;
  }
}

/**
 * The running agent: at `apiAddr` when given, else the one the state file names, if it answers as that
 * pid. A stale state file is removed (`onStale` is told).
 */
export async function findAgent(
  apiAddr?: string,
  onStale: (state: AgentState) => void = () => {},
): Promise<AgentState | undefined> {
  if (apiAddr) {
    const api = apiAddr.includes("://") ? apiAddr : `http://${apiAddr}`;
    const status = await new AgentApiClient(api).status().catch(() => undefined);
    return status && { pid: status.pid, api, startedAt: status.since };
  }
  const state = await readAgentState();
  if (!state) return undefined;
  const status = await new AgentApiClient(state.api).status().catch(() => undefined);
  if (status?.pid === state.pid) return state;
  await Deno.remove(stateFile()).catch(() => {
    // Another CLI cleaned it first.
  });
  onStale(state);
  return undefined;
}

/**
 * Starts `args` (this program with `agent run …`) in the background, detached from the terminal, and
 * waits until it answers on its API. Its output goes to the agent log.
 */
export async function startDaemon(command: string[]): Promise<AgentState> {
  await Deno.mkdir(agentStateDir(), { recursive: true, mode: 0o700 });
  const child = new Deno.Command(command[0], {
    args: command.slice(1),
    stdin: "null",
    stdout: "null",
    stderr: "null",
    env: { REVERPROX_DAEMON: "1" },
  }).spawn();
  // The CLI exits right after; the agent must not be tied to it.
  child.unref();
  const exited = child.status.then((status) => status.code);
  for (const deadline = Date.now() + WAIT_MS; Date.now() < deadline; await delay(100)) {
    const code = await Promise.race([exited, Promise.resolve(undefined)]);
    if (code !== undefined) throw new Error(`the agent exited at once (code ${code}); see ${agentLogFile()}`);
    const state = await readAgentState();
    if (state?.pid === child.pid) return state;
  }
  throw new Error(`the agent did not come up within ${WAIT_MS / 1000} s; see ${agentLogFile()}`);
}

/** Asks the agent to stop (SIGTERM: it says goodbye, freeing its names) and waits until it is gone. */
export async function stopDaemon(state: AgentState): Promise<void> {
  Deno.kill(state.pid, "SIGTERM");
  const api = new AgentApiClient(state.api);
  for (const deadline = Date.now() + WAIT_MS; Date.now() < deadline; await delay(100)) {
    if (!(await api.status().catch(() => undefined))) return;
  }
  throw new Error(`the agent (pid ${state.pid}) did not stop within ${WAIT_MS / 1000} s`);
}
