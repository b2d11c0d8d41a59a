import type { QueryClient } from "@tanstack/react-query";
import { createRootRouteWithContext, Link, Outlet } from "@tanstack/react-router";
import { AppShell } from "@/components/layout/AppShell";

export interface RouterContext {
  queryClient: QueryClient;
}

export const Route = createRootRouteWithContext<RouterContext>()({
  component: () => (
    <AppShell>
      <Outlet />
    </AppShell>
  ),
  notFoundComponent: () => (
    <div className="card text-center">
      <h1 className="text-xl font-semibold text-title">Page not found</h1>
      <p className="mt-2 text-sm text-label">
        Go to{" "}
        <Link to="/models" className="text-accent underline">
          Models
        </Link>
        .
      </p>
    </div>
  ),
});
