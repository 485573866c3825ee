"""Will a model fit a GPU? Weights + KV cache + runtime overhead against GPU memory.

Pure functions; the only outside call is ``nvml_memory`` (nvidia-ml-py, optional).

- **Weights** = parameters x bits per weight / 8. GGUF quantisations use their real average
  bits per weight including block scales and the higher-precision layers of the mix
  (``BITS_PER_WEIGHT``), e.g. Q4_K_M is about 4.85, not 4.
- **KV cache** = 2 (K and V) x layers x KV heads x head dim x context x bytes per element of
  the cache type (f16 2, q8_0 34/32, q4_0 18/32: llama.cpp's block sizes).
- **Overhead** = CUDA context and library workspaces (``CUDA_CONTEXT_BYTES``, 0.5 GiB) plus
  the compute buffer for one 512-token batch (``ACTIVATION_TOKENS``): 16 float32 activations
  per hidden unit plus float32 logits over the vocabulary. Flash attention is assumed, so no
  context x context score matrix is counted.

Sizes are reported in GB meaning GiB (2^30 bytes), the unit GPU memory is quoted in.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass, replace
from typing import Any

from pydantic import BaseModel, Field

from localmcp.shared.errors import BadInput

logger = logging.getLogger(__name__)

GIB = 1024**3
CUDA_CONTEXT_BYTES = GIB // 2
ACTIVATION_TOKENS = 512
ACTIVATION_FLOATS_PER_HIDDEN = 16
DEFAULT_VOCAB = 128_000
CONTEXT_STEP = 256
#: the longest context searched when the model's own limit is unknown
SEARCH_LIMIT = 4 * 1024 * 1024

#: Accepted range and an example of each number fit_model takes (the tool's argument limits
#: too): beyond these the figures mean nothing, and huge ones overflow the arithmetic.
LIMITS: dict[str, tuple[float, float, str]] = {
    "gpu_memory_gb": (0.01, 16_384, "24"),
    "parameters_billions": (0.001, 100_000, "7 for a 7B model"),
    "parameters": (1e6, 1e14, "7e9"),
    "context": (1, 100_000_000, "8192"),
    "layers": (1, 10_000, "32"),
    "kv_heads": (1, 10_000, "8"),
    "head_dim": (1, 65_536, "128"),
}

#: Average bits per weight of whole model files (llama.cpp quantize tables and block layouts;
#: K-quant mixes keep some tensors at higher precision, hence e.g. 4.85 for Q4_K_M).
BITS_PER_WEIGHT: dict[str, float] = {
    "F32": 32.0,
    "F16": 16.0,
    "BF16": 16.0,
    "FP8": 8.0,
    "INT8": 8.0,
    "Q8_0": 8.5,
    "Q6_K": 6.56,
    "Q5_1": 6.0,
    "Q5_K_M": 5.7,
    "Q5_K_S": 5.54,
    "Q5_0": 5.5,
    "Q4_1": 5.0,
    "Q4_K_M": 4.85,
    "Q4_K_S": 4.58,
    "Q4_0": 4.5,
    "IQ4_NL": 4.5,
    "IQ4_XS": 4.25,
    "INT4": 4.25,
    "Q3_K_L": 4.27,
    "Q3_K_M": 3.91,
    "Q3_K_S": 3.5,
    "IQ3_M": 3.66,
    "IQ3_S": 3.44,
    "IQ3_XXS": 3.06,
    "Q2_K": 2.96,
    "IQ2_M": 2.7,
    "IQ2_XS": 2.31,
    "IQ2_XXS": 2.06,
    "IQ1_M": 1.75,
    "IQ1_S": 1.56,
}
_QUANT_ALIASES = {
    "FP32": "F32",
    "FP16": "F16",
    "HALF": "F16",
    "8BIT": "INT8",
    "Q8": "Q8_0",
    "4BIT": "INT4",
    "AWQ": "INT4",
    "GPTQ": "INT4",
    "Q4": "Q4_K_M",
    "Q5": "Q5_K_M",
    "Q6": "Q6_K",
    "Q3": "Q3_K_M",
    "Q2": "Q2_K",
}
#: Bytes per cached element by KV cache type (llama.cpp ``--cache-type-k/-v``).
KV_CACHE_BYTES: dict[str, float] = {
    "f32": 4.0,
    "f16": 2.0,
    "bf16": 2.0,
    "q8_0": 34 / 32,
    "q5_1": 24 / 32,
    "q5_0": 22 / 32,
    "q4_1": 20 / 32,
    "q4_0": 18 / 32,
}


@dataclass(frozen=True)
class Architecture:
    """The facts the estimate needs; any may be unknown (None) until filled in."""

    parameters: int | None = None
    layers: int | None = None
    kv_heads: int | None = None
    head_dim: int | None = None
    hidden_size: int | None = None
    heads: int | None = None
    vocab_size: int | None = None
    context_length: int | None = None

    def missing(self) -> list[str]:
        """Names of the facts the estimate cannot do without."""
        needed = ("parameters", "layers", "kv_heads", "head_dim")
        return [name for name in needed if getattr(self, name) is None]


def _hf(repo: str) -> str:
    return f"built-in table: {repo} config.json"


#: Common families: (name pattern, display name, facts, source). Patterns match lower-cased
#: names with '_', ':', '/' and spaces turned into '-'.
KNOWN_MODELS: tuple[tuple[str, str, Architecture, str], ...] = (
    (
        r"qwen-?2\.5.*?\b7b",
        "Qwen2.5-7B",
        Architecture(7_615_616_512, 28, 4, 128, 3584, 28, 152_064, 32_768),
        _hf("Qwen/Qwen2.5-7B-Instruct"),
    ),
    (
        r"qwen-?2\.5.*?\b14b",
        "Qwen2.5-14B",
        Architecture(14_770_033_664, 48, 8, 128, 5120, 40, 152_064, 32_768),
        _hf("Qwen/Qwen2.5-14B-Instruct"),
    ),
    (
        r"(qwen-?2\.5|qwq|r1-distill-qwen).*?\b32b",
        "Qwen2.5-32B",
        Architecture(32_763_876_352, 64, 8, 128, 5120, 40, 152_064, 32_768),
        _hf("Qwen/Qwen2.5-32B-Instruct"),
    ),
    (
        r"qwen-?2\.5.*?\b72b",
        "Qwen2.5-72B",
        Architecture(72_706_203_648, 80, 8, 128, 8192, 64, 152_064, 32_768),
        _hf("Qwen/Qwen2.5-72B-Instruct"),
    ),
    (
        r"llama-?3(\.[0-9])?.*?\b8b",
        "Llama-3.1-8B",
        Architecture(8_030_261_248, 32, 8, 128, 4096, 32, 128_256, 131_072),
        _hf("meta-llama/Llama-3.1-8B-Instruct"),
    ),
    (
        r"llama-?3(\.[0-9])?.*?\b70b",
        "Llama-3.3-70B",
        Architecture(70_553_706_496, 80, 8, 128, 8192, 64, 128_256, 131_072),
        _hf("meta-llama/Llama-3.3-70B-Instruct"),
    ),
    (
        r"llama-?3\.2.*?\b3b",
        "Llama-3.2-3B",
        Architecture(3_212_749_824, 28, 8, 128, 3072, 24, 128_256, 131_072),
        _hf("meta-llama/Llama-3.2-3B-Instruct"),
    ),
    (
        r"llama-?3\.2.*?\b1b",
        "Llama-3.2-1B",
        Architecture(1_235_814_400, 16, 8, 64, 2048, 32, 128_256, 131_072),
        _hf("meta-llama/Llama-3.2-1B-Instruct"),
    ),
    (
        r"mistral.*?\b7b",
        "Mistral-7B-v0.3",
        Architecture(7_248_023_552, 32, 8, 128, 4096, 32, 32_768, 32_768),
        _hf("mistralai/Mistral-7B-Instruct-v0.3"),
    ),
    (
        r"mixtral.*?8x7b",
        "Mixtral-8x7B",
        Architecture(46_702_792_704, 32, 8, 128, 4096, 32, 32_000, 32_768),
        _hf("mistralai/Mixtral-8x7B-Instruct-v0.1"),
    ),
    (
        r"gemma-?2.*?\b9b",
        "Gemma-2-9B",
        Architecture(9_241_705_984, 42, 8, 256, 3584, 16, 256_000, 8192),
        _hf("google/gemma-2-9b-it"),
    ),
    (
        r"gemma-?2.*?\b27b",
        "Gemma-2-27B",
        Architecture(27_227_128_320, 46, 16, 128, 4608, 32, 256_000, 8192),
        _hf("google/gemma-2-27b-it"),
    ),
    (
        r"smollm-?2.*?135m",
        "SmolLM2-135M",
        Architecture(134_515_008, 30, 3, 64, 576, 9, 49_152, 8192),
        _hf("HuggingFaceTB/SmolLM2-135M-Instruct"),
    ),
)


def check_argument(name: str, value: float | None, *, source: str | None = None) -> float | None:
    """``value`` when it is None or a finite number within ``LIMITS[name]``.

    ``BadInput`` otherwise, naming the value, where it came from and the accepted range.
    """
    if value is None:
        return None
    low, high, example = LIMITS[name]
    text = repr(value)
    shown = text if len(text) <= 24 else f"{text[:12]}... ({len(text)} digits)"
    origin = f" (from {source})" if source else ""
    if name in Architecture.__dataclass_fields__:
        hint = (
            f"Pass the model's real {name} as an argument (parameters_billions, layers, "
            f"kv_heads, head_dim; {name} lies between {low:g} and {high:g})."
        )
    else:
        hint = f"Pass {name} between {low:g} and {high:g}, e.g. {example}."
    if isinstance(value, float) and not math.isfinite(value):
        raise BadInput(f"{name} is {shown}{origin}; it must be a finite number.", hint=hint)
    if value < low:
        raise BadInput(f"{name} is {shown}{origin}; it must be at least {low:g}.", hint=hint)
    if value > high:
        raise BadInput(f"{name} is {shown}{origin}; it must be at most {high:g}.", hint=hint)
    return value


def _normalised_name(name: str) -> str:
    return re.sub(r"[\s_:/]+", "-", name.lower())


def find_known(name: str) -> tuple[str, Architecture, str] | None:
    """The built-in facts for a model name (``qwen2.5:32b``, ``Qwen/Qwen2.5-32B-Instruct``)."""
    key = _normalised_name(name)
    for pattern, display, arch, source in KNOWN_MODELS:
        if re.search(pattern, key):
            return display, arch, source
    return None


def quantization_in_name(name: str) -> str | None:
    """A GGUF quantisation named inside a model name or tag (``...-q4_K_M``)."""
    upper = name.upper().replace("-", "_")
    for quant in sorted(BITS_PER_WEIGHT, key=len, reverse=True):
        if re.search(rf"(?<![A-Z0-9]){quant}(?![A-Z0-9])", upper):
            return quant
    return None


def bits_per_weight(quantization: str) -> tuple[str, float]:
    """Canonical name and average bits per weight of a quantisation, or a number of bits."""
    text = quantization.strip()
    try:
        bits = float(text)
    except ValueError:
        pass
    else:
        if not 1 <= bits <= 32:
            raise BadInput(
                f"quantization {quantization!r} is not between 1 and 32 bits per weight.",
                hint="Pass a GGUF name such as Q4_K_M or a number of bits such as 4.5.",
            )
        return f"{bits:g} bits", bits
    key = text.upper().replace("-", "_").replace(" ", "")
    key = _QUANT_ALIASES.get(key, key)
    if key not in BITS_PER_WEIGHT:
        raise BadInput(
            f"unknown quantization {quantization!r}.",
            hint=f"Use one of {', '.join(BITS_PER_WEIGHT)}, or a number of bits per weight.",
        )
    return key, BITS_PER_WEIGHT[key]


def kv_bytes_per_element(cache_type: str) -> float:
    """Bytes per cached K or V element for a cache type such as f16 or q8_0."""
    key = cache_type.strip().lower()
    if key not in KV_CACHE_BYTES:
        raise BadInput(
            f"unknown kv_cache type {cache_type!r}.",
            hint=f"Use one of {', '.join(KV_CACHE_BYTES)}.",
        )
    return KV_CACHE_BYTES[key]


def architecture_from_model_info(
    model_info: dict[str, Any], parameter_count: int | None = None
) -> Architecture:
    """Facts from Ollama's ``model_info`` (GGUF metadata keys ``<arch>.block_count`` ...)."""
    arch = model_info.get("general.architecture")

    def get(key: str) -> int | None:
        value = model_info.get(f"{arch}.{key}") if arch else None
        return int(value) if isinstance(value, int | float) else None

    heads = get("attention.head_count")
    hidden = get("embedding_length")
    head_dim = get("attention.key_length")
    if head_dim is None and heads and hidden:
        head_dim = hidden // heads
    params = model_info.get("general.parameter_count", parameter_count)
    return Architecture(
        parameters=int(params) if params else None,
        layers=get("block_count"),
        kv_heads=get("attention.head_count_kv") or heads,
        head_dim=head_dim,
        hidden_size=hidden,
        heads=heads,
        vocab_size=get("vocab_size"),
        context_length=get("context_length"),
    )


def merge(base: Architecture, override: Architecture) -> Architecture:
    """``base`` with every fact ``override`` knows replacing it."""
    known = {k: v for k, v in override.__dict__.items() if v is not None}
    return replace(base, **known)


# -- the estimate ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Estimate:
    """Bytes needed, by part."""

    weights: int
    kv_cache: int
    overhead: int

    @property
    def total(self) -> int:
        return self.weights + self.kv_cache + self.overhead


def weights_bytes(parameters: int, bits: float) -> int:
    """Bytes of the weights at ``bits`` per weight."""
    return int(parameters * bits / 8)


def kv_cache_bytes(arch: Architecture, context: int, element_bytes: float) -> int:
    """Bytes of the K and V caches for ``context`` tokens."""
    assert arch.layers and arch.kv_heads and arch.head_dim
    return int(2 * arch.layers * arch.kv_heads * arch.head_dim * context * element_bytes)


def overhead_bytes(arch: Architecture) -> int:
    """CUDA context plus the compute buffer of one 512-token batch (see module docstring)."""
    hidden = arch.hidden_size or (arch.heads or arch.kv_heads or 0) * (arch.head_dim or 0)
    vocab = arch.vocab_size or DEFAULT_VOCAB
    activations = ACTIVATION_TOKENS * (hidden * 4 * ACTIVATION_FLOATS_PER_HIDDEN + vocab * 4)
    return CUDA_CONTEXT_BYTES + activations


def estimate(arch: Architecture, bits: float, context: int, element_bytes: float) -> Estimate:
    """Memory needed to run ``arch`` at ``bits`` per weight with ``context`` tokens."""
    assert arch.parameters is not None
    return Estimate(
        weights=weights_bytes(arch.parameters, bits),
        kv_cache=kv_cache_bytes(arch, context, element_bytes),
        overhead=overhead_bytes(arch),
    )


def largest_context(
    arch: Architecture, bits: float, element_bytes: float, available: int, limit: int | None
) -> int:
    """The largest multiple of ``CONTEXT_STEP`` (up to ``limit``) that fits in ``available``.

    The KV cache grows linearly with the context, so the answer is computed directly and then
    checked against ``estimate`` (moving a step at a time) so it is exact despite rounding.
    """
    top = (limit or SEARCH_LIMIT) // CONTEXT_STEP

    def fits(steps: int) -> bool:
        return estimate(arch, bits, steps * CONTEXT_STEP, element_bytes).total <= available

    if top < 1 or not fits(1):
        return 0
    fixed = estimate(arch, bits, 0, element_bytes).total
    per_step = kv_cache_bytes(arch, CONTEXT_STEP, element_bytes) or 1
    steps = max(1, min(top, (available - fixed) // per_step))
    while steps > 1 and not fits(steps):
        steps -= 1
    while steps < top and fits(steps + 1):
        steps += 1
    return steps * CONTEXT_STEP


# -- GPU memory -----------------------------------------------------------------------------


@dataclass(frozen=True)
class GpuMemory:
    """Memory of the GPU to fit on; ``free`` is None when only a size was given."""

    total: int
    free: int | None
    source: str

    @property
    def available(self) -> int:
        return self.free if self.free is not None else self.total


def nvml_memory(index: int = 0) -> GpuMemory | None:
    """Total and free memory of GPU ``index`` from nvidia-ml-py; None without NVML or GPU."""
    try:
        import pynvml  # type: ignore[import-not-found]  # optional: the "gpu" extra
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except Exception as exc:  # NVMLError: no driver or no GPU
        logger.info("NVML unavailable: %s", exc)
        return None
    try:
        count = pynvml.nvmlDeviceGetCount()
        if index >= count:
            raise BadInput(
                f"gpu_index {index} does not exist; this machine has {count} GPU(s).",
                hint=f"Pass a gpu_index from 0 to {count - 1}.",
            )
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        info = pynvml.nvmlDeviceGetMemoryInfo(handle)
        name = pynvml.nvmlDeviceGetName(handle)
        if isinstance(name, bytes):
            name = name.decode("utf-8", "replace")
        return GpuMemory(int(info.total), int(info.free), f"nvidia-ml-py: {name} (GPU {index})")
    finally:
        pynvml.nvmlShutdown()


# -- the answer -----------------------------------------------------------------------------


def gb(value: int | None) -> float | None:
    """Bytes to GiB, two decimals."""
    return None if value is None else round(value / GIB, 2)


class ArchitectureFacts(BaseModel):
    """The architecture figures the estimate used."""

    parameters_billions: float = Field(description="Parameter count in billions.")
    layers: int = Field(description="Transformer blocks.")
    kv_heads: int = Field(description="Key/value attention heads (GQA groups).")
    head_dim: int = Field(description="Dimension of one attention head.")
    hidden_size: int | None = Field(None, description="Model width (embedding length).")
    vocab_size: int | None = Field(None, description="Vocabulary size (for the logits buffer).")
    trained_context: int | None = Field(None, description="Longest context the model supports.")


class FitReport(BaseModel):
    """Whether a model fits, with the breakdown. GB here means GiB (2^30 bytes)."""

    model: str | None = Field(description="The model asked about, if named.")
    fits: bool = Field(description="True when weights + KV cache + overhead fit the GPU memory.")
    quantization: str = Field(description="Quantisation used for the weights.")
    bits_per_weight: float = Field(description="Average bits per weight of that quantisation.")
    context: int = Field(description="Context length (tokens) the estimate is for.")
    kv_cache_type: str = Field(description="KV cache precision (f16, q8_0, q4_0, ...).")
    weights_gb: float = Field(description="Memory for the weights.")
    kv_cache_gb: float = Field(description="Memory for the K and V caches at this context.")
    overhead_gb: float = Field(description="CUDA context + compute buffers.")
    needed_gb: float = Field(description="Total memory needed.")
    gpu_total_gb: float = Field(description="GPU memory in total.")
    gpu_free_gb: float | None = Field(description="GPU memory free now (NVML only).")
    available_gb: float = Field(description="Memory counted as available (free if known).")
    headroom_gb: float = Field(description="available - needed; negative when it does not fit.")
    memory_source: str = Field(description="Where the GPU memory figure came from.")
    max_context: int = Field(
        description="Largest context (multiple of 256 tokens) that fits; 0 if none does."
    )
    max_context_is_model_limit: bool = Field(
        description="True when max_context is the model's own limit rather than memory's."
    )
    architecture: ArchitectureFacts
    sources: dict[str, str] = Field(description="Where each figure came from.")
    assumptions: list[str] = Field(description="Constants and defaults the estimate relies on.")
    advice: str = Field(description="One sentence on what to do.")


def fit(
    arch: Architecture,
    *,
    quantization: str,
    context: int,
    kv_cache: str,
    gpu: GpuMemory,
    model: str | None = None,
    sources: dict[str, str] | None = None,
    assumptions: list[str] | None = None,
) -> FitReport:
    """Compare what ``arch`` needs at this quantisation and context with ``gpu``."""
    missing = arch.missing()
    if missing:
        raise BadInput(
            f"cannot estimate {model or 'the model'}: unknown {', '.join(missing)}.",
            hint="Pass them as arguments (parameters_billions, layers, kv_heads, head_dim), or "
            "name a model the engine or the built-in table knows.",
        )
    for name in ("parameters", "layers", "kv_heads", "head_dim"):
        check_argument(name, getattr(arch, name), source=(sources or {}).get(name))
    check_argument("context", context)
    quant, bits = bits_per_weight(quantization)
    element = kv_bytes_per_element(kv_cache)
    need = estimate(arch, bits, context, element)
    available = gpu.available
    best = largest_context(arch, bits, element, available, arch.context_length)
    fits = need.total <= available
    headroom = available - need.total
    limit_hit = bool(
        arch.context_length and best == arch.context_length // CONTEXT_STEP * CONTEXT_STEP
    )

    if fits:
        advice = f"Fits with {gb(headroom)} GB to spare"
        advice += f"; contexts up to {best} tokens fit." if best else "."
    elif best:
        advice = (
            f"Needs {gb(-headroom)} GB more at {context} tokens; a context of {best} fits, or "
            "use a smaller quantisation or a q8_0 KV cache."
        )
    else:
        advice = (
            f"Does not fit even with a minimal context (needs {gb(need.total - need.kv_cache)} "
            "GB before the KV cache); use a smaller quantisation, a smaller model, or a larger GPU."
        )
    assert arch.parameters and arch.layers and arch.kv_heads and arch.head_dim
    return FitReport(
        model=model,
        fits=fits,
        quantization=quant,
        bits_per_weight=bits,
        context=context,
        kv_cache_type=kv_cache.lower(),
        weights_gb=gb(need.weights) or 0.0,
        kv_cache_gb=gb(need.kv_cache) or 0.0,
        overhead_gb=gb(need.overhead) or 0.0,
        needed_gb=gb(need.total) or 0.0,
        gpu_total_gb=gb(gpu.total) or 0.0,
        gpu_free_gb=gb(gpu.free),
        available_gb=gb(available) or 0.0,
        headroom_gb=gb(headroom) or 0.0,
        memory_source=gpu.source,
        max_context=best,
        max_context_is_model_limit=limit_hit,
        architecture=ArchitectureFacts(
            parameters_billions=round(arch.parameters / 1e9, 3),
            layers=arch.layers,
            kv_heads=arch.kv_heads,
            head_dim=arch.head_dim,
            hidden_size=arch.hidden_size,
            vocab_size=arch.vocab_size,
            trained_context=arch.context_length,
        ),
        sources=dict(sources or {}),
        assumptions=[
            f"overhead = {CUDA_CONTEXT_BYTES / GIB:g} GiB CUDA context + compute buffer for a "
            f"{ACTIVATION_TOKENS}-token batch (flash attention assumed)",
            "weights use the quantisation's average bits per weight over the whole file",
            *(assumptions or []),
        ],
        advice=advice,
    )
