import { MutationCache, QueryClient } from "@tanstack/react-query";
import { toast } from "sonner";
import { ApiError, errorMessage } from "./errors";

/**
 * Mutation `meta` understood by the shared handlers:
 * - `success`: a toast shown when the mutation succeeds (string, or a function of the result);
 * - `errorTitle`: prefix for the error toast ("Could not load the model");
 * - `inlineError: true`: the component shows the error itself (forms, dialogs): no toast.
 */
declare module "@tanstack/react-query" {
  interface Register {
    mutationMeta: {
      success?: string | ((data: unknown) => string);
      errorTitle?: string;
      inlineError?: boolean;
    };
  }
}

/** The shared error toast: the server's message plus what to do next. */
export function toastError(err: unknown, title?: string): void {
  const hint = err instanceof ApiError ? err.hint : undefined;
  const message = errorMessage(err);
  toast.error(title ?? message, { description: title ? [message, hint].filter(Boolean).join(" ") : hint });
}

export function createQueryClient(): QueryClient {
  return new QueryClient({
    defaultOptions: {
      queries: {
        staleTime: 1000,
        refetchOnWindowFocus: true,
        // 4xx answers will not change on retry; network errors and 5xx get two more tries.
        retry: (count, err) =>
          count < 2 && !(err instanceof ApiError && err.status >= 400 && err.status < 500),
      },
      mutations: { retry: false },
    },
    mutationCache: new MutationCache({
      onError: (err, _vars, _ctx, mutation) => {
        if (mutation.meta?.inlineError) return;
        toastError(err, mutation.meta?.errorTitle);
      },
      onSuccess: (data, _vars, _ctx, mutation) => {
        const s = mutation.meta?.success;
        if (s) toast.success(typeof s === "function" ? s(data) : s);
      },
    }),
  });
}
