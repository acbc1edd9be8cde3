"""PyTorch reference implementation of the Megalodon architecture (inference only).

Written from docs/model.md (section numbers below refer to it), which follows the official
XuezheMax/megalodon code. Parameters use the official state-dict
names (§12). All computation is done in `dtype` (default float64; complex
quantities in the matching complex dtype), from whatever values the state dict holds.

Everything is unbatched: tokens is a 1-D tensor of L ids, activations are (L, D).

Entry points:
    model = Megalodon(conf, state_dict)
    logits, inter, cache = model.forward(tokens)              # full forward (fresh state)
    logits, inter, cache = model.forward(tokens, cache)       # incremental (§14)
`inter` holds the intermediates: "embd" (L,D), "attn_out"[i] (L,D) (MEGA sub-layer output y
of layer i), "out"[i] (L,D) (block output), "output_norm" (L,D), "logits" (L,V).
`cache` is the streaming state after the call (a new object; the input is not modified).
"""
import math
from dataclasses import dataclass, field
from typing import List, Optional

import torch


# ------------------------------------------------------------------------ configuration
@dataclass
class ModelConf:
    """Official ModelConf fields (§1) that matter for inference."""
    num_layers: int = 8
    model_dim: int = 1024          # D
    z_dim: int = 256               # Z (all heads)
    value_dim: int = 2048          # E (all heads)
    num_heads: int = 1             # H
    ffn_hidden_dim: int = 2048     # F
    cema_ndim: int = 16            # N
    chunk_size: int = 2048         # C
    norm_num_groups: int = 32      # G
    norm_affine: bool = True
    norm_eps: float = 1e-5
    rope_base: Optional[float] = None   # None -> 10000
    swiglu: bool = False
    rescale_nffn: bool = False
    scale_emb: bool = False
    share_emb: bool = False
    vocab_size: int = -1           # V
    output_size: int = -1          # V' (-1 -> V)

    def __post_init__(self):
        assert self.z_dim % self.num_heads == 0 and self.value_dim % self.num_heads == 0
        assert (self.z_dim // self.num_heads) % 2 == 0
        assert self.model_dim % self.norm_num_groups == 0

    @property
    def out_size(self):
        return self.vocab_size if self.output_size < 0 else self.output_size


# ------------------------------------------------------------------------ streaming state
@dataclass
class NormState:
    """TimestepNorm running statistics (§5): count n, mean (G,), var (G,)."""
    count: int
    mean: torch.Tensor
    var: torch.Tensor


@dataclass
class LayerCache:
    """Per-layer streaming state (§14). k: (n, Z) keys after RoPE, v: (n, E) values
    after SiLU, of the current unfinished chunk; norm: None = fresh (prior) statistics;
    hx: (D, N) complex CEMA hidden state, None = zeros (and no bias term)."""
    k: torch.Tensor
    v: torch.Tensor
    norm: Optional[NormState] = None
    hx: Optional[torch.Tensor] = None

    @property
    def n(self):
        return self.k.shape[0]


@dataclass
class Cache:
    layers: List[LayerCache]
    final_norm: Optional[NormState] = None
    n_past: int = 0                # tokens consumed so far (informational)

    @property
    def n(self):
        """Cache length: tokens of the current unfinished chunk."""
        return self.layers[0].n


# ------------------------------------------------------------------------ small helpers
def linear(x, weight, bias=None):
    # y = x W^T + b,  W stored (out, in)
    y = x @ weight.t()
    return y if bias is None else y + bias


def silu(x):
    return x * torch.sigmoid(x)


# ------------------------------------------------------------------------ §5
def fresh_norm_state(prior_count, prior_mean, prior_logv):
    # fresh state: n = prior_count, mu = prior_mean, var = exp(prior_logv)
    return NormState(int(prior_count), prior_mean.clone(), torch.exp(prior_logv))


def timestep_norm(x, weight, bias, state, num_groups, eps):
    """Grouped TimestepNorm (§5). x: (L, D); groups are contiguous blocks of D/G
    features. Each token is one Welford block of weight 1 combined into the carried
    (count, mean, var); token t is normalized with the statistics INCLUDING t.
    Returns y (L, D) and the new NormState."""
    L, D = x.shape
    G = num_groups
    Dg = D // G
    count, mean, var = state.count, state.mean.clone(), state.var.clone()
    xg = x.reshape(L, G, Dg)
    y = torch.empty_like(x)
    for t in range(L):
        gm = xg[t].mean(dim=1)                               # gm = mean_k x[t,k]      (G,)
        gv = ((xg[t] - gm[:, None]) ** 2).mean(dim=1)        # gv = mean_k (x-gm)^2   (biased)
        n_new = count + 1                                    # n' = n + 1
        c1 = count / n_new                                   # c1 = n / n'
        c2 = 1.0 / n_new                                     # c2 = 1 / n'
        d = gm - mean                                        # d = gm - mu
        mean = c1 * mean + c2 * gm                           # mu' = c1 mu + c2 gm
        var = c1 * var + c2 * gv + (c1 * d) * (c2 * d)       # s2' = c1 s2 + c2 gv + c1 c2 d^2
        count = n_new
        rstd = 1.0 / torch.sqrt(var + eps)
        yt = (xg[t] - mean[:, None]) * rstd[:, None]         # (x - mu') / sqrt(s2' + eps)
        y[t] = yt.reshape(D) * (1.0 + weight) + bias         # * (1 + w) + b
    return y, NormState(count, mean, var)


def timestep_norm_closed_form(x, weight, bias, num_groups, eps):
    """Closed form of the TimestepNorm from a fresh state with prior_count = 0 (§5):
    mu_t = mean of all Dg*(t+1) scalars of the group so far, s2_t = their biased variance.
    Used only to cross-check timestep_norm()."""
    L, D = x.shape
    G = num_groups
    xg = x.reshape(L, G, D // G)
    t1 = torch.arange(1, L + 1, dtype=x.dtype)[:, None]
    mu = torch.cumsum(xg.mean(dim=2), dim=0) / t1                       # (L, G)
    ex2 = torch.cumsum((xg ** 2).mean(dim=2), dim=0) / t1
    var = ex2 - mu ** 2
    y = (xg - mu[:, :, None]) / torch.sqrt(var + eps)[:, :, None]
    return y.reshape(L, D) * (1.0 + weight) + bias


# ------------------------------------------------------------------------ §6
def cema_coefficients(alpha, delta, theta, gamma):
    """alpha, delta (D,N,1), theta (D,1,1), gamma (D,N,2) -> p (D,N) real, q, eta (D,N) complex.
        p        = sigmoid(alpha)
        phi[d,n] = n * sigmoid(theta[d]) * 2pi/N,  n = 1..N
        q        = (1 - sigmoid(alpha) sigmoid(delta)) * exp(i phi)
        eta      = (gamma[...,0] + i gamma[...,1]) * sqrt(1/N)"""
    D, N, _ = alpha.shape
    p = torch.sigmoid(alpha[:, :, 0])
    harmonics = torch.arange(1, N + 1, dtype=alpha.dtype) * (2.0 * math.pi / N)   # n 2pi/N
    phi = torch.sigmoid(theta[:, 0, 0])[:, None] * harmonics[None, :]
    magnitude = 1.0 - p * torch.sigmoid(delta[:, :, 0])
    q = torch.polar(magnitude, phi)
    eta = torch.complex(gamma[:, :, 0], gamma[:, :, 1]) * math.sqrt(1.0 / N)
    return p, q, eta


def fft_causal_conv(x, k):
    """causal_conv(x, k)[t] = sum_{s<=t} k[t-s] x[s], along the last dim (official fftconv:
    Nf = L if L is a power of 2 else 2^bit_length(L); FFT size 2 Nf)."""
    L = x.shape[-1]
    nf = L if (L & (L - 1)) == 0 else 1 << L.bit_length()
    X = torch.fft.rfft(x, n=2 * nf)
    K = torch.fft.rfft(k, n=2 * nf)
    return torch.fft.irfft(X * K, n=2 * nf)[..., :L]


def cema_fft(x, p, q, eta, omega, hx):
    """CEMA by the official FFT path (§6.3). x: (L, D) real; hx: (D, N) complex or None.
    Returns y (L, D) and the new hidden state h_L (D, N)."""
    L, D = x.shape
    xc = x.t()                                                  # channels first (D, L)
    j = torch.arange(L, dtype=x.dtype)
    log_q = torch.log(q)                                        # powers as exp(j log q)
    qj = torch.exp(log_q[:, :, None] * j)                       # q^j          (D, N, L)
    # kernel k[d,j] = Re( sum_n p eta q^j )
    kernel = torch.real(((p * eta)[:, :, None] * qj).sum(dim=1))            # (D, L)
    y = fft_causal_conv(xc, kernel)
    if hx is not None:
        # bias[d,j] = Re( sum_n eta q^(j+1) hx )
        qj1 = torch.exp(log_q[:, :, None] * (j + 1))
        y = y + torch.real((eta[:, :, None] * qj1 * hx[:, :, None]).sum(dim=1))
    y = y + omega[:, 0:1] * xc                                  # + omega x
    # h_L = p sum_{j<L} q^(L-1-j) x_j + q^L hx
    q_rev = torch.exp(log_q[:, :, None] * (L - 1 - j))          # q^(L-1-j)    (D, N, L)
    h = p * (q_rev * xc[:, None, :]).sum(dim=2)
    if hx is not None:
        h = h + torch.exp(log_q * L) * hx
    return y.t(), h


def cema_recurrence(x, p, q, eta, omega, hx):
    """CEMA by its defining recurrence (§6.2), same interface as cema_fft:
        h_t = q h_{t-1} + p x_t,   y_t = Re( sum_n eta h_t ) + omega x_t"""
    L, D = x.shape
    h = torch.zeros(q.shape, dtype=q.dtype) if hx is None else hx.clone()
    y = torch.empty_like(x)
    for t in range(L):
        h = q * h + p * x[t][:, None]
        y[t] = torch.real((eta * h).sum(dim=1)) + omega[:, 0] * x[t]
    return y, h


# ------------------------------------------------------------------------ §4
def rms_norm(x, weight, eps):
    """y = x rsqrt(mean(x^2) + eps) (* (1 + w) if weight is given), over the last dim."""
    y = x * torch.rsqrt((x * x).mean(dim=-1, keepdim=True) + eps)
    return y if weight is None else y * (1.0 + weight)


def layer_norm(x, weight, bias, eps):
    """Standard LayerNorm (biased variance) with (1 + w) and b when affine."""
    mu = x.mean(dim=-1, keepdim=True)
    var = ((x - mu) ** 2).mean(dim=-1, keepdim=True)
    y = (x - mu) / torch.sqrt(var + eps)
    return y if weight is None else y * (1.0 + weight) + bias


# ------------------------------------------------------------------------ §8
def rope(x, freqs, positions):
    """Interleaved RoPE. x: (L, H, dz), freqs: (dz/2,), positions: (L,) integers.
        theta(t,i) = t freqs[i]
        out[2i]   = x[2i] cos - x[2i+1] sin
        out[2i+1] = x[2i] sin + x[2i+1] cos"""
    ang = positions.to(x.dtype)[:, None] * freqs[None, :]        # (L, dz/2)
    cos = torch.cos(ang)[:, None, :]
    sin = torch.sin(ang)[:, None, :]
    x0 = x[..., 0::2]
    x1 = x[..., 1::2]
    out0 = x0 * cos - x1 * sin
    out1 = x0 * sin + x1 * cos
    return torch.stack([out0, out1], dim=-1).reshape(x.shape)


# ------------------------------------------------------------------------ §9
def causal_attention(q, k, v):
    """Softmax attention of one chunk, NO 1/sqrt(d) scaling. q: (Lq, H, dz), k: (Lk, H, dz),
    v: (Lk, H, dv), Lk >= Lq (the first Lk - Lq keys are the cache). The causal mask is
    bottom-right aligned: query i may see key j iff j <= i + (Lk - Lq). Returns (Lq, H*dv)."""
    Lq, Lk = q.shape[0], k.shape[0]
    off = Lk - Lq
    s = torch.einsum("ihd,jhd->hij", q, k)                      # S = q k^T
    i = torch.arange(Lq)[:, None]
    j = torch.arange(Lk)[None, :]
    s = s.masked_fill(j > i + off, float("-inf"))
    pr = torch.softmax(s, dim=-1)
    o = torch.einsum("hij,jhd->ihd", pr, v)                     # O = P v
    return o.reshape(Lq, -1)


# ------------------------------------------------------------------------ the model
class Megalodon:
    def __init__(self, conf, state_dict, dtype=torch.float64, cema_impl="fft",
                 check_cema=False):
        """state_dict: official names (§12) -> tensors (any float dtype; converted to
        `dtype`). cema_impl: "fft" (official path) or "recurrence". check_cema: also run the
        other CEMA implementation in every call and record the max abs difference in
        self.cema_max_diff (y and h_L)."""
        self.conf = conf
        self.dtype = dtype
        self.cema_impl = cema_impl
        self.check_cema = check_cema
        self.cema_max_diff = 0.0
        self.p = {}
        for name, t in state_dict.items():
            self.p[name] = t.clone() if name.endswith("prior_count") else t.to(dtype)
        D, H = conf.model_dim, conf.num_heads
        self.dz = conf.z_dim // H
        self.dv = conf.value_dim // H
        assert self.p["rope.freqs"].shape == (self.dz // 2,)

    # ------------------------------------------------------------ state
    def new_cache(self):
        c = self.conf
        empty_k = torch.zeros(0, c.z_dim, dtype=self.dtype)
        empty_v = torch.zeros(0, c.value_dim, dtype=self.dtype)
        return Cache([LayerCache(empty_k, empty_v) for _ in range(c.num_layers)])

    def _norm_state(self, prefix, state):
        if state is not None:
            return state
        return fresh_norm_state(self.p[prefix + ".prior_count"], self.p[prefix + ".prior_mean"],
                                self.p[prefix + ".prior_logv"])

    # ------------------------------------------------------------ §6 (dispatch)
    def cema(self, prefix, x, hx):
        P = self.p
        p, q, eta = cema_coefficients(P[prefix + ".alpha"], P[prefix + ".delta"],
                                      P[prefix + ".theta"], P[prefix + ".gamma"])
        omega = P[prefix + ".omega"]
        impls = {"fft": cema_fft, "recurrence": cema_recurrence}
        y, h = impls[self.cema_impl](x, p, q, eta, omega, hx)
        if self.check_cema:
            other = "recurrence" if self.cema_impl == "fft" else "fft"
            y2, h2 = impls[other](x, p, q, eta, omega, hx)
            diff = max((y - y2).abs().max().item(), (h - h2).abs().max().item())
            self.cema_max_diff = max(self.cema_max_diff, diff)
        return y, h

    # ------------------------------------------------------------ §7
    def mega(self, i, x, lc):
        """MEGA sub-layer of layer i. x: (L, D) block input; lc: LayerCache.
        Returns y = x + h (L, D) and the new LayerCache."""
        c, P = self.conf, self.p
        pre = "layers.%d.mega." % i
        L = x.shape[0]
        H, dz, dv, C, eps = c.num_heads, self.dz, self.dv, c.chunk_size, c.norm_eps
        n = lc.n

        # xt = TimestepNorm(x; carried stats)
        xt, norm_state = timestep_norm(x, P[pre + "timenorm.weight"], P[pre + "timenorm.bias"],
                                       self._norm_state(pre + "timenorm", lc.norm),
                                       c.norm_num_groups, eps)
        # c = CEMA(xt; hx)
        cx, hx = self.cema(pre + "cema", xt, lc.hx)
        # mx = RMSNorm(c) (1 + w)
        mx = rms_norm(cx, P.get(pre + "rmsnorm.weight") if c.norm_affine else None, eps)
        # z = wz(mx), per-head RMSNorm without affine
        z = linear(mx, P[pre + "wz.weight"], P[pre + "wz.bias"])
        z = rms_norm(z.reshape(L, H, dz), None, eps).reshape(L, -1)
        # q = z (1 + gamma[0]) / sqrt(dz) + beta[0] ; k = z (1 + gamma[1]) / sqrt(dz) + beta[1]
        scale = (P[pre + "gamma"] + 1.0) / math.sqrt(dz)
        q = z * scale[0] + P[pre + "beta"][0]
        k = z * scale[1] + P[pre + "beta"][1]
        # v = silu(wv(xt)) (from the TimestepNorm output), r = silu(wr(mx))
        v = silu(linear(xt, P[pre + "wv.weight"], P[pre + "wv.bias"]))
        r = silu(linear(mx, P[pre + "wr.weight"], P[pre + "wr.bias"]))

        q = q.reshape(L, H, dz)
        k = k.reshape(L, H, dz)
        v = v.reshape(L, H, dv)
        freqs = P["rope.freqs"]
        if n == 0 and L % C == 0:
            # whole chunks, independent, RoPE positions 0..C-1 in every chunk; cache stays empty
            outs = []
            pos = torch.arange(C)
            for s in range(0, L, C):
                qs = rope(q[s:s + C], freqs, pos)
                ks = rope(k[s:s + C], freqs, pos)
                outs.append(causal_attention(qs, ks, v[s:s + C]))
            a = torch.cat(outs, dim=0)
            new_k, new_v = lc.k[:0], lc.v[:0]
        else:
            # one (partial) chunk continuing the cache: positions n..n+L-1, cache prepended
            assert n + L <= C, "call crosses a chunk boundary (n=%d, L=%d, C=%d)" % (n, L, C)
            pos = torch.arange(n, n + L)
            qs = rope(q, freqs, pos)
            ks = rope(k, freqs, pos)
            k_all = torch.cat([lc.k.reshape(n, H, dz), ks], dim=0)
            v_all = torch.cat([lc.v.reshape(n, H, dv), v], dim=0)
            a = causal_attention(qs, k_all, v_all)
            if n + L == C:        # chunk complete: the KV cache is emptied (§14 step 4)
                new_k, new_v = lc.k[:0], lc.v[:0]
            else:
                new_k, new_v = k_all.reshape(n + L, -1), v_all.reshape(n + L, -1)

        # h = wh1(mx) + wh2(a * r) ; y = x + h
        h = linear(mx, P[pre + "wh1.weight"], P[pre + "wh1.bias"]) + linear(a * r, P[pre + "wh2.weight"])
        y = x + h
        return y, LayerCache(new_k, new_v, norm_state, hx)

    # ------------------------------------------------------------ §10
    def nffn(self, i, y, x_in):
        """Normalized FFN: out = x_in + alpha * fc2( silu(fc1 xn) [* fc3 xn] ), xn = LN(y)."""
        c, P = self.conf, self.p
        pre = "layers.%d.nffn." % i
        if c.norm_affine:
            xn = layer_norm(y, P[pre + "norm.weight"], P[pre + "norm.bias"], c.norm_eps)
        else:
            xn = layer_norm(y, None, None, c.norm_eps)
        a = silu(linear(xn, P[pre + "fc1.weight"]))
        if c.swiglu:
            a = a * linear(xn, P[pre + "fc3.weight"])
        o = linear(a, P[pre + "fc2.weight"])
        if c.rescale_nffn:
            o = o * P[pre + "alpha"]
        return x_in + o                                       # two-hop residual (§3)

    # ------------------------------------------------------------ §2 / §14
    def forward(self, tokens, cache=None):
        """Full forward (cache None: fresh state; L < C or L % C == 0) or incremental
        forward (cache given: cache.n + L <= C, or cache.n == 0 and L % C == 0).
        Returns logits (L, V'), intermediates, new cache."""
        c, P = self.conf, self.p
        C = c.chunk_size
        tokens = torch.as_tensor(tokens, dtype=torch.long)
        L = tokens.shape[0]
        assert L >= 1
        if cache is None:
            assert L < C or L % C == 0, "full forward needs L < C or L % C == 0"
            cache = self.new_cache()
        n = cache.n
        assert n + L <= C or (n == 0 and L % C == 0), "illegal call: n=%d L=%d C=%d" % (n, L, C)

        inter = {"attn_out": [], "out": []}
        # x = embed[tokens] (* sqrt(D))
        x = P["embed.weight"][tokens]
        if c.scale_emb:
            x = x * math.sqrt(c.model_dim)
        inter["embd"] = x
        new_layers = []
        for i in range(c.num_layers):
            y, lc = self.mega(i, x, cache.layers[i])          # y = x + h
            out = self.nffn(i, y, x)                          # out = x + FFN(LN(y))
            inter["attn_out"].append(y)
            inter["out"].append(out)
            new_layers.append(lc)
            x = out
        # final TimestepNorm with its own state
        xf, fstate = timestep_norm(x, P["output.final_norm.weight"], P["output.final_norm.bias"],
                                   self._norm_state("output.final_norm", cache.final_norm),
                                   c.norm_num_groups, c.norm_eps)
        inter["output_norm"] = xf
        w_out = P["embed.weight"] if c.share_emb else P["output.output.weight"]
        logits = xf @ w_out.t()
        inter["logits"] = logits
        return logits, inter, Cache(new_layers, fstate, cache.n_past + L)

    def forward_split(self, tokens, split, cache=None, snapshots=False):
        """Run tokens as consecutive incremental calls of the lengths in `split`.
        Returns concatenated intermediates, the final cache, and (if snapshots) the list of
        caches after every call."""
        tokens = torch.as_tensor(tokens, dtype=torch.long)
        assert sum(split) == tokens.shape[0]
        cache = self.new_cache() if cache is None else cache
        parts, snaps, s = [], [], 0
        for l in split:
            _, inter, cache = self.forward(tokens[s:s + l], cache)
            parts.append(inter)
            snaps.append(cache)
            s += l
        return concat_intermediates(parts), cache, (snaps if snapshots else None)


def concat_intermediates(parts):
    out = {}
    for key in ("embd", "output_norm", "logits"):
        out[key] = torch.cat([p[key] for p in parts], dim=0)
    for key in ("attn_out", "out"):
        out[key] = [torch.cat([p[key][i] for p in parts], dim=0) for i in range(len(parts[0][key]))]
    return out


# ------------------------------------------------------------------------ self-test
def _self_test():
    """Unit checks of the pieces that have two independent formulations."""
    torch.manual_seed(0)
    dt = torch.float64
    # CEMA: FFT path vs recurrence, with and without carried state, many lengths
    D, N = 5, 4
    alpha, delta = torch.randn(D, N, 1, dtype=dt) * 0.5, torch.randn(D, N, 1, dtype=dt) * 0.5
    theta, gamma = torch.randn(D, 1, 1, dtype=dt), torch.randn(D, N, 2, dtype=dt)
    omega = torch.randn(D, 1, dtype=dt)
    p, q, eta = cema_coefficients(alpha, delta, theta, gamma)
    worst = 0.0
    for L in list(range(1, 40)) + [64, 100]:
        x = torch.randn(L, D, dtype=dt)
        for hx in (None, torch.randn(D, N, dtype=torch.complex128)):
            y1, h1 = cema_fft(x, p, q, eta, omega, hx)
            y2, h2 = cema_recurrence(x, p, q, eta, omega, hx)
            worst = max(worst, (y1 - y2).abs().max().item(), (h1 - h2).abs().max().item())
    assert worst < 1e-9, worst
    # TimestepNorm: Welford vs closed form
    x = torch.randn(23, 12, dtype=dt) * 3 + 1
    w, b = torch.randn(12, dtype=dt) * 0.1, torch.randn(12, dtype=dt) * 0.1
    st = fresh_norm_state(torch.tensor(0), torch.zeros(4, dtype=dt), torch.zeros(4, dtype=dt))
    y1, _ = timestep_norm(x, w, b, st, 4, 1e-5)
    y2 = timestep_norm_closed_form(x, w, b, 4, 1e-5)
    tn = (y1 - y2).abs().max().item()
    assert tn < 1e-9, tn
    print("self-test ok: cema fft/recurrence max diff %.3e, timestep norm welford/closed %.3e"
          % (worst, tn))


if __name__ == "__main__":
    _self_test()
