"""Which layers hold a KV cache, which a recurrent state, and which attend through a window: llama.cpp's
per-architecture rules, read off a header.

Ported from the llama.cpp vendored in llama-cpp-python 0.3.36: src/llama-model.cpp create_memory (which
memory type an architecture gets, and its layer filters), llama-arch.cpp llm_arch_is_recurrent /
llm_arch_is_hybrid, llama-hparams.cpp (set_swa_pattern, n_embd_r, n_embd_s, is_mla) and each
architecture's load_arch_hparams in src/models/*.cpp (window defaults, which layers are recurrent).
The bytes these geometries take on a device are offload/memory.py's job.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.gguf.header import ModelHeader


@dataclass(frozen=True)
class SwaRule:
    """An architecture's sliding-window layout in llama.cpp (its load_arch_hparams).

    when: "always" (the layout applies to every file), "window" (only with a sliding_window key > 0),
    "unless_zero" (llama4: unless the file has sliding_window = 0), "n_layer_64" (exaone4 32B).
    window_default: the window when the file has no key; window_forced: the window whatever the file says.
    period/dense_first: llama_hparams::set_swa_pattern's defaults, used when the file has no
    sliding_window_pattern key (an integer period or a per-layer bool array overrides them)."""

    kind: str  # "standard" or "chunked"
    period: int
    when: str = "always"
    dense_first: bool = False
    window_default: int | None = None
    window_forced: int | None = None


SWA_RULES = {
    "gemma2": SwaRule("standard", 2, window_default=4096),
    "gemma3": SwaRule("standard", 6, when="window"),
    "cohere2": SwaRule("standard", 4),
    "cohere2moe": SwaRule("standard", 4, dense_first=True),
    "gpt-oss": SwaRule("standard", 2),
    "llama4": SwaRule("chunked", 4, when="unless_zero", window_forced=8192),
    "afmoe": SwaRule("standard", 4, when="window"),
    "olmo2": SwaRule("standard", 4, when="window"),
    "mellum": SwaRule("standard", 4, when="window"),
    "plamo3": SwaRule("standard", 8, when="window"),
    "smallthinker": SwaRule("standard", 4, when="window", dense_first=True, window_forced=4096),
    "laguna": SwaRule("standard", 4, when="window", dense_first=True),
    "exaone4": SwaRule("standard", 4, when="n_layer_64", window_default=4096),
    "exaone-moe": SwaRule("standard", 4, window_default=128),
}

# llm_arch_is_recurrent: one recurrent state per layer, no KV cache
RECURRENT = frozenset({"mamba", "mamba2", "rwkv6", "rwkv6qwen2", "rwkv7", "arwkv7"})
# hybrids whose recurrent layers are those with n_head_kv == 0 (attention on the others)
HYBRID_BY_HEADS = frozenset({"jamba", "granitehybrid", "lfm2", "lfm2moe", "plamo2"})
# create_memory returns no memory at all (encoders, diffusion models)
NO_MEMORY = frozenset(
    {
        "bert",
        "jina-bert-v2",
        "jina-bert-v3",
        "nomic-bert",
        "nomic-bert-moe",
        "neo-bert",
        "eurobert",
        "wavtokenizer-dec",
        "modern-bert",
        "gemma-embedding",
        "dream",
        "llada",
        "llada-moe",
        "rnd1",
    }
)


@dataclass(frozen=True)
class Window:
    """The attention window llama.cpp uses: which layers slide, by how much, and why."""

    kind: str  # "none", "standard" or "chunked"
    size: int  # tokens (0 when kind is "none")
    layers: tuple[bool, ...]  # per layer: in the sliding-window cache
    source: str  # "file", "default" (the architecture's pattern) or "none"

    @property
    def period(self) -> int | None:
        """The pattern's period when the layers follow one (n full-attention layers every period)."""
        flags = self.layers
        for p in range(1, len(flags) + 1):
            if all(flags[i] == flags[i % p] for i in range(len(flags))):
                return p
        return None


def _pattern(period: int, dense_first: bool, n_layer: int) -> tuple[bool, ...]:
    """llama_hparams::set_swa_pattern (a period of 0 makes every layer sliding)."""
    if dense_first:
        return tuple(period == 0 or il % period != 0 for il in range(n_layer))
    return tuple(period == 0 or il % period < period - 1 for il in range(n_layer))


def attention_window(header: ModelHeader) -> Window:
    a = header.arch
    n = a.n_layer
    none = Window("none", 0, (False,) * n, "none")
    name = a.name or ""
    pattern = a.sliding_window_pattern
    if name == "lfm2":  # every attention layer slides when the file sets a window (lfm2.cpp)
        if not a.sliding_window:
            return none
        heads = a.n_head_kv or (0,) * n
        return Window("standard", a.sliding_window, tuple(h > 0 for h in heads), "default")
    rule = SWA_RULES.get(name)
    if rule is None:
        # an architecture without a known layout: a window applies only with an explicit pattern
        if not a.sliding_window or pattern is None:
            return none
        layers = pattern if isinstance(pattern, tuple) else _pattern(pattern, False, n)
        return Window("standard", a.sliding_window, tuple(layers), "file")
    found = a.sliding_window is not None
    if rule.when == "window" and not a.sliding_window:
        return none
    if rule.when == "unless_zero" and found and a.sliding_window == 0:
        return none
    if rule.when == "n_layer_64" and n != 64:
        return none
    size = rule.window_forced or (a.sliding_window if found else rule.window_default) or 0
    if isinstance(pattern, tuple):
        return Window(rule.kind, size, pattern, "file")
    if pattern is not None:
        return Window(rule.kind, size, _pattern(pattern, rule.dense_first, n), "file")
    return Window(rule.kind, size, _pattern(rule.period, rule.dense_first, n), "default")


@dataclass(frozen=True)
class LayerMemory:
    """One layer's cache geometry: K/V row widths (elements) and recurrent r/s widths (F32 elements)."""

    k_width: int = 0
    v_width: int = 0
    swa: bool = False
    has_kv: bool = False
    r_width: int = 0
    s_width: int = 0
    has_rs: bool = False


def _recurrent_widths(header: ModelHeader) -> tuple[int, int]:
    """llama_hparams::n_embd_r and n_embd_s."""
    a = header.arch
    n_embd = a.n_embd or 0
    if a.wkv_head_size:  # RWKV
        return (a.token_shift_count if a.token_shift_count is not None else 2) * n_embd, n_embd * a.wkv_head_size
    d_inner, d_state = a.ssm_inner_size or 0, a.ssm_state_size or 0
    if a.shortconv_l_cache:  # LFM2
        r = n_embd * (a.shortconv_l_cache - 1)
    else:  # Mamba's conv state, the first column of which is never kept
        d_conv = a.ssm_conv_kernel or 0
        r = (d_conv - 1 if d_conv > 0 else 0) * (d_inner + 2 * (a.ssm_group_count or 0) * d_state)
    return r, d_state * d_inner


def layer_memory(header: ModelHeader) -> list[LayerMemory]:
    """What llama.cpp's memory for this architecture holds on each layer (create_memory's choice)."""
    a = header.arch
    n = a.n_layer
    name = a.name or ""
    if name in NO_MEMORY:
        return [LayerMemory()] * n
    heads_kv = a.n_head_kv or (0,) * n
    n_ff = a.n_ff or (0,) * n
    if name in RECURRENT:
        recr, attn = [True] * n, [False] * n
    elif name in HYBRID_BY_HEADS:
        recr = [h == 0 for h in heads_kv]
        attn = [not r for r in recr]
    elif name == "falcon-h1":  # every layer has both
        recr, attn = [True] * n, [True] * n
    elif name in ("nemotron_h", "nemotron_h_moe"):  # FFN-only layers have neither
        recr = [heads_kv[il] == 0 and n_ff[il] == 0 for il in range(n)]
        attn = [heads_kv[il] > 0 and n_ff[il] == 0 for il in range(n)]
    else:
        recr = [False] * n
        # multi-token-prediction blocks at the end are not attended by the main context
        n_trunk = n - a.n_layer_nextn if 0 < a.n_layer_nextn < n else n
        attn = [il < n_trunk for il in range(n)]
    window = attention_window(header)
    head0 = a.n_head[0] if a.n_head else 0
    # llama.cpp reads the head sizes only when n_head() > 0; the SWA sizes default to the full ones
    k_full = (a.key_length or 0) if head0 else 0
    v_full = (a.value_length or 0) if head0 else 0
    k_swa = a.key_length_swa if a.key_length_swa is not None else k_full
    v_swa = a.value_length_swa if a.value_length_swa is not None else v_full
    r_width, s_width = _recurrent_widths(header)
    out = []
    for il in range(n):
        swa = window.layers[il]
        k_len, v_len = (k_swa, v_swa) if swa else (k_full, v_full)
        out.append(
            LayerMemory(
                k_width=k_len * heads_kv[il] if attn[il] else 0,
                v_width=0 if a.is_mla or not attn[il] else v_len * heads_kv[il],
                swa=swa,
                has_kv=attn[il],
                r_width=r_width if recr[il] else 0,
                s_width=s_width if recr[il] else 0,
                has_rs=recr[il],
            )
        )
    return out


def v_head_length(header: ModelHeader, swa: bool) -> int:
    """n_embd_head_v(il): 0 without attention heads (llama.cpp reads the sizes only when n_head() > 0)."""
    a = header.arch
    if not (a.n_head and a.n_head[0]):
        return 0
    full = a.value_length or 0
    return (a.value_length_swa if a.value_length_swa is not None else full) if swa else full
