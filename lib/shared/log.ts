/**
 * Logging for both binaries, on `@logtape/logtape`: diagnostics go to stderr as
 * text lines, so stdout stays for what the user asked for (URLs, request lines).
 *
 * @example
 * ```ts
 * setupLogging("info");
 * getLogger(["reverprox", "relay"]).info("listening on {port}", { port: 8080 });
 * ```
 * @module
 */
import {
  configureSync,
  getLogger,
  getTextFormatter,
  isLogLevel,
  type LogLevel,
  type LogRecord,
} from "@logtape/logtape";

export { getLogger };
export type { LogLevel };

const encoder = new TextEncoder();
/** Where terminal log lines go instead of stderr while a full-screen view owns the terminal. */
let diverted: ((line: string) => void) | undefined;

/**
 * Routes every `reverprox` logger at `level` and above to stderr, or to the end of `file` when given
 * (a background agent has no terminal).
 */
export function setupLogging(level: string, file?: string): void {
  if (!isLogLevel(level)) {
    throw new Error(`unknown log level "${level}" (trace, debug, info, warning, error, fatal)`);
  }
  const format = getTextFormatter({ timestamp: file ? "date-time" : "time", category: ".", value: "bare" });
  const out = file ? Deno.openSync(file, { append: true, create: true, mode: 0o600 }) : Deno.stderr;
  configureSync({
    reset: true,
    sinks: {
      main: (record: LogRecord) => {
        if (diverted && !file) return diverted(format(record).trimEnd());
        out.writeSync(encoder.encode(format(record)));
      },
    },
    loggers: [
      { category: ["reverprox"], lowestLevel: level, sinks: ["main"] },
      { category: ["logtape", "meta"], lowestLevel: "warning", sinks: ["main"] },
    ],
  });
}

/**
 * Hands every terminal log line to `sink` instead of stderr (a log file is left alone) until the returned
 * function is called: lines written under a full-screen dashboard would tear its frame.
 */
export function divertLogs(sink: (line: string) => void): () => void {
  diverted = sink;
  return () => {
    if (diverted === sink) diverted = undefined;
  };
}
