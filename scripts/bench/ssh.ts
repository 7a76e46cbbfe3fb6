/**
 * The classic self-hosted tunnel as a yardstick: a private `sshd` on loopback
 * and `ssh -N -R` forwarding a loopback port to the origin. Keys and config live
 * in a temp dir; nothing of the machine's own ssh setup is used or changed.
 * @module
 */
import { join } from "node:path";
import { Child, type Processes } from "../../tests/helpers/processes.ts";

/** A loopback port no one listens on right now. */
function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr as Deno.NetAddr;
  listener.close();
  return port;
}

/** Waits until a TCP connection to `port` opens. */
async function waitForPort(port: number, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (true) {
    try {
      (await Deno.connect({ hostname: "127.0.0.1", port })).close();
      return;
    } catch (error) {
      if (Date.now() > deadline) throw new Error(`port ${port} never opened: ${error}`);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
}

async function run(command: string, args: string[]) {
  const { success, stderr } = await new Deno.Command(command, { args, stdout: "null", stderr: "piped" })
    .output();
  if (!success) throw new Error(`${command} ${args.join(" ")}: ${new TextDecoder().decode(stderr)}`);
}

/** Starts sshd and `ssh -R`; returns the public (forwarded) port, or why it could not. */
export async function startSshTunnel(
  processes: Processes,
  originPort: number,
): Promise<{ port: number; sshdPid: number; sshPid: number } | { missing: string }> {
  const sshd = ["/usr/sbin/sshd", "/usr/bin/sshd"].find((path) => {
    try {
      return Deno.statSync(path).isFile;
    } catch {
      // Not there: try the next path.
      return false;
    }
  });
  if (!sshd) return { missing: "sshd (apt-get install openssh-server)" };
  const dir = await processes.tempDir();
  await run("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", join(dir, "host_key")]);
  await run("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", join(dir, "client_key")]);
  await Deno.copyFile(join(dir, "client_key.pub"), join(dir, "authorized_keys"));
  const sshdPort = freePort();
  await Deno.writeTextFile(
    join(dir, "sshd_config"),
    [
      `Port ${sshdPort}`,
      "ListenAddress 127.0.0.1",
      `HostKey ${join(dir, "host_key")}`,
      `AuthorizedKeysFile ${join(dir, "authorized_keys")}`,
      `PidFile ${join(dir, "sshd.pid")}`,
      "StrictModes no",
      "UsePAM no",
      "PasswordAuthentication no",
      "KbdInteractiveAuthentication no",
      "PermitRootLogin prohibit-password",
      "AllowTcpForwarding yes",
      "LogLevel ERROR",
    ].join("\n") + "\n",
  );
  // sshd wants its privilege-separation dir; without root it cannot be made, and sshd says so itself.
  await Deno.mkdir("/run/sshd", { recursive: true }).catch(() => {});
  const daemon = processes.add(new Child("sshd", sshd, ["-D", "-e", "-f", join(dir, "sshd_config")]));
  await waitForPort(sshdPort);
  const port = freePort();
  const user = Deno.env.get("USER") ??
    new TextDecoder().decode((await new Deno.Command("id", { args: ["-un"] }).output()).stdout).trim();
  const client = processes.add(
    new Child("ssh -R", "ssh", [
      "-N",
      "-i",
      join(dir, "client_key"),
      "-o",
      "StrictHostKeyChecking=no",
      "-o",
      "UserKnownHostsFile=/dev/null",
      "-o",
      "BatchMode=yes",
      "-o",
      "ExitOnForwardFailure=yes",
      "-o",
      "LogLevel=ERROR",
      "-p",
      String(sshdPort),
      "-R",
      `127.0.0.1:${port}:127.0.0.1:${originPort}`,
      `${user}@127.0.0.1`,
    ]),
  );
  await waitForPort(port);
  return { port, sshdPid: daemon.pid, sshPid: client.pid };
}
