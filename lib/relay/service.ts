/**
 * `reverprox-server service install`: the relay as a systemd system service. The unit runs the
 * relay with the flags given after `--`, keeps its state (keys, tokens, certificates) in
 * `/var/lib/reverprox-server` through `StateDirectory=`, restarts it when it fails, and lets it
 * bind ports below 1024 (80, 443) without root through `CAP_NET_BIND_SERVICE`, as a user of its
 * own (`DynamicUser=`, or a named one) under systemd's sandboxing.
 *
 * @example
 * ```ts
 * const unit = relayUnit({ command: ["/usr/local/bin/reverprox-server", "--domain", "tunnel.example.com"] });
 * await installRelayUnit(unit, { unitDir: "/etc/systemd/system" });
 * ```
 * @module
 */
import { join } from "node:path";
import { systemdCommandLine } from "../shared/service.ts";

/** The unit's name, and so its file's (`reverprox-server.service`) and its state dir's. */
export const RELAY_UNIT = "reverprox-server";

export interface RelayUnitSpec {
  /** The relay and its flags (without `--state-dir`: the unit sets it). */
  command: string[];
  /** An existing account to run as; without it systemd makes a dynamic one for each run. */
  user?: string;
}

/** Bad input to `service install`: the message says what to change. */
export class ServiceSetupError extends Error {}

/** Relay flags the unit sets itself, so they cannot be passed after `--`. */
const SET_BY_UNIT = ["--state-dir"];

/** Checks what the user passed; throws a {@link ServiceSetupError} naming the problem. */
export function checkRelayUnitSpec(relayFlags: string[], user: string | undefined): void {
  const taken = relayFlags.find((word) =>
    SET_BY_UNIT.some((flag) => word === flag || word.startsWith(`${flag}=`))
  );
  if (taken) {
    throw new ServiceSetupError(`${taken}: the unit keeps the relay's state in /var/lib/${RELAY_UNIT}`);
  }
  // Letters, digits, `_` and `-`, not starting with a digit or `-`: what systemd accepts everywhere.
  if (user !== undefined && !/^[A-Za-z_][A-Za-z0-9_-]{0,31}$/.test(user)) {
    throw new ServiceSetupError(`--user ${JSON.stringify(user)} is not a user name`);
  }
}

/** The unit file's text (`/etc/systemd/system/reverprox-server.service`). */
export function relayUnit(spec: RelayUnitSpec): string {
  const account = spec.user === undefined ? "DynamicUser=yes" : `User=${spec.user}`;
  return `[Unit]
Description=reverprox relay: public URLs for tunnel clients
Documentation=https://github.com/reverprox/reverprox
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
ExecStart=${systemdCommandLine(spec.command)}
${account}
# Keys, tokens and certificates: /var/lib/${RELAY_UNIT}, owned by the service's user.
StateDirectory=${RELAY_UNIT}
StateDirectoryMode=0700
Environment=REVERPROX_STATE_DIR=%S/${RELAY_UNIT}
Restart=on-failure
RestartSec=3
# Ports below 1024 (80 and 443 for HTTP, HTTPS and ACME challenges) without root.
AmbientCapabilities=CAP_NET_BIND_SERVICE
CapabilityBoundingSet=CAP_NET_BIND_SERVICE
NoNewPrivileges=yes
# Visitors' connections, clients' QUIC connections and the sockets of their streams.
LimitNOFILE=65536
ProtectSystem=strict
ProtectHome=read-only
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
SystemCallArchitectures=native
# No MemoryDenyWriteExecute=: V8 compiles JavaScript to machine code at run time.

[Install]
WantedBy=multi-user.target
`;
}

/** Writes the unit into `unitDir`, which must exist; returns the file written. */
export async function installRelayUnit(unit: string, options: { unitDir: string }): Promise<string> {
  const info = await Deno.stat(options.unitDir).catch(() => undefined);
  if (!info?.isDirectory) {
    throw new ServiceSetupError(`--unit-dir ${options.unitDir} is not a directory (is systemd installed?)`);
  }
  const file = join(options.unitDir, `${RELAY_UNIT}.service`);
  try {
    await Deno.writeTextFile(file, unit, { mode: 0o644 });
  } catch (error) {
    if (!(error instanceof Deno.errors.PermissionDenied)) throw error;
    throw new ServiceSetupError(`cannot write ${file}: run as root (sudo), or pass --unit-dir or --print`);
  }
  return file;
}
