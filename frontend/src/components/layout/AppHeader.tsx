import { ZapIcon } from "lucide-react";
import { NavTabs } from "./NavTabs";
import { StatusBar } from "./StatusBar";

export function AppHeader() {
  return (
    <header className="sticky top-0 z-100 border-b border-chrome/10 bg-page-1/95 backdrop-blur-md">
      <div className="mx-auto flex min-h-16 max-w-[1600px] flex-wrap items-center gap-x-12 gap-y-2 px-6 py-2">
        <div className="flex items-center gap-3">
          <div
            className="flex size-9 items-center justify-center rounded-lg bg-linear-to-br from-accent-500 to-accent-600"
            aria-hidden="true"
          >
            <ZapIcon className="size-5 text-white" />
          </div>
          <div>
            <div className="text-xl font-bold tracking-tight text-title">miLLM</div>
            <div className="text-[11px] text-muted">Mechanistic Interpretability Server</div>
          </div>
        </div>
        <NavTabs />
        <StatusBar className="ml-auto" />
      </div>
    </header>
  );
}
