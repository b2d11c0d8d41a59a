/** The layer an SAE folder's name states (layer_12/width_16k, blocks.8.hook_resid_post, l20r_8x, …), if any. */
export function layerFromPath(path: string): number | null {
  const m =
    path.match(/(?:^|[/_.-])layers?[_.-]?(\d+)/i) ??
    path.match(/(?:^|[/_.-])blocks?[_.-](\d+)/i) ??
    path.match(/(?:^|\/)l(\d+)[a-z]/i);
  return m ? Number(m[1]) : null;
}

/** "owner/repo" + "folder" -> the attach source "owner/repo:folder" ('' = the repo root). */
export function saeSource(repoId: string, path: string): string {
  return path ? `${repoId}:${path}` : repoId;
}
