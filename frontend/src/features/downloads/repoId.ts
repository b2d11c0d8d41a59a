/**
 * Parses what people paste as a Hub repo: "owner/name", or a huggingface.co URL (with /tree/<rev>/…,
 * /blob/…, query or trailing slash). Mirrors huggingface_hub's validate_repo_id rules so the user
 * sees a mistake inline before the server is asked.
 */
export interface RepoRef {
  repoId: string;
  revision?: string;
  /** Folder inside the repo, from a /tree/<rev>/<path> URL (SAE repos). */
  path?: string;
}

const PART = /^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$/;

export function parseRepoRef(input: string): RepoRef | { error: string } {
  let text = input.trim();
  if (!text) return { error: "Enter a repo id such as google/gemma-2-2b." };
  let revision: string | undefined;
  let path: string | undefined;
  const url = text.match(/^(?:https?:\/\/)?(?:www\.)?(?:huggingface\.co|hf\.co)\/(.*)$/i);
  if (url) {
    const parts = url[1].split(/[?#]/)[0].split("/").filter(Boolean);
    if (parts[0] === "datasets" || parts[0] === "spaces")
      return { error: "That is a dataset or Space, not a model repo." };
    if (parts.length < 2) return { error: "The link needs both the owner and the repo name." };
    text = `${parts[0]}/${parts[1]}`;
    if ((parts[2] === "tree" || parts[2] === "blob") && parts[3]) {
      revision = decodeURIComponent(parts[3]);
      if (parts.length > 4) path = parts.slice(4).map(decodeURIComponent).join("/");
    }
  }
  const segs = text.split("/");
  if (segs.length !== 2) return { error: "Use the form owner/name (or paste a huggingface.co link)." };
  for (const s of segs) {
    if (!PART.test(s) || s.includes("--") || s.includes("..") || s.endsWith(".") || s.endsWith("-")) {
      return { error: `“${s}” is not a valid owner or repo name (letters, digits, . _ -).` };
    }
  }
  return {
    repoId: text,
    ...(revision && revision !== "main" ? { revision } : {}),
    ...(path ? { path } : {}),
  };
}

export function isRepoError(r: RepoRef | { error: string }): r is { error: string } {
  return "error" in r;
}
