"""fit_model's arithmetic against known cases, and its lookups."""

from __future__ import annotations

import dataclasses

import pytest

from localmcp.servers.inference import fit
from localmcp.shared.errors import BadInput

GIB = fit.GIB
QWEN_32B = fit.find_known("qwen2.5:32b")
assert QWEN_32B is not None
ARCH_32B = QWEN_32B[1]


def card(gb: float) -> fit.GpuMemory:
    return fit.GpuMemory(int(gb * GIB), None, "test")


def test_32b_at_4bit_fits_a_22gb_card_at_8k_while_fp16_does_not() -> None:
    four_bit = fit.fit(ARCH_32B, quantization="Q4_K_M", context=8192, kv_cache="f16", gpu=card(22))
    assert four_bit.fits
    assert 0 < four_bit.headroom_gb < 22
    fp16 = fit.fit(ARCH_32B, quantization="F16", context=8192, kv_cache="f16", gpu=card(22))
    assert not fp16.fits
    assert fp16.weights_gb > 60  # 32.8 B parameters x 2 bytes
    assert fp16.max_context == 0
    assert "smaller quantisation" in fp16.advice


def test_breakdown_matches_the_published_formulas() -> None:
    report = fit.fit(ARCH_32B, quantization="Q4_K_M", context=8192, kv_cache="f16", gpu=card(80))
    weights = ARCH_32B.parameters * 4.85 / 8  # type: ignore[operator]
    kv = 2 * 64 * 8 * 128 * 8192 * 2  # layers x KV heads x head dim x context x f16
    assert report.weights_gb == pytest.approx(weights / GIB, abs=0.01)
    assert report.kv_cache_gb == pytest.approx(kv / GIB, abs=0.01) == pytest.approx(2.0)
    assert report.needed_gb == pytest.approx(
        report.weights_gb + report.kv_cache_gb + report.overhead_gb, abs=0.02
    )
    assert 0.5 < report.overhead_gb < 2


def test_largest_context_fits_and_one_step_more_does_not() -> None:
    gpu = card(22)
    report = fit.fit(ARCH_32B, quantization="Q4_K_M", context=8192, kv_cache="f16", gpu=gpu)
    best = report.max_context
    assert best % fit.CONTEXT_STEP == 0 and best >= 8192
    assert not report.max_context_is_model_limit
    at_best = fit.fit(ARCH_32B, quantization="Q4_K_M", context=best, kv_cache="f16", gpu=gpu)
    beyond = fit.fit(
        ARCH_32B,
        quantization="Q4_K_M",
        context=best + fit.CONTEXT_STEP,
        kv_cache="f16",
        gpu=gpu,
    )
    assert at_best.fits and not beyond.fits


def test_quantised_kv_cache_stretches_the_context() -> None:
    gpu = card(22)
    f16 = fit.fit(ARCH_32B, quantization="Q4_K_M", context=8192, kv_cache="f16", gpu=gpu)
    q8 = fit.fit(ARCH_32B, quantization="Q4_K_M", context=8192, kv_cache="q8_0", gpu=gpu)
    q4 = fit.fit(ARCH_32B, quantization="Q4_K_M", context=8192, kv_cache="q4_0", gpu=gpu)
    assert q8.kv_cache_gb == pytest.approx(f16.kv_cache_gb * 34 / 64, abs=0.01)
    assert f16.max_context < q8.max_context < q4.max_context


def test_a_large_card_is_capped_at_the_models_trained_context() -> None:
    report = fit.fit(ARCH_32B, quantization="Q4_K_M", context=8192, kv_cache="f16", gpu=card(141))
    assert report.max_context == 32_768
    assert report.max_context_is_model_limit


def test_8b_at_q4_fits_a_12gb_card_and_70b_at_q4_does_not_fit_24gb() -> None:
    llama8 = fit.find_known("llama3.1:8b")
    llama70 = fit.find_known("llama3.3:70b")
    assert llama8 and llama70
    small = fit.fit(llama8[1], quantization="Q4_K_M", context=8192, kv_cache="f16", gpu=card(12))
    big = fit.fit(llama70[1], quantization="Q4_K_M", context=8192, kv_cache="f16", gpu=card(24))
    assert small.fits and not big.fits


def test_free_memory_is_what_counts_when_it_is_known() -> None:
    gpu = fit.GpuMemory(int(24 * GIB), int(10 * GIB), "nvml")
    report = fit.fit(ARCH_32B, quantization="Q4_K_M", context=4096, kv_cache="f16", gpu=gpu)
    assert not report.fits
    assert (report.gpu_total_gb, report.gpu_free_gb, report.available_gb) == (24.0, 10.0, 10.0)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("qwen2.5:32b-instruct-q4_K_M", "Qwen2.5-32B"),
        ("Qwen/Qwen2.5-72B-Instruct", "Qwen2.5-72B"),
        ("qwen2.5:7b", "Qwen2.5-7B"),
        ("meta-llama/Llama-3.1-8B-Instruct", "Llama-3.1-8B"),
        ("llama3.2:3b", "Llama-3.2-3B"),
        ("mistral:7b", "Mistral-7B-v0.3"),
        ("gemma2:27b", "Gemma-2-27B"),
        ("SmolLM2-135M-Instruct", "SmolLM2-135M"),
    ],
)
def test_known_families_are_found_by_common_spellings(name: str, expected: str) -> None:
    found = fit.find_known(name)
    assert found is not None and found[0] == expected
    assert "config.json" in found[2]


def test_unknown_family_is_not_guessed() -> None:
    assert fit.find_known("my-private-model") is None


@pytest.mark.parametrize(
    ("text", "name", "bits"),
    [
        ("Q4_K_M", "Q4_K_M", 4.85),
        ("q4_0", "Q4_0", 4.5),
        ("Q5_K_M", "Q5_K_M", 5.7),
        ("q6_k", "Q6_K", 6.56),
        ("Q8_0", "Q8_0", 8.5),
        ("fp16", "F16", 16.0),
        ("4bit", "INT4", 4.25),
        ("4.5", "4.5 bits", 4.5),
    ],
)
def test_quantisation_names_map_to_real_bits_per_weight(text: str, name: str, bits: float) -> None:
    assert fit.bits_per_weight(text) == (name, bits)


def test_bad_quantisation_and_cache_type_name_the_choices() -> None:
    with pytest.raises(BadInput, match="Q4_K_M"):
        fit.bits_per_weight("Q9_X")
    with pytest.raises(BadInput, match="between 1 and 32"):
        fit.bits_per_weight("64")
    with pytest.raises(BadInput, match="q8_0"):
        fit.kv_bytes_per_element("int3")


def test_quantisation_is_read_from_a_model_tag() -> None:
    assert fit.quantization_in_name("qwen2.5:32b-instruct-q4_K_M") == "Q4_K_M"
    assert fit.quantization_in_name("llama3.1:8b-instruct-q8_0") == "Q8_0"
    assert fit.quantization_in_name("llama3.1:8b") is None


def test_architecture_comes_from_ollama_model_info() -> None:
    info = {
        "general.architecture": "qwen2",
        "general.parameter_count": 7_615_616_512,
        "qwen2.block_count": 28,
        "qwen2.attention.head_count": 28,
        "qwen2.attention.head_count_kv": 4,
        "qwen2.embedding_length": 3584,
        "qwen2.context_length": 32_768,
    }
    arch = fit.architecture_from_model_info(info)
    assert (arch.parameters, arch.layers, arch.kv_heads, arch.head_dim) == (
        7_615_616_512,
        28,
        4,
        128,
    )
    assert arch.context_length == 32_768


def test_missing_facts_are_named() -> None:
    with pytest.raises(BadInput, match="layers, kv_heads, head_dim"):
        fit.fit(
            fit.Architecture(parameters=7_000_000_000),
            quantization="Q4_K_M",
            context=4096,
            kv_cache="f16",
            gpu=card(24),
        )


def test_nvml_reports_a_gpu_or_nothing_never_an_error() -> None:
    try:
        import pynvml  # noqa: F401
    except ImportError:
        assert fit.nvml_memory() is None
    else:
        measured = fit.nvml_memory()
        assert measured is None or measured.total > 0


@pytest.mark.parametrize(
    ("field", "value"),
    [("parameters", 0), ("layers", 0), ("kv_heads", -1), ("head_dim", 0)],
)
def test_non_positive_architecture_facts_are_refused(field: str, value: int) -> None:
    arch = dataclasses.replace(ARCH_32B, **{field: value})
    with pytest.raises(BadInput, match=field):
        fit.fit(arch, quantization="Q4_K_M", context=8192, kv_cache="f16", gpu=card(24))


@pytest.mark.parametrize(
    ("name", "value", "needle"),
    [
        ("gpu_memory_gb", float("inf"), "finite"),
        ("gpu_memory_gb", float("nan"), "finite"),
        ("gpu_memory_gb", 1e308, "at most"),
        ("gpu_memory_gb", 0, "at least"),
        ("parameters_billions", 1e-12, "at least"),
        ("parameters_billions", 1e300, "at most"),
        ("context", 10**40, "at most"),
        ("layers", 10**400, "at most"),
    ],
    ids=["inf", "nan", "1e308", "zero", "1e-12", "1e300", "1e40-tokens", "1e400-layers"],
)
def test_check_argument_refuses_non_finite_and_out_of_range_numbers(
    name: str, value: float, needle: str
) -> None:
    with pytest.raises(BadInput) as info:
        fit.check_argument(name, value)
    assert name in str(info.value) and needle in str(info.value)
    assert info.value.hint


def test_check_argument_passes_sensible_values_and_none() -> None:
    assert fit.check_argument("gpu_memory_gb", 24) == 24
    assert fit.check_argument("parameters_billions", 0.135) == 0.135
    assert fit.check_argument("layers", None) is None
