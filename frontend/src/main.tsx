import { QueryClientProvider } from "@tanstack/react-query";
import { createRouter, RouterProvider } from "@tanstack/react-router";
import { StrictMode } from "react";
import { createRoot } from "react-dom/client";
import "./styles.css";
import "./api/client";
import { createQueryClient } from "./api/queryClient";
import { routeTree } from "./routeTree.gen";

const queryClient = createQueryClient();

const router = createRouter({
  routeTree,
  context: { queryClient },
  defaultPreload: "intent",
  defaultPreloadStaleTime: 0,
  scrollRestoration: true,
});

declare module "@tanstack/react-router" {
  interface Register {
    router: typeof router;
  }
}

// Every tab's code-split chunk is fetched once the first page is idle, so the first switch to a tab does not
// wait for the network (benchmarks/ui_interaction.py measures tab switches).
const TAB_PATHS = ["/models", "/saes", "/steering", "/profiles", "/monitor"] as const;
function preloadTabs() {
  for (const to of TAB_PATHS) router.preloadRoute({ to }).catch(() => undefined);
}
if (typeof window.requestIdleCallback === "function")
  window.requestIdleCallback(preloadTabs, { timeout: 3000 });
else setTimeout(preloadTabs, 1500);

const root = document.getElementById("root");
if (!root) throw new Error("#root is missing from index.html");
createRoot(root).render(
  <StrictMode>
    <QueryClientProvider client={queryClient}>
      <RouterProvider router={router} />
    </QueryClientProvider>
  </StrictMode>,
);
