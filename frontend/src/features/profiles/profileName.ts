/** Client-side checks that mirror the server's (src/millm/protocol/profiles.py); the server has the last word. */

export const PROFILE_NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

export function profileNameError(name: string): string | null {
  if (!name.trim()) return "Enter a name.";
  if (name.length > 64) return "At most 64 characters.";
  if (!PROFILE_NAME_PATTERN.test(name))
    return "Letters, digits, '.', '_' or '-', starting with a letter or digit (no spaces or '+').";
  return null;
}

/** "millm-demo-steering-20261206-0930": a valid default name for a profile saved from the steering. */
export function suggestProfileName(model: string, now = new Date()): string {
  const p = (n: number) => String(n).padStart(2, "0");
  const stamp = `${now.getFullYear()}${p(now.getMonth() + 1)}${p(now.getDate())}-${p(now.getHours())}${p(now.getMinutes())}`;
  const base = model.replace(/[^A-Za-z0-9._-]+/g, "-").replace(/^[^A-Za-z0-9]+/, "") || "profile";
  return `${base.slice(0, 64 - stamp.length - 10)}-steering-${stamp}`;
}

/** The id chat clients pick to use a profile: `<model>+<profile>`. */
export function virtualModelId(model: string, profile: string): string {
  return `${model}+${profile}`;
}
