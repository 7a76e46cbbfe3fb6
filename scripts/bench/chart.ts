/**
 * An SVG bar chart of each path's ratio to the direct connection, per workload.
 * Higher is better for throughput; for latency the ratio is inverted so that
 * higher is better there too.
 * @module
 */

interface ChartRow {
  target: string;
  c32: { requestsPerSecond: number; p99Ms: number };
  c1: { requestsPerSecond: number; p99Ms: number };
  downloadMBps: number;
  uploadMBps: number;
  wsRttMs: number;
  sseFirstEventMs: number;
}

const METRICS: [string, (row: ChartRow) => number, "higher" | "lower"][] = [
  ["req/s c32", (r) => r.c32.requestsPerSecond, "higher"],
  ["req/s c1", (r) => r.c1.requestsPerSecond, "higher"],
  ["p99 c1", (r) => r.c1.p99Ms, "lower"],
  ["download", (r) => r.downloadMBps, "higher"],
  ["upload", (r) => r.uploadMBps, "higher"],
  ["WS RTT", (r) => r.wsRttMs, "lower"],
  ["SSE 1st event", (r) => r.sseFirstEventMs, "lower"],
];
const COLORS = ["#9aa5b1", "#e4a04a", "#3b82c4", "#2f9e6e", "#8e6cc4", "#c45a7a"];

/** Grouped bars: one group per metric, one bar per path, height = ratio to direct (direct = 1). */
export function ratioChart(rows: ChartRow[], date: string): string {
  const width = 760, height = 320, left = 50, bottom = 260, top = 40;
  const direct = rows[0];
  const ratios = METRICS.map(([, get, better]) =>
    rows.map((row) => {
      const value = get(row), base = get(direct);
      if (!Number.isFinite(value) || !Number.isFinite(base) || value === 0) return 0;
      return better === "higher" ? value / base : base / value;
    })
  );
  const max = Math.max(1, ...ratios.flat());
  const scale = (ratio: number) => (ratio / max) * (bottom - top);
  const group = (width - left - 20) / METRICS.length;
  const bar = (group - 16) / rows.length;
  const parts = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="sans-serif" font-size="11">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    `<text x="${left}" y="20" font-size="14">Ratio to direct (higher is better), ${date.slice(0, 10)}</text>`,
    `<line x1="${left}" y1="${bottom}" x2="${width - 10}" y2="${bottom}" stroke="#333"/>`,
    `<line x1="${left}" y1="${bottom - scale(1)}" x2="${width - 10}" y2="${
      bottom - scale(1)
    }" stroke="#999" stroke-dasharray="4"/>`,
    `<text x="${left - 6}" y="${bottom - scale(1) + 4}" text-anchor="end">1.0</text>`,
  ];
  METRICS.forEach(([label], m) => {
    const x0 = left + m * group + 8;
    ratios[m].forEach((ratio, r) => {
      const h = scale(ratio);
      parts.push(
        `<rect x="${x0 + r * bar}" y="${bottom - h}" width="${bar - 2}" height="${h}" fill="${
          COLORS[r % COLORS.length]
        }"/>`,
      );
      parts.push(
        `<text x="${x0 + r * bar + bar / 2}" y="${bottom - h - 3}" text-anchor="middle" font-size="9">${
          ratio.toFixed(2)
        }</text>`,
      );
    });
    parts.push(`<text x="${x0 + (group - 16) / 2}" y="${bottom + 16}" text-anchor="middle">${label}</text>`);
  });
  rows.forEach((row, r) => {
    parts.push(
      `<rect x="${left + r * 110}" y="${height - 22}" width="10" height="10" fill="${
        COLORS[r % COLORS.length]
      }"/>`,
    );
    parts.push(`<text x="${left + r * 110 + 14}" y="${height - 13}">${row.target}</text>`);
  });
  parts.push("</svg>");
  return parts.join("\n") + "\n";
}
