import type { ReactNode } from "react";
import type { CachedRepoOut } from "@/client";
import { cn } from "@/lib/cn";
import { formatAgo, formatBytes } from "@/lib/format";

/** One cached repo's icon, name, size, file count, last use and repo id (the left part of its row). */
export function CachedRepoSummary({
  repo,
  icon,
  iconClassName,
}: {
  repo: CachedRepoOut;
  icon: ReactNode;
  iconClassName: string;
}) {
  const meta = [
    formatBytes(repo.size_bytes),
    `${repo.nb_files} files`,
    `last used ${formatAgo(repo.last_used)}`,
  ];
  return (
    <>
      <div
        className={cn("flex size-10 items-center justify-center rounded-lg", iconClassName)}
        aria-hidden="true"
      >
        {icon}
      </div>
      <div className="min-w-0 flex-1">
        <div className="text-[15px] font-semibold text-title">{repo.name}</div>
        <div className="text-xs text-muted">{meta.join(" • ")}</div>
        <div className="num text-[11px] text-muted">{repo.repo_id}</div>
      </div>
    </>
  );
}
