import { screen, waitFor, within } from "@testing-library/react";
import { HttpResponse, http } from "msw";
import { describe, expect, it } from "vitest";
import { envelope, estimate, job, modelPreview, status } from "@/test/fixtures";
import { renderApp } from "@/test/render";
import { api, downloadsWs, server } from "@/test/server";

describe("Models tab: download", () => {
  it("validates the repo id inline and sends nothing while it is wrong", async () => {
    let posted = false;
    server.use(
      http.post(api("/api/downloads"), () => {
        posted = true;
        return HttpResponse.json(job(), { status: 202 });
      }),
    );
    const { user } = renderApp("/models");
    const input = await screen.findByRole("textbox", { name: /Hugging Face model repository/ });
    await user.type(input, "gemma");
    await user.click(screen.getByRole("button", { name: "Download" }));
    expect(input).toHaveAttribute("aria-invalid", "true");
    expect(input).toHaveAccessibleDescription("Use the form owner/name (or paste a huggingface.co link).");
    expect(posted).toBe(false);
  });

  it("starts a server-side job from a pasted Hub URL and shows the progress pushed over the socket", async () => {
    let body: unknown;
    const sockets: { send: (data: string) => void }[] = [];
    server.use(
      http.post(api("/api/downloads"), async ({ request }) => {
        body = await request.json();
        return HttpResponse.json(
          job({
            state: "queued",
            bytes_done: 0,
            bytes_total: 0,
            progress: 0,
            updated_at: "2026-12-06T09:00:00Z",
          }),
          { status: 202 },
        );
      }),
      downloadsWs.addEventListener("connection", ({ client }) => {
        sockets.push(client);
      }),
    );
    const { user } = renderApp("/models");
    await user.type(
      await screen.findByRole("textbox", { name: /Hugging Face model repository/ }),
      "https://huggingface.co/google/gemma-2-2b",
    );
    await user.click(screen.getByRole("button", { name: "Download" }));
    await waitFor(() =>
      expect(body).toEqual({
        kind: "model",
        repo_id: "google/gemma-2-2b",
        revision: null,
        trust_remote_code: false,
      }),
    );
    // the server's push once the job moves
    const frame = { type: "progress", job: job({ bytes_done: 2 * 1024 ** 3, progress: 0.5 }) };
    await waitFor(() => expect(sockets.length).toBeGreaterThan(0));
    for (const s of sockets) s.send(JSON.stringify(frame));
    const bar = await screen.findByRole("progressbar", { name: "Download progress of google/gemma-2-2b" });
    await waitFor(() => expect(bar).toHaveAttribute("aria-valuenow", "50"));
    // the status bar and the document title carry it too
    expect(screen.getByRole("link", { name: "Downloading gemma-2-2b: 50%" })).toBeInTheDocument();
    await waitFor(() => expect(document.title).toBe("↓ 50% · Models · miLLM"));
  });

  it("shows jobs already running on the server when the page opens (reload, second tab)", async () => {
    server.use(http.get(api("/api/downloads"), () => HttpResponse.json({ data: [job()], count: 1 })));
    renderApp("/models");
    const bar = await screen.findByRole("progressbar", { name: "Download progress of google/gemma-2-2b" });
    expect(bar).toHaveAttribute("aria-valuenow", "25");
  });
});

describe("Models tab: cached models and unload", () => {
  it("lists cached models with size and last use, and deletes one after confirming", async () => {
    let deleted = "";
    server.use(
      http.delete(api("/api/cache/*"), ({ request }) => {
        deleted = decodeURIComponent(new URL(request.url).pathname.slice("/api/cache/".length));
        return HttpResponse.json({ repo_id: deleted, revision: null, freed_bytes: 988 * 1024 ** 2 });
      }),
    );
    const { user } = renderApp("/models");
    const list = await screen.findByRole("region", { name: "Your models" });
    await within(list).findByText("Qwen2.5-0.5B");
    expect(within(list).getByText(/988\.0 MB • 6 files • last used/)).toBeInTheDocument();
    await user.click(within(list).getByRole("button", { name: "Delete Qwen/Qwen2.5-0.5B from the cache" }));
    const dialog = await screen.findByRole("alertdialog", { name: "Delete Qwen/Qwen2.5-0.5B?" });
    await user.click(within(dialog).getByRole("button", { name: "Delete" }));
    await waitFor(() => expect(deleted).toBe("Qwen/Qwen2.5-0.5B"));
  });

  it("asks before unloading, saying the SAE is detached and steering cleared", async () => {
    let unloaded = false;
    server.use(
      http.post(api("/api/models/unload"), () => {
        unloaded = true;
        return new HttpResponse(null, { status: 204 });
      }),
    );
    const { user } = renderApp("/models");
    await user.click(await screen.findByRole("button", { name: "Unload" }));
    const dialog = await screen.findByRole("alertdialog", { name: "Unload millm-demo?" });
    expect(dialog).toHaveTextContent("The SAE millm-demo-sae is detached.");
    expect(dialog).toHaveTextContent("Steering is cleared (1 feature).");
    expect(unloaded).toBe(false);
    await user.click(within(dialog).getByRole("button", { name: "Unload" }));
    await waitFor(() => expect(unloaded).toBe(true));
  });
});

describe("Models tab: load with the memory estimate", () => {
  const model = "Qwen/Qwen2.5-0.5B";

  it("shows the estimate breakdown for the chosen precision, then loads", async () => {
    const asked: URLSearchParams[] = [];
    let loadBody: unknown;
    server.use(
      http.get(api("/api/models/estimate"), ({ request }) => {
        const q = new URL(request.url).searchParams;
        asked.push(q);
        const quant = q.get("quantization") ?? "none";
        return HttpResponse.json(
          estimate(quant === "4bit" ? { weights_bytes: 300 * 1024 ** 2, quantization: "4bit" } : {}),
        );
      }),
      http.post(api("/api/models/load"), async ({ request }) => {
        loadBody = await request.json();
        return HttpResponse.json({
          model: { ...status().model, id: model },
          sae_detached: null,
          memory_estimate: null,
        });
      }),
    );
    const { user, router } = renderApp(`/models?load=${encodeURIComponent(model)}`);
    const dialog = await screen.findByRole("dialog", { name: "Load model" });
    const figure = await within(dialog).findByRole("figure", { name: "Memory estimate" });
    expect(asked[0].get("model")).toBe(model);
    expect(asked[0].get("dtype")).toBe("float32"); // a CPU server defaults to fp32
    expect(within(figure).getByRole("row", { name: /Weights/ })).toHaveTextContent("988.0 MB");
    expect(within(figure).getByRole("row", { name: /KV cache/ })).toHaveTextContent("96.0 MB");
    expect(within(figure).getByRole("row", { name: /SAE/ })).toHaveTextContent("0 B");
    expect(within(figure).getByRole("row", { name: /Total needed/ })).toHaveTextContent("1.3 GB");
    expect(within(figure).getByRole("row", { name: /Free RAM/ })).toHaveTextContent("20.0 GB");
    expect(figure).toHaveTextContent("Fits in free memory (6% of it).");

    await user.click(within(dialog).getByRole("combobox", { name: "Precision" }));
    await user.click(await screen.findByRole("option", { name: /4-bit/ }));
    await waitFor(() => expect(asked.at(-1)?.get("quantization")).toBe("4bit"));
    expect(router.state.location.search).toMatchObject({ load: model, precision: "4bit" });
    await waitFor(() =>
      expect(within(dialog).getByRole("row", { name: /Weights/ })).toHaveTextContent("300.0 MB"),
    );

    await user.click(within(dialog).getByRole("button", { name: "Load" }));
    await waitFor(() =>
      expect(loadBody).toEqual({ model, dtype: "auto", quantization: "4bit", force: false }),
    );
    await waitFor(() => expect(screen.queryByRole("dialog", { name: "Load model" })).not.toBeInTheDocument());
    expect(await screen.findByText(`Loaded ${model}`)).toBeInTheDocument();
  });

  it("offers Load anyway (force) when the server refuses for memory", async () => {
    const bodies: { force?: boolean }[] = [];
    server.use(
      http.get(api("/api/models/estimate"), () => HttpResponse.json(estimate())),
      http.post(api("/api/models/load"), async ({ request }) => {
        const b = (await request.json()) as { force?: boolean };
        bodies.push(b);
        if (!b.force)
          return HttpResponse.json(envelope("needs 30.0 GB, 20.0 GB free", "insufficient_memory", "model"), {
            status: 400,
          });
        return HttpResponse.json({ model: status().model, sae_detached: null, memory_estimate: null });
      }),
    );
    const { user } = renderApp(`/models?load=${encodeURIComponent(model)}`);
    const dialog = await screen.findByRole("dialog", { name: "Load model" });
    await within(dialog).findByRole("figure", { name: "Memory estimate" });
    await user.click(within(dialog).getByRole("button", { name: "Load" }));
    const alert = await within(dialog).findByRole("alert");
    expect(alert).toHaveTextContent("Not enough memory");
    expect(alert).toHaveTextContent("needs 30.0 GB, 20.0 GB free");
    await user.click(within(dialog).getByRole("button", { name: "Load anyway" }));
    await waitFor(() => expect(bodies.at(-1)?.force).toBe(true));
    await waitFor(() => expect(screen.queryByRole("dialog", { name: "Load model" })).not.toBeInTheDocument());
  });

  it("a model that needs its own code: the error says so, and Trust remote code sends the consent", async () => {
    const bodies: { trust_remote_code?: boolean }[] = [];
    server.use(
      http.get(api("/api/models/estimate"), () => HttpResponse.json(estimate())),
      http.post(api("/api/models/load"), async ({ request }) => {
        const b = (await request.json()) as { trust_remote_code?: boolean };
        bodies.push(b);
        if (!b.trust_remote_code)
          return HttpResponse.json(
            envelope(
              "'org/custom' needs its own Python code",
              "trust_remote_code_required",
              "trust_remote_code",
            ),
            { status: 400 },
          );
        return HttpResponse.json({ model: status().model, sae_detached: null, memory_estimate: null });
      }),
    );
    const { user } = renderApp(`/models?load=${encodeURIComponent(model)}`);
    const dialog = await screen.findByRole("dialog", { name: "Load model" });
    await within(dialog).findByRole("figure", { name: "Memory estimate" });
    await user.click(within(dialog).getByRole("button", { name: "Load" }));
    const alert = await within(dialog).findByRole("alert");
    expect(alert).toHaveTextContent("needs its own Python code");
    expect(alert).toHaveTextContent("tick “Trust remote code”");
    expect(bodies[0]).not.toHaveProperty("trust_remote_code"); // left out: the server's setting applies
    await user.click(within(dialog).getByRole("checkbox", { name: /Trust remote code/ }));
    await user.click(within(dialog).getByRole("button", { name: "Load" }));
    await waitFor(() => expect(bodies.at(-1)?.trust_remote_code).toBe(true));
    await waitFor(() => expect(screen.queryByRole("dialog", { name: "Load model" })).not.toBeInTheDocument());
  });

  it("ends a failed load in an error with Retry, not a spinner", async () => {
    let calls = 0;
    server.use(
      http.get(api("/api/models/estimate"), () =>
        HttpResponse.json(envelope("no safetensors headers", "not_found"), { status: 404 }),
      ),
      http.post(api("/api/models/load"), () => {
        calls += 1;
        return HttpResponse.json(envelope("config.json is not a model config", "model_load_error", "model"), {
          status: 400,
        });
      }),
    );
    const { user } = renderApp(`/models?load=${encodeURIComponent(model)}`);
    const dialog = await screen.findByRole("dialog", { name: "Load model" });
    expect(await within(dialog).findByText(/No memory estimate: no safetensors headers/)).toBeInTheDocument();
    await user.click(within(dialog).getByRole("button", { name: "Load" }));
    const alert = await within(dialog).findByRole("alert");
    expect(alert).toHaveTextContent("Load failed");
    expect(alert).toHaveTextContent("config.json is not a model config");
    expect(within(dialog).queryByRole("status")).not.toBeInTheDocument();
    await user.click(within(dialog).getByRole("button", { name: "Retry" }));
    await waitFor(() => expect(calls).toBe(2));
  });
});

describe("Models tab: preview before downloading", () => {
  it("shows the Hub card and memory per precision; remote code needs consent before the download", async () => {
    let asked = "";
    let body: unknown;
    server.use(
      http.get(api("/api/hub/models/*"), ({ request }) => {
        asked = new URL(request.url).pathname;
        return HttpResponse.json(modelPreview());
      }),
      http.post(api("/api/downloads"), async ({ request }) => {
        body = await request.json();
        return HttpResponse.json(job({ repo_id: "org/custom-7b" }), { status: 202 });
      }),
    );
    const { user, router } = renderApp("/models");
    await user.type(
      await screen.findByRole("textbox", { name: /Hugging Face model repository/ }),
      "org/custom-7b",
    );
    await user.click(screen.getByRole("button", { name: "Preview" }));
    const dialog = await screen.findByRole("dialog", { name: "Preview org/custom-7b" });
    expect(router.state.location.search).toMatchObject({ preview: "org/custom-7b" });
    await within(dialog).findByText("CustomForCausalLM");
    expect(decodeURIComponent(asked)).toContain("/api/hub/models/org/custom-7b");
    for (const text of ["123.5K", "789", "7.0B", "4,096 tokens", "text-generation", "apache-2.0", "+2 more"])
      expect(dialog).toHaveTextContent(text);
    expect(within(dialog).getAllByRole("listitem")).toHaveLength(11); // 10 tags + "+2 more"
    expect(dialog).toHaveTextContent("Gated (manual)");
    expect(dialog).toHaveTextContent("runs its own Python code");
    const rows = within(dialog).getAllByRole("row");
    expect(rows).toHaveLength(6);
    expect(within(dialog).getByRole("row", { name: /fp32/ })).toHaveTextContent("no"); // 29 GB > 20 GB free
    expect(within(dialog).getByRole("row", { name: /4-bit/ })).toHaveTextContent("yes");

    const download = within(dialog).getByRole("button", { name: /^Download/ });
    expect(download).toBeDisabled(); // remote code: consent first
    await user.click(within(dialog).getByRole("checkbox", { name: "Trust remote code" }));
    await user.click(within(dialog).getByRole("radio", { name: "4-bit" }));
    await user.click(within(dialog).getByRole("button", { name: "Download (load at 4bit later)" }));
    await waitFor(() =>
      expect(body).toEqual({
        kind: "model",
        repo_id: "org/custom-7b",
        revision: null,
        trust_remote_code: true,
      }),
    );
    await waitFor(() => expect(screen.queryByRole("dialog")).not.toBeInTheDocument());
    expect(router.state.location.search).toMatchObject({ precision: "4bit" });
    expect(router.state.location.search).not.toHaveProperty("preview");
    // the form's own checkbox is the same consent
    expect(screen.getByRole("checkbox", { name: "Trust remote code" })).toBeChecked();
  });

  it("a repo the Hub does not know shows the server's message and hint", async () => {
    server.use(
      http.get(api("/api/hub/models/*"), () =>
        HttpResponse.json(
          envelope("Repository 'org/nope' not found on the Hub.", "repo_not_found", "repo_id"),
          {
            status: 404,
          },
        ),
      ),
    );
    renderApp("/models?preview=org%2Fnope");
    const dialog = await screen.findByRole("dialog", { name: "Preview org/nope" });
    const alert = await within(dialog).findByRole("alert");
    expect(alert).toHaveTextContent("not found on the Hub");
    expect(alert).toHaveTextContent("Check the repo id");
  });
});
