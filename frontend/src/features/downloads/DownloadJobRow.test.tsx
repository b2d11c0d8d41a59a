import { screen, waitFor, within } from "@testing-library/react";
import { HttpResponse, http } from "msw";
import { describe, expect, it } from "vitest";
import type { JobOut } from "@/client";
import { job } from "@/test/fixtures";
import { renderWithClient } from "@/test/render";
import { api, server } from "@/test/server";
import { DownloadList } from "./DownloadJobRow";
import { useDownloads } from "./useDownloads";

const GB = 1024 ** 3;

/** Renders the jobs the cache holds, the way the tabs do. */
function LiveList() {
  const { data } = useDownloads();
  return <DownloadList title="Model downloads" jobs={data ?? []} />;
}

function serveJobs(jobs: JobOut[]) {
  server.use(http.get(api("/api/downloads"), () => HttpResponse.json({ data: jobs, count: jobs.length })));
}

describe("DownloadJobRow", () => {
  it("shows one progress bar across files with bytes, file count, speed and ETA", async () => {
    serveJobs([
      job({ bytes_done: 1 * GB + 200 * 1024 ** 2, progress: 0.3, speed_bps: 100 * 1024 ** 2, eta_s: 28.7 }),
    ]);
    renderWithClient(<LiveList />);
    const row = await screen.findByRole("listitem", { name: "Download google/gemma-2-2b" });
    const bar = within(row).getByRole("progressbar", { name: "Download progress of google/gemma-2-2b" });
    expect(bar).toHaveAttribute("aria-valuenow", "30");
    expect(within(row).getByText("1.2 GB / 4.0 GB")).toBeInTheDocument();
    expect(within(row).getByText("files 1/4")).toBeInTheDocument();
    expect(within(row).getByText("100.0 MB/s")).toBeInTheDocument();
    // 2.8 GB left at 100 MB/s = 28.7 s
    expect(within(row).getByText("ETA 29s")).toBeInTheDocument();
  });

  it("cancels a running job and then offers Retry", async () => {
    serveJobs([job()]);
    server.use(
      http.post(api("/api/downloads/job-1/cancel"), () => HttpResponse.json(job({ state: "cancelled" }))),
    );
    const { user } = renderWithClient(<LiveList />);
    await user.click(await screen.findByRole("button", { name: "Cancel download of google/gemma-2-2b" }));
    expect(await screen.findByText("Cancelled")).toBeInTheDocument();
    expect(screen.getByRole("button", { name: "Retry download of google/gemma-2-2b" })).toBeInTheDocument();
    expect(screen.queryByRole("button", { name: /^Cancel download/ })).not.toBeInTheDocument();
  });

  it("shows a failed job's error and retries it", async () => {
    serveJobs([
      job({
        state: "failed",
        error: {
          code: "download_failed",
          message: "The Hub could not be reached",
          status: 502,
          type: "server_error",
        },
      }),
    ]);
    let resumed = false;
    server.use(
      http.post(api("/api/downloads/job-1/resume"), () => {
        resumed = true;
        return HttpResponse.json(job({ state: "queued", attempts: 2 }));
      }),
    );
    const { user } = renderWithClient(<LiveList />);
    expect(await screen.findByRole("alert")).toHaveTextContent("The Hub could not be reached");
    await user.click(screen.getByRole("button", { name: "Retry download of google/gemma-2-2b" }));
    await waitFor(() => expect(resumed).toBe(true));
    expect(await screen.findByText("Queued")).toBeInTheDocument();
  });
});
