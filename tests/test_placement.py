"""millm.placement: "auto" resolved once, bad combinations named."""

import pytest
import torch

from millm.errors import InvalidRequest
from millm.placement import Placement, resolve_placement


def test_auto_on_this_machine_matches_torch() -> None:
    p = resolve_placement()
    assert p.device == ("cuda" if torch.cuda.is_available() else "cpu")
    if p.device == "cpu":
        assert p == Placement("cpu", "float32", "none")
        assert p.torch_dtype() is torch.float32 and p.torch_device() == torch.device("cpu")


def test_cpu_auto_dtype_is_float32_or_bf16_when_quantized() -> None:
    assert resolve_placement("cpu").dtype == "float32"
    assert resolve_placement("cpu", "auto", "4bit") == Placement("cpu", "bfloat16", "4bit")
    assert resolve_placement("cpu", "float16", "8bit").bytes_per_value == 2.0


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only answers")
def test_cuda_without_a_gpu_estimates_but_does_not_load() -> None:
    p = resolve_placement("cuda")
    assert p == Placement("cuda", "bfloat16", "none") and p.device_kind == "cuda"
    assert resolve_placement("cuda:1").device_kind == "cuda"
    with pytest.raises(InvalidRequest, match="CUDA is not available") as e:
        resolve_placement("cuda", require_device=True)
    assert e.value.param == "device"


@pytest.mark.parametrize(("args", "param"), [
    (("cpu", "float32", "4bit"), "dtype"),
    (("cpu", "float64", "none"), "dtype"),
    (("cpu", "auto", "2bit"), "quantization"),
    (("", "auto", "none"), "device"),
])
def test_bad_combinations_name_the_field(args: tuple[str, str, str], param: str) -> None:
    with pytest.raises(InvalidRequest) as e:
        resolve_placement(*args)
    assert e.value.param == param


def test_placement_is_frozen() -> None:
    p = resolve_placement("cpu")
    with pytest.raises(AttributeError):
        p.dtype = "float16"  # type: ignore[misc]
