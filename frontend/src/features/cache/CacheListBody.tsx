import type { ReactNode } from "react";
import { errorMessage } from "@/api/errors";
import type { CachedRepoOut } from "@/client";

/** A cache list's body: "Loading…", the error, the empty message, or its rows. */
export function CacheListBody({
  repos,
  error,
  empty,
  children,
}: {
  repos: CachedRepoOut[] | undefined;
  error: unknown;
  empty: ReactNode;
  children: (repos: CachedRepoOut[]) => ReactNode;
}) {
  if (error) {
    return (
      <p className="py-10 text-center text-sm text-danger" role="alert">
        {errorMessage(error)}
      </p>
    );
  }
  if (repos == null) return <p className="py-10 text-center text-sm text-muted">Loading the cache…</p>;
  if (repos.length === 0) return <p className="py-10 text-center text-sm text-muted">{empty}</p>;
  return <ul className="flex flex-col gap-3">{children(repos)}</ul>;
}
