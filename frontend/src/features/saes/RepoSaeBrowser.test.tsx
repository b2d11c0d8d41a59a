import { screen, waitFor, within } from "@testing-library/react";
import { HttpResponse, http } from "msw";
import { describe, expect, it } from "vitest";
import type { RepoSaeOut } from "@/client";
import { envelope, job } from "@/test/fixtures";
import { renderApp } from "@/test/render";
import { api, server } from "@/test/server";
import { formatWidth } from "./RepoSaeBrowser";

const REPO = "google/gemma-scope-2b-pt-res";

function sae(layer: number, width: number, l0: number, cached = false): RepoSaeOut {
  const path = `layer_${layer}/width_${formatWidth(width)}/average_l0_${l0}`;
  return {
    architecture: "jumprelu",
    cached,
    d_in: 2304,
    files: 1,
    format: "gemma_scope",
    hook_name: null,
    l0,
    l0_label: null,
    layer,
    neuronpedia_id: null,
    path,
    site: "resid_post",
    size_bytes: width * 2304 * 2 * 4,
    source: `${REPO}:${path}`,
    width,
  };
}

const SAES = [
  sae(0, 16384, 105),
  sae(0, 16384, 13),
  sae(0, 65536, 21, true),
  sae(12, 16384, 82),
  sae(12, 65536, 41),
];

function serveRepo() {
  const asked: string[] = [];
  server.use(
    http.get(api("/api/hub/saes"), ({ request }) => {
      asked.push(new URL(request.url).searchParams.get("repo_id") ?? "");
      return HttpResponse.json({
        repo_id: REPO,
        revision: "main",
        commit: "0123456789abcdef",
        configs_read: 0,
        count: SAES.length,
        data: SAES,
      });
    }),
  );
  return asked;
}

describe("SAE repo browser", () => {
  it("formats widths as people write them", () => {
    expect(formatWidth(16384)).toBe("16k");
    expect(formatWidth(1048576)).toBe("1M");
    expect(formatWidth(1536)).toBe("1,536");
    expect(formatWidth(null)).toBe("–");
  });

  it("opens from Browse, groups the repo's SAEs by layer and filters by layer and width", async () => {
    const asked = serveRepo();
    const { user, router } = renderApp("/saes");
    await user.type(
      await screen.findByRole("textbox", { name: /SAE repository/ }),
      `https://huggingface.co/${REPO}`,
    );
    await user.click(screen.getByRole("button", { name: "Browse" }));
    const browser = await screen.findByRole("region", { name: `Browse ${REPO}` });
    await waitFor(() => expect(asked).toEqual([REPO]));
    expect(router.state.location.search).toMatchObject({ repo: REPO });
    const layer0 = await within(browser).findByRole("region", { name: "Layer 0" });
    expect(
      within(layer0)
        .getAllByRole("row")
        .filter((r) => r.closest("tbody")),
    ).toHaveLength(3);
    expect(within(browser).getByRole("region", { name: "Layer 12" })).toBeInTheDocument();
    expect(within(layer0).getByText("L0 105")).toBeInTheDocument();

    await user.click(within(browser).getByRole("combobox", { name: "Layer" }));
    await user.click(await screen.findByRole("option", { name: "Layer 12" }));
    await waitFor(() =>
      expect(within(browser).queryByRole("region", { name: "Layer 0" })).not.toBeInTheDocument(),
    );
    expect(router.state.location.search).toMatchObject({ repo: REPO, layer: 12 });

    await user.click(within(browser).getByRole("combobox", { name: "Width" }));
    await user.click(await screen.findByRole("option", { name: "64k" }));
    const layer12 = within(browser).getByRole("region", { name: "Layer 12" });
    expect(within(layer12).getByText("layer_12/width_64k/average_l0_41")).toBeInTheDocument();
    expect(within(layer12).queryByText("layer_12/width_16k/average_l0_82")).not.toBeInTheDocument();
  });

  it("downloads several selected SAEs, one job each, and attaches a cached one", async () => {
    serveRepo();
    const posted: unknown[] = [];
    server.use(
      http.post(api("/api/downloads"), async ({ request }) => {
        const body = (await request.json()) as { path: string };
        posted.push(body);
        return HttpResponse.json(
          job({ id: body.path, kind: "sae", repo_id: REPO, path: body.path, state: "queued" }),
          {
            status: 202,
          },
        );
      }),
    );
    const { user, router } = renderApp(`/saes?repo=${encodeURIComponent(REPO)}`);
    const layer0 = await screen.findByRole("region", { name: "Layer 0" });
    // the cached SAE cannot be selected, it can be attached
    expect(
      within(layer0).queryByRole("checkbox", { name: "Select layer_0/width_64k/average_l0_21" }),
    ).toBeNull();
    await user.click(within(layer0).getByRole("button", { name: "Select all in Layer 0" }));
    expect(
      within(layer0).getByRole("checkbox", { name: "Select layer_0/width_16k/average_l0_105" }),
    ).toBeChecked();
    await user.click(screen.getByRole("checkbox", { name: "Select layer_12/width_16k/average_l0_82" }));
    await user.click(screen.getByRole("button", { name: "Download 3 selected" }));
    await waitFor(() => expect(posted).toHaveLength(3));
    expect(posted).toContainEqual({
      kind: "sae",
      repo_id: REPO,
      revision: "main",
      path: "layer_12/width_16k/average_l0_82",
    });
    // they now show as downloading, not selectable
    await waitFor(() =>
      expect(screen.queryByRole("checkbox", { name: "Select layer_12/width_16k/average_l0_82" })).toBeNull(),
    );

    await user.click(
      within(layer0).getByRole("button", { name: `Attach ${REPO}:layer_0/width_64k/average_l0_21` }),
    );
    expect(await screen.findByRole("dialog", { name: "Attach SAE" })).toBeInTheDocument();
    expect(router.state.location.search).toMatchObject({ attach: `${REPO}:layer_0/width_64k/average_l0_21` });
  });

  it("shows why a repo cannot be listed", async () => {
    server.use(
      http.get(api("/api/hub/saes"), () =>
        HttpResponse.json(
          envelope("Repository 'nobody/nothing' not found on the Hub.", "repo_not_found", "repo_id"),
          {
            status: 404,
          },
        ),
      ),
    );
    renderApp("/saes?repo=nobody/nothing");
    const alert = await screen.findByRole("alert");
    expect(alert).toHaveTextContent("Repository 'nobody/nothing' not found on the Hub.");
    expect(alert).toHaveTextContent("Check the repo id (owner/name) and its spelling.");
  });
});
