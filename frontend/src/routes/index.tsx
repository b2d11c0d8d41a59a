import { createFileRoute, redirect } from "@tanstack/react-router";
import { statusQuery } from "@/api/queries";

// "/" opens Steering when a model and an SAE are ready to steer, else Models (where one starts).
export const Route = createFileRoute("/")({
  beforeLoad: async ({ context }) => {
    const status = await context.queryClient.fetchQuery(statusQuery).catch(() => null);
    throw redirect({ to: status?.model && status?.sae ? "/steering" : "/models", replace: true });
  },
});
