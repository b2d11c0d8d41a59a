import type { CachedRepoOut } from "@/client";
import { ConfirmDialog } from "@/components/ui/confirm-dialog";
import { formatBytes } from "@/lib/format";
import { useDeleteCached } from "./useDeleteCached";

/** Asks before deleting `repo` from the server's Hub cache, then deletes it; closed while `repo` is null. */
export function DeleteCachedDialog({
  repo,
  onClose,
  consequence,
}: {
  repo: CachedRepoOut | null;
  onClose: () => void;
  /** What deleting removes, given the formatted size: "This removes all its files (12 MB) …". */
  consequence: (size: string) => string;
}) {
  const del = useDeleteCached();
  return (
    <ConfirmDialog
      open={repo != null}
      onOpenChange={(o) => !o && onClose()}
      title={`Delete ${repo?.repo_id ?? ""}?`}
      description={consequence(formatBytes(repo?.size_bytes))}
      confirmLabel="Delete"
      pending={del.isPending}
      onConfirm={() => repo && del.mutate(repo.repo_id, { onSettled: onClose })}
    />
  );
}
