import { ApiError } from "@/api/errors";

export interface FieldError {
  /** The server's path to the bad field ("features[0].index", "sae.d_sae"), or "" for the document itself. */
  path: string;
  message: string;
}

/**
 * The field-by-field errors in a profile error. The server lists every bad field in one message
 * ("invalid profile (2 errors): features[0].index: must be >= 0; name: …") and names the first in `param`.
 */
export function parseFieldErrors(err: unknown): FieldError[] {
  if (!(err instanceof ApiError))
    return [{ path: "", message: err instanceof Error ? err.message : String(err) }];
  const m = /^invalid [^:(]+?(?: \(\d+ errors\))?: (.*)$/s.exec(err.message);
  if (!m) return [{ path: err.param ?? "", message: err.message }];
  const out: FieldError[] = [];
  for (const part of m[1].split("; ")) {
    const sep = /^([A-Za-z_$][\w$]*(?:\[\d+\]|\.[\w$]+)*): (.*)$/s.exec(part);
    if (sep) out.push({ path: sep[1], message: sep[2] });
    else out.push({ path: "", message: part });
  }
  return out;
}

/** The errors for one form field: its own path and anything under it ("features" takes "features[2].index"). */
export function errorsFor(errors: FieldError[], field: string): FieldError[] {
  return errors.filter(
    (e) => e.path === field || e.path.startsWith(`${field}[`) || e.path.startsWith(`${field}.`),
  );
}
