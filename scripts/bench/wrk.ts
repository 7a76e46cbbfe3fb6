/**
 * Runs wrk and reads its report: requests per second and latency percentiles.
 * @module
 */

export interface WrkResult {
  requestsPerSecond: number;
  p50Ms: number;
  p99Ms: number;
  errors: number;
}

/** `wrk -t<threads> -c<connections> -d<seconds>s --latency` against `url`, with an optional Host header. */
export async function wrk(
  url: string,
  options: { connections: number; threads: number; seconds: number; host?: string },
): Promise<WrkResult> {
  const args = [
    `-t${options.threads}`,
    `-c${options.connections}`,
    `-d${options.seconds}s`,
    "--latency",
    "--timeout",
    "5s",
  ];
  if (options.host) args.push("-H", `Host: ${options.host}`);
  const output = await new Deno.Command("wrk", { args: [...args, url], stdout: "piped", stderr: "piped" })
    .output();
  const text = new TextDecoder().decode(output.stdout);
  if (!output.success) throw new Error(`wrk failed: ${new TextDecoder().decode(output.stderr)}`);
  return parseWrk(text);
}

/** Parses wrk's `--latency` report. */
function parseWrk(text: string): WrkResult {
  const rps = text.match(/Requests\/sec:\s+([\d.]+)/);
  if (!rps) throw new Error(`cannot read wrk output:\n${text}`);
  const errors = text.match(/Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/);
  const non2xx = text.match(/Non-2xx or 3xx responses: (\d+)/);
  return {
    requestsPerSecond: Number(rps[1]),
    p50Ms: percentile(text, "50"),
    p99Ms: percentile(text, "99"),
    errors: (errors ? errors.slice(1).reduce((sum, n) => sum + Number(n), 0) : 0) +
      (non2xx ? Number(non2xx[1]) : 0),
  };
}

function percentile(text: string, which: string): number {
  const match = text.match(new RegExp(`^\\s+${which}%\\s+([\\d.]+)(us|ms|s)\\s*$`, "m"));
  if (!match) return NaN;
  const value = Number(match[1]);
  return match[2] === "us" ? value / 1000 : match[2] === "s" ? value * 1000 : value;
}
