import { fireEvent, screen, waitFor, within } from "@testing-library/react";
import { HttpResponse, http } from "msw";
import { describe, expect, it, vi } from "vitest";
import type { ProfilePublic } from "@/client";
import { envelope } from "@/test/fixtures";
import { renderApp } from "@/test/render";
import { api, server } from "@/test/server";

function profile(over: Partial<ProfilePublic> = {}): ProfilePublic {
  return {
    id: 1,
    name: "yelling-demo",
    description: "Makes the demo model yell",
    model: "millm-demo",
    sae: { id: "millm-demo-sae", hook_name: "blocks.0.hook_resid_post", layer: 0, d_sae: 1536 },
    mode: "add",
    normalize: false,
    features: [{ index: 16, strength: 8.2, label: "CAPS" }],
    version: 3,
    created_at: "2026-12-06T09:00:00Z",
    updated_at: "2026-12-06T09:00:00Z",
    active: false,
    ...over,
  };
}

function profilesServer(list: ProfilePublic[]) {
  let data = list;
  const calls: { method: string; url: string; body?: unknown }[] = [];
  server.use(
    http.get(api("/api/profiles"), () => HttpResponse.json({ data, count: data.length })),
    http.post(api("/api/profiles/:name/activate"), ({ params, request }) => {
      calls.push({ method: "POST", url: new URL(request.url).pathname });
      data = data.map((p) => ({ ...p, active: p.name === params.name }));
      return HttpResponse.json(data.find((p) => p.name === params.name));
    }),
    http.post(api("/api/profiles/deactivate"), ({ request }) => {
      calls.push({ method: "POST", url: new URL(request.url).pathname });
      data = data.map((p) => ({ ...p, active: false }));
      return new HttpResponse(null, { status: 204 });
    }),
    http.delete(api("/api/profiles/:name"), ({ params, request }) => {
      calls.push({ method: "DELETE", url: new URL(request.url).pathname });
      data = data.filter((p) => p.name !== params.name);
      return new HttpResponse(null, { status: 204 });
    }),
    http.patch(api("/api/profiles/:name"), async ({ params, request }) => {
      const body = (await request.json()) as Record<string, unknown>;
      calls.push({ method: "PATCH", url: new URL(request.url).pathname, body });
      const old = data.find((p) => p.name === params.name) as ProfilePublic;
      const next = { ...old, ...body, version: old.version + 1 } as ProfilePublic;
      data = data.map((p) => (p.name === params.name ? next : p));
      return HttpResponse.json(next);
    }),
    http.post(api("/api/profiles"), async ({ request }) => {
      const body = (await request.json()) as Record<string, unknown>;
      calls.push({ method: "POST", url: "/api/profiles", body });
      return HttpResponse.json(
        envelope(
          "invalid profile (2 errors): features[0].index: 2000 is out of range: SAE 'millm-demo-sae' has d_sae 1536; description: string should have at most 4000 characters",
          "invalid_profile",
          "features[0].index",
        ),
        { status: 400 },
      );
    }),
  );
  return { calls };
}

describe("Profiles tab", () => {
  it("lists profiles with the active one marked and each virtual model id with a copy button", async () => {
    profilesServer([
      profile({ active: true }),
      profile({ id: 2, name: "ocean", active: false, features: [{ index: 102, strength: -5.5 }] }),
    ]);
    const { user } = renderApp("/profiles");
    const active = await screen.findByRole("listitem", { name: "Profile yelling-demo" }, { timeout: 4000 });
    expect(within(active).getByText("Active")).toBeInTheDocument();
    expect(within(active).getByRole("button", { name: "Deactivate yelling-demo" })).toBeInTheDocument();
    const ocean = screen.getByRole("listitem", { name: "Profile ocean" });
    expect(within(ocean).queryByText("Active")).toBeNull();
    expect(within(ocean).getByText("#102: -5.5")).toBeInTheDocument();
    expect(within(ocean).getByText("millm-demo+ocean")).toBeInTheDocument();
    const writeText = vi.fn().mockResolvedValue(undefined);
    Object.defineProperty(navigator, "clipboard", { value: { writeText }, configurable: true });
    await user.click(within(ocean).getByRole("button", { name: "Copy model id millm-demo+ocean" }));
    expect(writeText).toHaveBeenCalledWith("millm-demo+ocean");
  });

  it("activates and deactivates with one click", async () => {
    const srv = profilesServer([profile()]);
    const { user } = renderApp("/profiles");
    await user.click(await screen.findByRole("button", { name: "Activate yelling-demo" }));
    const deactivate = await screen.findByRole("button", { name: "Deactivate yelling-demo" });
    await user.click(deactivate);
    await screen.findByRole("button", { name: "Activate yelling-demo" });
    expect(srv.calls.map((c) => c.url)).toEqual([
      "/api/profiles/yelling-demo/activate",
      "/api/profiles/deactivate",
    ]);
  });

  it("delete asks first, saying what is lost", async () => {
    const srv = profilesServer([profile()]);
    const { user } = renderApp("/profiles");
    await user.click(await screen.findByRole("button", { name: "Delete yelling-demo" }));
    const dialog = await screen.findByRole("alertdialog");
    expect(dialog).toHaveTextContent("1 features and description are lost unless exported");
    expect(srv.calls).toHaveLength(0);
    await user.click(within(dialog).getByRole("button", { name: "Delete profile" }));
    await waitFor(() => expect(srv.calls).toEqual([{ method: "DELETE", url: "/api/profiles/yelling-demo" }]));
    expect(await screen.findByText(/No profiles yet/)).toBeInTheDocument();
  });

  it("edit sends the version being edited with the changed fields", async () => {
    const srv = profilesServer([profile()]);
    const { user } = renderApp("/profiles");
    await user.click(await screen.findByRole("button", { name: "Edit yelling-demo" }));
    const dialog = await screen.findByRole("dialog");
    const features = within(dialog).getByRole("textbox", { name: "Features" });
    expect(features).toHaveValue("16:8.2");
    await user.clear(features);
    await user.type(features, "16:4, 40:-2");
    await user.selectOptions(within(dialog).getByRole("combobox", { name: "Mode" }), "clamp");
    await user.click(within(dialog).getByRole("button", { name: "Save changes" }));
    await waitFor(() => expect(srv.calls[0]?.method).toBe("PATCH"));
    expect(srv.calls[0].body).toMatchObject({
      version: 3,
      mode: "clamp",
      features: [
        { index: 16, strength: 4, label: "CAPS" },
        { index: 40, strength: -2, label: null },
      ],
    });
    await waitFor(() => expect(screen.queryByRole("dialog")).toBeNull());
  });

  it("create validates inline (name, index ≥ d_sae) and shows the server's errors under their fields", async () => {
    profilesServer([]);
    const { user } = renderApp("/profiles");
    await user.click(await screen.findByRole("button", { name: "New profile" }));
    const dialog = await screen.findByRole("dialog");
    await user.type(within(dialog).getByRole("textbox", { name: "Name" }), "bad name");
    await user.type(within(dialog).getByRole("textbox", { name: "Features" }), "16:4, 1536:1");
    await user.click(within(dialog).getByRole("button", { name: "Create profile" }));
    expect(await within(dialog).findByText(/starting with a letter or digit/)).toBeInTheDocument();
    expect(within(dialog).getByText(/index 1536 is out of range/)).toBeInTheDocument();
    // Fix both: now the server answers with its own field errors.
    await user.clear(within(dialog).getByRole("textbox", { name: "Name" }));
    await user.type(within(dialog).getByRole("textbox", { name: "Name" }), "good");
    await user.clear(within(dialog).getByRole("textbox", { name: "Features" }));
    await user.type(within(dialog).getByRole("textbox", { name: "Features" }), "16:4");
    await user.click(within(dialog).getByRole("button", { name: "Create profile" }));
    expect(await within(dialog).findByText(/2000 is out of range/)).toBeInTheDocument();
    expect(within(dialog).getByText("features[0].index")).toBeInTheDocument();
    expect(within(dialog).getByText("description")).toBeInTheDocument();
  });

  it("import: bad JSON is caught inline; the server's errors are listed field by field", async () => {
    profilesServer([]);
    let sent: string | undefined;
    server.use(
      http.post(api("/api/profiles/import"), async ({ request }) => {
        sent = await request.text();
        return HttpResponse.json(
          envelope(
            "invalid profile (2 errors): name: must be URL-safe; features[1].strength: must be a number",
            "invalid_profile",
            "name",
          ),
          { status: 400 },
        );
      }),
    );
    const { user } = renderApp("/profiles");
    await user.click(await screen.findByRole("button", { name: "Import" }));
    const dialog = await screen.findByRole("dialog");
    const box = within(dialog).getByRole("textbox", { name: "JSON" });
    fireEvent.change(box, { target: { value: '{"name": "x",\n  oops}' } });
    await user.click(within(dialog).getByRole("button", { name: "Import file" }));
    expect(await within(dialog).findByText(/Not valid JSON at line 2/)).toBeInTheDocument();
    expect(sent).toBeUndefined();
    const doc = '{"format": "millm.profile", "name": "bad name"}';
    fireEvent.change(box, { target: { value: doc } });
    await user.click(within(dialog).getByRole("button", { name: "Import file" }));
    expect(await within(dialog).findByText(/The file was not imported \(2 errors\)/)).toBeInTheDocument();
    expect(within(dialog).getByText("features[1].strength")).toBeInTheDocument();
    expect(within(dialog).getByText(/must be URL-safe/)).toBeInTheDocument();
    expect(sent).toBe(doc); // the file as is, not re-encoded
  });

  it("import a file: success closes the dialog and refreshes the list", async () => {
    profilesServer([]);
    server.use(
      http.post(api("/api/profiles/import"), () =>
        HttpResponse.json(
          { source_format: "neuronpedia", profiles: [profile({ name: "np" })], renamed: {}, replaced: [] },
          { status: 201 },
        ),
      ),
    );
    const { user } = renderApp("/profiles");
    await user.click(await screen.findByRole("button", { name: "Import" }));
    const dialog = await screen.findByRole("dialog");
    const file = new File(['{"name":"np","features":[]}'], "preset.json", { type: "application/json" });
    await user.upload(within(dialog).getByLabelText("Profile file"), file);
    await waitFor(() =>
      expect(within(dialog).getByRole("textbox", { name: /JSON/ })).toHaveValue(
        '{"name":"np","features":[]}',
      ),
    );
    await user.click(within(dialog).getByRole("button", { name: "Import file" }));
    expect(await screen.findByText(/Imported 1 profile \(neuronpedia\)/)).toBeInTheDocument();
  });
});
