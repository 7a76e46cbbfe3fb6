/**
 * A network namespace joined to this one by a veth pair, to run a relay
 * behind a firewall that drops UDP (nftables, inside the namespace only, so
 * nothing on the host changes). Needs root; {@link netnsUnavailable} says
 * why when `ip netns add` is not permitted here.
 * @module
 */
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import type { Processes } from "./processes.ts";

const run = promisify(execFile);

export interface Namespace {
  name: string;
  /** The address of its end of the veth pair, which the host reaches. */
  address: string;
  /** Drops UDP to `port` inside the namespace. */
  blockUdp(port: number): Promise<void>;
  /** Deletes the rule {@link blockUdp} added. */
  unblockUdp(): Promise<void>;
}

async function sh(...args: string[]) {
  await run(args[0], args.slice(1));
}

/** Why a namespace cannot be made here, or undefined when it can (tried with a throwaway one). */
export async function netnsUnavailable(): Promise<string | undefined> {
  const name = `rp-try-${Deno.pid}`;
  try {
    await sh("ip", "netns", "add", name);
    await sh("ip", "netns", "del", name);
    return undefined;
  } catch (error) {
    return `ip netns add is not permitted here (${(error as Error).message.split("\n")[0]})`;
  }
}

/** Makes a namespace with a veth pair to the host on its own /30; deleted when `processes` is disposed. */
export async function createNamespace(processes: Processes): Promise<Namespace> {
  const id = `${Deno.pid % 1000}${Math.floor(Math.random() * 1000)}`.slice(0, 6);
  const name = `rp-${id}`, hostSide = `rph${id}`, nsSide = `rpn${id}`;
  // A /30 per test run, from 10.213/16: room for many namespaces side by side.
  const block = Math.floor(Math.random() * 16_000) * 4;
  const base = `10.213.${block >> 8}.${block & 0xff}`.split(".").map(Number);
  const at = (n: number) => `${base[0]}.${base[1]}.${base[2]}.${base[3] + n}`;
  await sh("ip", "netns", "add", name);
  processes.defer(() => sh("ip", "netns", "del", name).catch(() => {}));
  await sh("ip", "link", "add", hostSide, "type", "veth", "peer", "name", nsSide);
  processes.defer(() => sh("ip", "link", "del", hostSide).catch(() => {}));
  await sh("ip", "link", "set", nsSide, "netns", name);
  await sh("ip", "addr", "add", `${at(1)}/30`, "dev", hostSide);
  await sh("ip", "link", "set", hostSide, "up");
  const inside = (...args: string[]) => sh("ip", "netns", "exec", name, ...args);
  await inside("ip", "addr", "add", `${at(2)}/30`, "dev", nsSide);
  await inside("ip", "link", "set", nsSide, "up");
  await inside("ip", "link", "set", "lo", "up");
  return {
    name,
    address: at(2),
    async blockUdp(port) {
      await inside("nft", "add", "table", "inet", "rpblock");
      await inside(
        "nft",
        "add",
        "chain",
        "inet",
        "rpblock",
        "input",
        "{ type filter hook input priority 0 ; }",
      );
      await inside("nft", "add", "rule", "inet", "rpblock", "input", "udp", "dport", String(port), "drop");
    },
    unblockUdp: () => inside("nft", "delete", "table", "inet", "rpblock"),
  };
}
