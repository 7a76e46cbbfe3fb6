/**
 * `reverprox service install`: the agent as a service of the user's session,
 * started at login and restarted when it fails: a systemd user unit on Linux,
 * a launchd agent on macOS. The unit runs `agent run` in the foreground, the
 * form service managers want.
 *
 * @example
 * ```ts
 * const unit = systemdUnit({ command: ["/usr/local/bin/reverprox", "agent", "run"], env: {} });
 * ```
 * @module
 */
import { join } from "node:path";
import { systemdCommandLine, systemdQuote } from "../shared/service.ts";

export interface ServiceSpec {
  /** The program and arguments that run the agent in the foreground. */
  command: string[];
  /** Environment the agent needs (relay, token from the user's config are read by the agent itself). */
  env: Record<string, string>;
}

/** The systemd user unit (`~/.config/systemd/user/reverprox-agent.service`). */
export function systemdUnit(spec: ServiceSpec): string {
  const env = Object.entries(spec.env).map(([name, value]) =>
    `Environment=${systemdQuote(`${name}=${value}`)}\n`
  );
  return `[Unit]
Description=reverprox agent: your tunnels, driven by \`reverprox\`
Documentation=https://github.com/reverprox/reverprox
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
ExecStart=${systemdCommandLine(spec.command)}
${env.join("")}Restart=on-failure
RestartSec=3
# One relay connection for many tunnels, plus the sockets to their origins.
LimitNOFILE=65536

[Install]
WantedBy=default.target
`;
}

function xmlEscape(text: string): string {
  return text.replaceAll("&", "&amp;").replaceAll("<", "&lt;").replaceAll(">", "&gt;").replaceAll(
    '"',
    "&quot;",
  );
}

/** The launchd agent (`~/Library/LaunchAgents/dev.reverprox.agent.plist`). */
export function launchdPlist(spec: ServiceSpec, logFile: string): string {
  const strings = (words: string[]) =>
    words.map((word) => `    <string>${xmlEscape(word)}</string>`).join("\n");
  const env = Object.entries(spec.env).map(([name, value]) =>
    `    <key>${xmlEscape(name)}</key>\n    <string>${xmlEscape(value)}</string>`
  ).join("\n");
  return `<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0">
<dict>
  <key>Label</key>
  <string>dev.reverprox.agent</string>
  <key>ProgramArguments</key>
  <array>
${strings(spec.command)}
  </array>
  <key>EnvironmentVariables</key>
  <dict>
${env}
  </dict>
  <key>RunAtLoad</key>
  <true/>
  <key>KeepAlive</key>
  <dict>
    <key>SuccessfulExit</key>
    <false/>
  </dict>
  <key>StandardOutPath</key>
  <string>${xmlEscape(logFile)}</string>
  <key>StandardErrorPath</key>
  <string>${xmlEscape(logFile)}</string>
</dict>
</plist>
`;
}

/** Where the unit goes, and the commands that start it, for this OS. */
export function serviceLocation(home: string): { file: string; enable: string[][] } | undefined {
  if (Deno.build.os === "darwin") {
    const file = join(home, "Library", "LaunchAgents", "dev.reverprox.agent.plist");
    return { file, enable: [["launchctl", "load", "-w", file]] };
  }
  if (Deno.build.os === "linux") {
    const config = Deno.env.get("XDG_CONFIG_HOME") ?? join(home, ".config");
    const file = join(config, "systemd", "user", "reverprox-agent.service");
    return {
      file,
      enable: [["systemctl", "--user", "daemon-reload"], [
        "systemctl",
        "--user",
        "enable",
        "--now",
        "reverprox-agent",
      ]],
    };
  }
  return undefined;
}
