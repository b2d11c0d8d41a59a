import type * as React from "react";
import { ApiKeyDialog } from "@/components/ApiKeyDialog";
import { Toaster } from "@/components/ui/sonner";
import { TooltipProvider } from "@/components/ui/tooltip";
import { useDownloadEvents } from "@/features/downloads/useDownloads";
import { AppHeader } from "./AppHeader";
import { useDocumentTitle } from "./useDocumentTitle";

/** The page frame: sticky header (logo, tabs, live status bar), one centred main column, toasts. */
export function AppShell({ children }: { children: React.ReactNode }) {
  useDownloadEvents();
  useDocumentTitle();
  return (
    <TooltipProvider delayDuration={300}>
      <a
        href="#main"
        className="sr-only focus:not-sr-only focus:fixed focus:top-2 focus:left-2 focus:z-300 focus:rounded-md focus:bg-page-1 focus:px-3 focus:py-2 focus:text-accent"
      >
        Skip to content
      </a>
      <AppHeader />
      <main id="main" className="mx-auto max-w-[1600px] p-6">
        {children}
      </main>
      <Toaster />
      <ApiKeyDialog />
    </TooltipProvider>
  );
}
