import { useRouterState } from "@tanstack/react-router";
import { useEffect } from "react";
import { totalProgress, useActiveDownloads } from "@/features/downloads/useDownloads";
import { TABS } from "./NavTabs";

/** "Models · miLLM", or "↓ 45% · Models · miLLM" while downloads run (visible from other browser tabs). */
export function titleFor(tab: string | undefined, progress: number | null): string {
  const parts = [tab, "miLLM"].filter(Boolean);
  if (progress != null) parts.unshift(`↓ ${Math.floor(progress * 100)}%`);
  return parts.join(" · ");
}

export function useDocumentTitle(): void {
  const path = useRouterState({ select: (s) => s.location.pathname });
  const active = useActiveDownloads();
  const progress = totalProgress(active);
  const tab = TABS.find((t) => path.startsWith(t.to))?.label;
  const title = titleFor(tab, progress ? progress.fraction : null);
  useEffect(() => {
    document.title = title;
  }, [title]);
}
