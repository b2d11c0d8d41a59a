"""Real huggingface_hub downloads against the FakeHub: file choice, progress, resume, errors."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from millm.errors import NotFound, Unauthorized
from millm.hub.download import DownloadCancelled, Progress, pull_model, pull_sae
from tests.hub.fake_hub import FakeHub

MODEL_FILES = {
    "config.json": '{"model_type": "llama"}',
    "tokenizer.json": "{}",
    "tokenizer_config.json": "{}",
    "README.md": "# readme",
    "model.safetensors": b"",  # replaced per test
    "pytorch_model.bin": b"old weights",
    "original/consolidated.pth": b"not wanted",
}


def _model_repo(hub: FakeHub, repo_id: str = "org/tiny", size: int = 400_000, **kwargs: object) -> bytes:
    weights = os.urandom(size)
    hub.add_repo(repo_id, {**MODEL_FILES, "model.safetensors": weights}, **kwargs)  # type: ignore[arg-type]
    return weights


def _partials(cache: Path) -> list[Path]:
    return [p for p in cache.rglob("*") if p.name.endswith(".incomplete")]


def test_pull_model_fetches_only_needed_files_and_reports_progress(fake_hub: FakeHub, tmp_path: Path, small_chunks: int) -> None:
    weights = _model_repo(fake_hub)
    events: list[Progress] = []
    folder = pull_model("org/tiny", cache_dir=tmp_path, progress_cb=events.append, endpoint=fake_hub.endpoint)

    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]
    assert (folder / "model.safetensors").read_bytes() == weights
    assert not fake_hub.gets("pytorch_model.bin") and not fake_hub.gets("README.md")
    last = events[-1]
    assert last.files_done == last.files_total == 4
    assert last.bytes_done == last.bytes_total == len(weights) + sum(len(MODEL_FILES[n]) for n in ("config.json", "tokenizer.json", "tokenizer_config.json"))
    byte_counts = [e.bytes_done for e in events]
    assert byte_counts == sorted(byte_counts)  # monotonic
    assert any(0 < e.bytes_done < last.bytes_total for e in events)  # intermediate progress
    ref = tmp_path / "models--org--tiny" / "refs" / "main"
    assert ref.read_text() == folder.name


def test_bin_weights_only_when_no_safetensors(fake_hub: FakeHub, tmp_path: Path) -> None:
    fake_hub.add_repo("org/old", {"config.json": "{}", "pytorch_model.bin": b"w" * 10, "training_args.bin": b"x"})
    folder = pull_model("org/old", cache_dir=tmp_path, endpoint=fake_hub.endpoint)
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "pytorch_model.bin"]


def test_endpoint_from_env_at_call_time(fake_hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _model_repo(fake_hub, size=1000)
    monkeypatch.setenv("HF_ENDPOINT", fake_hub.endpoint)  # set after huggingface_hub was imported
    assert (pull_model("org/tiny", cache_dir=tmp_path) / "config.json").exists()


def test_dropped_connection_resumes_with_range(fake_hub: FakeHub, tmp_path: Path, small_chunks: int) -> None:
    weights = _model_repo(fake_hub, size=600_000)
    fake_hub.drop_once("org/tiny", "model.safetensors", after_bytes=300_000)
    folder = pull_model("org/tiny", cache_dir=tmp_path, endpoint=fake_hub.endpoint)

    assert (folder / "model.safetensors").read_bytes() == weights
    gets = fake_hub.gets("model.safetensors")
    assert len(gets) == 2 and gets[0]["range"] is None
    start = int(gets[1]["range"].removeprefix("bytes=").rstrip("-"))
    assert 0 < start <= 300_000 and start % small_chunks == 0
    assert not _partials(tmp_path)


def test_cancel_leaves_no_partial_file(fake_hub: FakeHub, tmp_path: Path, small_chunks: int) -> None:
    _model_repo(fake_hub, size=600_000)
    release = fake_hub.pause_once("org/tiny", "model.safetensors", after_bytes=200_000)
    cancel = threading.Event()
    seen = threading.Event()

    def on_progress(p: Progress) -> None:
        if p.current_file == "model.safetensors" and p.bytes_done > 100_000:
            seen.set()

    errors: list[BaseException] = []

    def run() -> None:
        try:
            pull_model("org/tiny", cache_dir=tmp_path, progress_cb=on_progress, endpoint=fake_hub.endpoint, cancel=cancel)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    assert seen.wait(10)
    assert _partials(tmp_path)  # the transfer is really in flight
    cancel.set()
    release.set()
    thread.join(10)
    assert len(errors) == 1 and isinstance(errors[0], DownloadCancelled)
    assert not _partials(tmp_path)
    snapshot = next((tmp_path / "models--org--tiny" / "snapshots").iterdir())
    assert not (snapshot / "model.safetensors").exists()


def test_private_repo_needs_token(fake_hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _model_repo(fake_hub, "org/private", size=1000, private=True, tokens={"hf_secret"})
    with pytest.raises(Unauthorized) as info:
        pull_model("org/private", cache_dir=tmp_path, endpoint=fake_hub.endpoint)
    assert "HF_TOKEN" in info.value.message and info.value.param == "repo_id"
    with pytest.raises(Unauthorized):
        pull_model("org/private", cache_dir=tmp_path, endpoint=fake_hub.endpoint, token="wrong")

    assert (pull_model("org/private", cache_dir=tmp_path, endpoint=fake_hub.endpoint, token="hf_secret") / "config.json").exists()
    monkeypatch.setenv("HF_TOKEN", "hf_secret")  # the usual way: the environment
    assert pull_model("org/private", cache_dir=tmp_path / "env", endpoint=fake_hub.endpoint).is_dir()
    assert fake_hub.requests[-1]["authorization"] == "Bearer hf_secret"


def test_unknown_repo_and_revision_are_not_found(fake_hub: FakeHub, tmp_path: Path) -> None:
    _model_repo(fake_hub, size=1000)
    with pytest.raises(NotFound) as info:
        pull_model("org/missing", cache_dir=tmp_path, endpoint=fake_hub.endpoint)
    assert info.value.code == "repo_not_found"
    with pytest.raises(NotFound) as info:
        pull_model("org/tiny", "nope", cache_dir=tmp_path, endpoint=fake_hub.endpoint)
    assert info.value.param == "revision"


def test_pull_sae_folder(fake_hub: FakeHub, tmp_path: Path) -> None:
    fake_hub.add_repo(
        "google/gemma-scope-fake",
        {
            "layer_0/width_16k/average_l0_10/params.npz": b"a" * 100,
            "layer_0/width_16k/average_l0_20/params.npz": b"b" * 100,
            "layer_1/width_16k/average_l0_10/params.npz": b"c" * 100,
            "README.md": "x",
        },
    )
    folder = pull_sae("google/gemma-scope-fake", "layer_0/width_16k/average_l0_10/", cache_dir=tmp_path, endpoint=fake_hub.endpoint)
    assert folder.name == "average_l0_10" and (folder / "params.npz").read_bytes() == b"a" * 100
    assert len(fake_hub.gets("params.npz")) == 1
    with pytest.raises(NotFound):
        pull_sae("google/gemma-scope-fake", "layer_9", cache_dir=tmp_path, endpoint=fake_hub.endpoint)


def test_real_tiny_llama_round_trip(fake_hub: FakeHub, tmp_path: Path, tiny_llama_dir: tuple[Path, int]) -> None:
    from transformers import AutoModelForCausalLM

    src, n_params = tiny_llama_dir
    fake_hub.add_folder("org/tiny-llama", src)
    folder = pull_model("org/tiny-llama", cache_dir=tmp_path, endpoint=fake_hub.endpoint)
    model = AutoModelForCausalLM.from_pretrained(folder)
    assert sum(p.numel() for p in model.parameters()) == n_params


def test_gated_repo_is_forbidden(fake_hub: FakeHub, tmp_path: Path) -> None:
    from millm.errors import Forbidden

    _model_repo(fake_hub, "org/gated", size=100, gated=True, tokens={"granted"})
    with pytest.raises(Forbidden):
        pull_model("org/gated", cache_dir=tmp_path, endpoint=fake_hub.endpoint, token="not-granted")
    with pytest.raises(Unauthorized):
        pull_model("org/gated", cache_dir=tmp_path, endpoint=fake_hub.endpoint)
    assert pull_model("org/gated", cache_dir=tmp_path, endpoint=fake_hub.endpoint, token="granted").is_dir()


def test_unreachable_hub_is_download_error(tmp_path: Path) -> None:
    from millm.errors import DownloadError

    hub = FakeHub().start()
    endpoint = hub.endpoint
    hub.stop()
    with pytest.raises(DownloadError):
        pull_model("org/tiny", cache_dir=tmp_path, endpoint=endpoint)


def test_progress_bar_counts_xet_bytes_once() -> None:
    """huggingface_hub's Xet reporter drives our bar class with written and network bytes."""
    from types import SimpleNamespace

    from huggingface_hub.utils._xet_progress_reporting import XetDownloadProgressReporter

    from millm.hub.download import _bar_class

    counted: list[int] = []
    reporter = XetDownloadProgressReporter(
        reconstruction_desc="f", total=1000, log_level=0, tqdm_class=_bar_class(counted.append)
    )
    for done, transferred in ((400, 300), (1000, 700)):
        reporter.update_progress(SimpleNamespace(
            total_bytes_completed=done, total_transfer_bytes_completed=transferred, total_bytes=1000,
            total_bytes_completion_rate=None, total_transfer_bytes_completion_rate=None,
        ))  # fmt: skip
    reporter.close()
    assert sum(counted) == 1000
