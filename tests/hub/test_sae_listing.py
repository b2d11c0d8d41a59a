"""find_saes / read_config: a repo's SAE folders from its file list, per layout (pure, no Hub)."""

from __future__ import annotations

from millm.hub.sae_listing import find_saes, read_config


def test_gemma_scope_folders_from_paths_and_repo_id() -> None:
    files = {f"layer_{layer}/width_{w}/average_l0_{l0}/params.npz": size
             for layer, w, l0, size in [(1, "16k", 71, 300), (1, "16k", 12, 300), (0, "65k", 40, 900),
                                        (1, "1m", 90, 5000)]}
    files["embedding/width_4k/average_l0_6/params.npz"] = 80
    files["README.md"] = 10
    saes = find_saes(files, "google/gemma-scope-2b-pt-res")
    assert [(s.layer, s.width, s.l0) for s in saes] == [
        (None, 4096, 6.0), (0, 65536, 40.0), (1, 16384, 12.0), (1, 16384, 71.0), (1, 1048576, 90.0)]
    one = saes[3]
    assert one.path == "layer_1/width_16k/average_l0_71" and one.format == "gemma_scope"
    assert one.site == "resid_post" and one.hook_name == "blocks.1.hook_resid_post"
    assert one.size_bytes == 300 and one.files == 1 and one.config_file is None
    assert saes[0].site == "embedding"
    mlp = find_saes({"layer_3/width_16k/average_l0_50/params.npz": 1}, "google/gemma-scope-9b-pt-mlp")[0]
    assert mlp.site == "mlp_out" and mlp.hook_name == "blocks.3.hook_mlp_out"


def test_saelens_folders_read_their_configs() -> None:
    files = {"blocks.8.hook_resid_pre/cfg.json": 900, "blocks.8.hook_resid_pre/sae_weights.safetensors": 4000,
             "blocks.8.hook_resid_pre/sparsity.safetensors": 100,
             "blocks.2.hook_mlp_out/cfg.json": 900, "blocks.2.hook_mlp_out/sae_weights.safetensors": 4000,
             "notes/readme.txt": 5}
    saes = find_saes(files, "jbloom/GPT2-Small-SAEs")
    assert [(s.path, s.layer, s.site) for s in saes] == [("blocks.2.hook_mlp_out", 2, "mlp_out"),
                                                         ("blocks.8.hook_resid_pre", 8, "resid_pre")]
    assert saes[1].size_bytes == 5000 and saes[1].files == 3 and saes[1].config_file == "blocks.8.hook_resid_pre/cfg.json"
    cfg = {"architecture": "jumprelu", "d_in": 768, "d_sae": 24576,
           "metadata": {"hook_name": "blocks.8.hook_resid_pre", "neuronpedia_id": "gpt2-small/8-res-jb"}}
    full = read_config(saes[1], cfg)
    assert (full.d_in, full.width, full.architecture, full.neuronpedia_id) == (768, 24576, "jumprelu",
                                                                               "gpt2-small/8-res-jb")
    flat = read_config(saes[0], {"d_in": 768, "d_sae": 2048, "hook_point": "blocks.3.hook_mlp_out"})
    assert (flat.width, flat.layer, flat.hook_name) == (2048, 3, "blocks.3.hook_mlp_out")  # the config wins
    broken = read_config(saes[0], {"d_in": "wide", "d_sae": None, "architecture": 7, "metadata": "x"})
    assert broken.d_in is None and broken.architecture is None and broken.layer == 2


def test_root_saelens_repo_sparsify_llama_scope_gemma_scope_2_and_dictionary_learning() -> None:
    root = find_saes({"cfg.json": 1, "sae_weights.safetensors": 9, "README.md": 2}, "me/my-sae")
    assert [(s.path, s.format, s.size_bytes, s.files) for s in root] == [("", "saelens", 12, 3)]

    sparsify = find_saes({"layers.4/cfg.json": 1, "layers.4/sae.safetensors": 8, "layers.4.mlp/cfg.json": 1,
                          "layers.4.mlp/sae.safetensors": 8, "embed_tokens/cfg.json": 1,
                          "embed_tokens/sae.safetensors": 8, "config.json": 3}, "EleutherAI/sae-llama")
    assert {(s.path, s.layer, s.site) for s in sparsify} == {("layers.4", 4, "resid_post"),
                                                            ("layers.4.mlp", 4, "mlp_out"),
                                                            ("embed_tokens", None, "embedding")}
    sp = next(s for s in sparsify if s.path == "layers.4")
    assert read_config(sp, {"d_in": 4096, "expansion_factor": 32, "num_latents": 0, "k": 192}).width == 131072

    llama = find_saes({"Llama3_1-8B-Base-L15R-8x/hyperparams.json": 1,
                       "Llama3_1-8B-Base-L15R-8x/checkpoints/final.safetensors": 100}, "fnlp/Llama3_1-8B-Base-LXR-8x")
    assert [(s.path, s.layer, s.site, s.size_bytes, s.files) for s in llama] == [
        ("Llama3_1-8B-Base-L15R-8x", 15, "resid_post", 101, 2)]
    full = read_config(llama[0], {"d_model": 4096, "d_sae": 32768, "hook_point_in": "blocks.15.hook_resid_post"})
    assert (full.d_in, full.width, full.hook_name) == (4096, 32768, "blocks.15.hook_resid_post")

    gs2 = find_saes({"resid_post/layer_5_width_16k_l0_small/params.safetensors": 5,
                     "resid_post/layer_5_width_16k_l0_small/config.json": 1,
                     "mlp_out_all/layer_2_width_262k_l0_big/params.safetensors": 9,
                     "mlp_out_all/layer_2_width_262k_l0_big/config.json": 1}, "google/gemma-scope-2-1b-pt")
    assert [(s.site, s.layer, s.width, s.l0_label) for s in gs2] == [("mlp_out", 2, 262144, "big"),
                                                                     ("resid_post", 5, 16384, "small")]

    dl = find_saes({"resid_post_layer_3/trainer_1/ae.pt": 7, "resid_post_layer_3/trainer_1/config.json": 1},
                   "saprmarks/pythia-70m-saes")
    assert dl[0].layer == 3 and dl[0].format == "dictionary_learning"
    full = read_config(dl[0], {"trainer": {"activation_dim": 512, "dict_size": 4096, "layer": 3}})
    assert (full.d_in, full.width) == (512, 4096)


def test_a_model_repo_has_no_saes() -> None:
    assert find_saes({"config.json": 1, "model.safetensors": 100, "tokenizer.json": 5}, "org/model") == []
