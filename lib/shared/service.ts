/**
 * What the client's and the relay's service installers share: the command that runs this program
 * again (the compiled executable, or Deno with the script when run from a checkout), and systemd's
 * quoting for a command line or an `Environment=` word.
 *
 * @example
 * ```ts
 * const command = selfCommand(new URL("file:///src/reverprox/server.ts"), ["--domain", "tunnel.example.com"]);
 * console.log(`ExecStart=${systemdCommandLine(command)}`);
 * ```
 * @module
 */

/** Whether this process is a `deno compile` executable rather than Deno running a script. */
export function isCompiled(): boolean {
  return !/^deno(\.exe)?$/.test(Deno.execPath().split(/[\\/]/).pop()!);
}

/** The command that runs `entry` (the program's main module) again with `args`. */
export function selfCommand(entry: URL, args: string[]): string[] {
  if (isCompiled()) return [Deno.execPath(), ...args];
  return [Deno.execPath(), "run", "-A", "--unstable-net", entry.pathname, ...args];
}

/** systemd quotes arguments with double quotes and backslashes; `%` is its specifier sign. */
export function systemdQuote(word: string): string {
  return /^[A-Za-z0-9_@+=:,./-]+$/.test(word)
    ? word
    : `"${word.replaceAll("\\", "\\\\").replaceAll('"', '\\"').replaceAll("%", "%%")}"`;
}

/** A command line for `ExecStart=`, each word quoted as systemd needs. */
export function systemdCommandLine(command: string[]): string {
  return command.map(systemdQuote).join(" ");
}
