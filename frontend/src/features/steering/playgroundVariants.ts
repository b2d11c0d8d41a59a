/**
 * The playground's columns: what each one steers with (nothing, the current selection, a saved profile, or a
 * custom feature list), turned into `POST /api/compare` variants. Pure; tested in playgroundVariants.test.ts.
 */
import { parseFeatureList } from "./features";
import { MAX_VARIANTS, type VariantSteering } from "./useCompare";

/** What a column steers with. */
export type ColumnKind =
  | { kind: "unsteered" }
  | { kind: "current" }
  | { kind: "profile"; profile: string }
  | { kind: "custom"; text: string };

export type ColumnSpec = ColumnKind & { id: number };

export const DEFAULT_COLUMNS: ColumnSpec[] = [
  { id: 0, kind: "unsteered" },
  { id: 1, kind: "current" },
];

export { MAX_VARIANTS };

/**
 * The columns as the URL keeps them (`?columns=`): `u` unsteered, `s` the current steering, `p:<profile>`,
 * `c:<list>` (a custom list, its commas written as `;`), joined by `|`. The default (`u|s`) is left out.
 */
export function encodeColumns(specs: ColumnKind[]): string | undefined {
  const parts = specs.map((c) =>
    c.kind === "unsteered"
      ? "u"
      : c.kind === "current"
        ? "s"
        : c.kind === "profile"
          ? `p:${c.profile}`
          : `c:${c.text.replace(/\s*,\s*/g, ";").replace(/\|/g, "")}`,
  );
  const text = parts.join("|");
  return text === "u|s" ? undefined : text;
}

/** `?columns=` back into columns (ids by position); unknown parts are dropped, at most 8 kept, never none. */
export function decodeColumns(text: string | undefined): ColumnSpec[] {
  if (!text) return DEFAULT_COLUMNS;
  const out: ColumnSpec[] = [];
  for (const part of text.split("|")) {
    const id = out.length;
    if (part === "u") out.push({ id, kind: "unsteered" });
    else if (part === "s") out.push({ id, kind: "current" });
    else if (part.startsWith("p:") && part.length > 2)
      out.push({ id, kind: "profile", profile: part.slice(2) });
    else if (part.startsWith("c:") && part.length > 2)
      out.push({ id, kind: "custom", text: part.slice(2).replace(/;/g, ", ") });
  }
  return out.length ? out.slice(0, MAX_VARIANTS) : DEFAULT_COLUMNS;
}

/** The column's title; the first two keep the names "Unsteered" and "Steered". */
export function columnTitle(spec: ColumnSpec): string {
  switch (spec.kind) {
    case "unsteered":
      return "Unsteered";
    case "current":
      return "Steered";
    case "profile":
      return `Profile ${spec.profile}`;
    case "custom":
      return `Custom ${spec.text.replace(/\s+/g, " ").trim()}`;
  }
}

/** Titles made unique ("Unsteered", "Unsteered (2)") so every column has its own accessible name. */
export function columnTitles(specs: ColumnSpec[]): string[] {
  const seen = new Map<string, number>();
  return specs.map((s) => {
    const t = columnTitle(s);
    const n = (seen.get(t) ?? 0) + 1;
    seen.set(t, n);
    return n === 1 ? t : `${t} (${n})`;
  });
}

export type CurrentSteering = {
  features: { index: number; strength: number }[];
  mode: "add" | "clamp";
} | null;

/**
 * The compare variants for `specs`, or the first problem (a custom list that does not parse). The current
 * steering with no unmuted feature runs unsteered, as the server would.
 */
export function toVariants(
  specs: ColumnSpec[],
  current: CurrentSteering,
  dSae: number,
): { variants: { label: string; steering: VariantSteering | null }[]; error: string | null } {
  const titles = columnTitles(specs);
  const variants: { label: string; steering: VariantSteering | null }[] = [];
  for (const [i, spec] of specs.entries()) {
    const label = titles[i];
    if (spec.kind === "unsteered") variants.push({ label, steering: null });
    else if (spec.kind === "current") variants.push({ label, steering: current });
    else if (spec.kind === "profile") variants.push({ label, steering: { profile: spec.profile } });
    else {
      const { entries, errors } = parseFeatureList(spec.text, dSae);
      if (errors.length)
        return { variants: [], error: `Column ${i + 1}: ${errors[0].entry}: ${errors[0].message}` };
      if (!entries.length) return { variants: [], error: `Column ${i + 1}: the feature list is empty` };
      variants.push({ label, steering: { features: entries, mode: "add" } });
    }
  }
  return { variants: variants.slice(0, MAX_VARIANTS), error: null };
}
