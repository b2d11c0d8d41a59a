/** Formatting of numbers for display. Every number shown in the UI goes through here. */

const UNITS = ["B", "KB", "MB", "GB", "TB"] as const;

/** 1536 -> "1.5 KB"; decimal-free under 10 only when whole. Uses 1024 steps (what memory tools show). */
export function formatBytes(bytes: number | null | undefined, digits = 1): string {
  if (bytes == null || !Number.isFinite(bytes)) return "–";
  let v = Math.abs(bytes);
  let u = 0;
  while (v >= 1024 && u < UNITS.length - 1) {
    v /= 1024;
    u += 1;
  }
  const sign = bytes < 0 ? "-" : "";
  return `${sign}${u === 0 ? v.toFixed(0) : v.toFixed(digits)} ${UNITS[u]}`;
}

/** "used/total GB" in the unit of the total, as in the status bar ("8.2/32.0 GB"). */
export function formatUsage(used: number, total: number): string {
  let u = 0;
  let t = total;
  while (t >= 1024 && u < UNITS.length - 1) {
    t /= 1024;
    u += 1;
  }
  const div = 1024 ** u;
  return `${(used / div).toFixed(1)}/${(total / div).toFixed(1)} ${UNITS[u]}`;
}

export function formatPercent(fraction: number | null | undefined, digits = 0): string {
  if (fraction == null || !Number.isFinite(fraction)) return "–";
  return `${(fraction * 100).toFixed(digits)}%`;
}

/** Seconds -> "45s", "3m 20s", "1h 05m". */
export function formatDuration(seconds: number | null | undefined): string {
  if (seconds == null || !Number.isFinite(seconds) || seconds < 0) return "–";
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${String(s % 60).padStart(2, "0")}s`;
  return `${Math.floor(s / 3600)}h ${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`;
}

/** 1_234_567_890 -> "1.2B" (parameter counts). */
export function formatCount(n: number | null | undefined): string {
  if (n == null || !Number.isFinite(n)) return "–";
  const units: [number, string][] = [
    [1e12, "T"],
    [1e9, "B"],
    [1e6, "M"],
    [1e3, "K"],
  ];
  for (const [div, suffix] of units) if (Math.abs(n) >= div) return `${(n / div).toFixed(1)}${suffix}`;
  return String(n);
}

/** An ISO 8601 time (as the API sends) -> "3 min ago" style relative time. */
export function formatAgo(iso: string | null | undefined, now = Date.now()): string {
  if (!iso) return "never";
  const t = Date.parse(iso);
  if (Number.isNaN(t)) return "–";
  const d = Math.max(0, (now - t) / 1000);
  if (d < 60) return "just now";
  if (d < 3600) return `${Math.floor(d / 60)} min ago`;
  if (d < 86400) return `${Math.floor(d / 3600)} h ago`;
  return `${Math.floor(d / 86400)} d ago`;
}
