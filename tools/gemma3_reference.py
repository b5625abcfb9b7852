"""An independent float64 NumPy forward pass of a Gemma 3 text model, written from the published
architecture, with switches for the conventions that implementations could plausibly differ on.
make_parity_fixtures.py compares it with transformers to find out which conventions transformers
follows; check_parity_fixtures.py runs it on the committed fixtures.
"""

import math

import numpy as np


def bf16_round(x):
    a = np.array([x], dtype=np.float32).view(np.uint32)
    rounded = ((a.astype(np.uint64) + 0x7FFF + ((a >> 16) & 1)) >> 16) << 16
    return float(rounded.astype(np.uint32).view(np.float32)[0])


def manual_forward(W, r, ids, window_inclusive=False, attn_cap=False, rope_scaling=True,
                   embed_bf16=False, final_cap=True, sliding=True):
    """Gemma 3 forward in float64 from the stored weights (W: name -> float64 ndarray with the
    text-model names model.*, lm_head.weight)."""
    H, nh, nkv, hd = (r["hidden_size"], r["num_attention_heads"], r["num_key_value_heads"],
                      r["head_dim"])
    eps = r["rms_norm_eps"]
    T = len(ids)

    def rms(x, w):
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * (1.0 + w)

    scale = math.sqrt(H)
    if embed_bf16:
        scale = bf16_round(scale)
    x = W["model.embed_tokens.weight"][np.array(ids)] * scale
    pos = np.arange(T, dtype=np.float64)
    qi = np.arange(T)[:, None]
    kj = np.arange(T)[None, :]
    causal = kj <= qi
    for layer in range(r["num_hidden_layers"]):
        p = "model.layers.%d." % layer
        is_sliding = r["layer_types"][layer] == "sliding_attention" and sliding
        h = rms(x, W[p + "input_layernorm.weight"])
        q = (h @ W[p + "self_attn.q_proj.weight"].T).reshape(T, nh, hd)
        k = (h @ W[p + "self_attn.k_proj.weight"].T).reshape(T, nkv, hd)
        v = (h @ W[p + "self_attn.v_proj.weight"].T).reshape(T, nkv, hd)
        q = rms(q, W[p + "self_attn.q_norm.weight"])
        k = rms(k, W[p + "self_attn.k_norm.weight"])
        if r["layer_types"][layer] == "sliding_attention":
            theta, factor = r["theta_local"], r["factor_local"]
        else:
            theta, factor = r["theta_global"], r["factor_global"]
        inv = 1.0 / theta ** (np.arange(0, hd, 2, dtype=np.float64) / hd)
        if rope_scaling:
            inv = inv / factor
        ang = pos[:, None] * inv[None, :]
        ang = np.concatenate([ang, ang], axis=-1)
        cos = np.cos(ang)[:, None, :]
        sin = np.sin(ang)[:, None, :]
        half = hd // 2

        def rope(t):
            rot = np.concatenate([-t[..., half:], t[..., :half]], axis=-1)
            return t * cos + rot * sin

        q = rope(q)
        k = rope(k)
        allowed = causal.copy()
        if is_sliding:
            w = r["sliding_window"]
            allowed &= (kj >= qi - w) if window_inclusive else (kj > qi - w)
        group = nh // nkv
        out = np.zeros((T, nh, hd))
        for head in range(nh):
            kvh = head // group
            s = (q[:, head, :] @ k[:, kvh, :].T) * (r["query_pre_attn_scalar"] ** -0.5)
            cap = r["attn_logit_softcapping"]
            if attn_cap and cap:
                s = cap * np.tanh(s / cap)
            s = np.where(allowed, s, -np.inf)
            s = s - s.max(axis=-1, keepdims=True)
            e = np.exp(s)
            out[:, head, :] = (e / e.sum(axis=-1, keepdims=True)) @ v[:, kvh, :]
        o = out.reshape(T, nh * hd) @ W[p + "self_attn.o_proj.weight"].T
        x = x + rms(o, W[p + "post_attention_layernorm.weight"])
        f = rms(x, W[p + "pre_feedforward_layernorm.weight"])
        g = f @ W[p + "mlp.gate_proj.weight"].T
        u = f @ W[p + "mlp.up_proj.weight"].T
        gelu = 0.5 * g * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (g + 0.044715 * g ** 3)))
        f = (gelu * u) @ W[p + "mlp.down_proj.weight"].T
        x = x + rms(f, W[p + "post_feedforward_layernorm.weight"])
    x = rms(x, W["model.norm.weight"])
    lm = W["lm_head.weight"] if "lm_head.weight" in W else W["model.embed_tokens.weight"]
    logits = x @ lm.T
    cap = r["final_logit_softcapping"]
    if final_cap and cap:
        logits = cap * np.tanh(logits / cap)
    return logits


