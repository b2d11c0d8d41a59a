/**
 * Steering selections as plain data: the rows the Steering tab shows, their URL form, and the paste-a-list
 * parser ("16, 40:2.5, 7=-1"). Pure functions, tested in features.test.ts.
 */

/** One selected feature. A muted row stays in the list (and the URL) but is not sent to the server. */
export interface FeatureRow {
  index: number;
  strength: number;
  muted: boolean;
}

/** The slider's range; the number box beside it takes any finite value. ±25 holds every strength the demo documents
 * (its CAPS feature 10.4, its topics up to 22.6). */
export const SLIDER_MIN = -25;
export const SLIDER_MAX = 25;
/** Strength given to a pasted entry without one ("16"). */
export const PASTE_DEFAULT_STRENGTH = 1;

/** "+4.0", "-2.5", "0.0": one decimal unless the value needs more (a typed 0.25 stays 0.25). */
export function formatStrength(v: number): string {
  const rounded = Math.round(v * 10) / 10;
  const text = rounded === v ? v.toFixed(1) : String(Number(v.toPrecision(6)));
  return v > 0 ? `+${text}` : text;
}

/** URL form: "16:4,40:-2.5,7:1~" (a trailing ~ marks a muted row). Unknown parts are dropped. */
export function encodeRows(rows: FeatureRow[]): string {
  return rows.map((r) => `${r.index}:${r.strength}${r.muted ? "~" : ""}`).join(",");
}

export function decodeRows(text: string | undefined): FeatureRow[] {
  if (!text) return [];
  const rows: FeatureRow[] = [];
  const seen = new Set<number>();
  for (const part of text.split(",")) {
    const m = /^\s*(\d+):(-?[\d.eE+-]+)(~?)\s*$/.exec(part);
    if (!m) continue;
    const index = Number(m[1]);
    const strength = Number(m[2]);
    if (!Number.isSafeInteger(index) || !Number.isFinite(strength) || seen.has(index)) continue;
    seen.add(index);
    rows.push({ index, strength, muted: m[3] === "~" });
  }
  return rows;
}

export interface ParsedEntry {
  index: number;
  strength: number;
}
export interface EntryError {
  /** The entry as typed (trimmed). */
  entry: string;
  message: string;
}

/**
 * Parse a pasted list: entries separated by commas, semicolons or new lines; each `index`, `index:strength`
 * or `index=strength`. Every bad entry gets its own error (index not a whole number, index ≥ d_sae,
 * strength not a finite number, an index listed twice); good entries are returned in order.
 */
export function parseFeatureList(
  text: string,
  dSae: number,
): { entries: ParsedEntry[]; errors: EntryError[] } {
  const entries: ParsedEntry[] = [];
  const errors: EntryError[] = [];
  const seen = new Set<number>();
  for (const raw of text.split(/[,;\n]/)) {
    const entry = raw.trim();
    if (!entry) continue;
    const [idxText, strengthText, ...rest] = entry.split(/[:=]/).map((s) => s.trim());
    if (rest.length > 0) {
      errors.push({ entry, message: "use index, index:strength or index=strength" });
      continue;
    }
    if (!/^#?\d+$/.test(idxText)) {
      errors.push({ entry, message: `“${idxText}” is not a feature index (a whole number ≥ 0)` });
      continue;
    }
    const index = Number(idxText.replace("#", ""));
    if (index >= dSae) {
      errors.push({
        entry,
        message: `index ${index} is out of range: this SAE has ${dSae} features (0–${dSae - 1})`,
      });
      continue;
    }
    let strength = PASTE_DEFAULT_STRENGTH;
    if (strengthText !== undefined) {
      strength = strengthText === "" ? Number.NaN : Number(strengthText);
      if (!Number.isFinite(strength)) {
        errors.push({ entry, message: `strength “${strengthText}” is not a finite number` });
        continue;
      }
    }
    if (seen.has(index)) {
      errors.push({ entry, message: `feature ${index} is listed twice` });
      continue;
    }
    seen.add(index);
    entries.push({ index, strength });
  }
  return { entries, errors };
}

/** Validate one typed feature index against the SAE's width; returns an error message or null. */
export function indexError(text: string, dSae: number): string | null {
  const t = text.trim();
  if (!t) return "Enter a feature index.";
  if (!/^#?\d+$/.test(t)) return "A feature index is a whole number ≥ 0.";
  const index = Number(t.replace("#", ""));
  if (index >= dSae) return `Index must be less than ${dSae} (this SAE has ${dSae} features).`;
  return null;
}

/** Validate a typed strength; returns the number or an error message. */
export function parseStrength(text: string): number | string {
  const t = text.trim();
  if (!t) return "Enter a number.";
  const v = Number(t);
  if (!Number.isFinite(v)) return "Strength must be a finite number.";
  return v;
}

/** Merge server-applied features into the selection: server strengths win, unknown ones are appended. */
export function mergeApplied(
  rows: FeatureRow[],
  applied: { index: number; strength: number }[],
): FeatureRow[] {
  const byIndex = new Map(applied.map((f) => [f.index, f.strength]));
  const merged = rows.map((r) =>
    byIndex.has(r.index) ? { ...r, strength: byIndex.get(r.index) as number, muted: false } : r,
  );
  const known = new Set(rows.map((r) => r.index));
  for (const f of applied)
    if (!known.has(f.index)) merged.push({ index: f.index, strength: f.strength, muted: false });
  return merged;
}
