"""Generate the gradient golden files tests/golden/grad-*.gguf (training tests).

Run from the top of the tree:   /usr/bin/python3 tests/reference/make_grad_golden.py

For every case: read one of the golden models of tests/golden/ (made by make_golden.py),
draw B rows of L+1 token ids (deterministic seed), and compute with the float64 reference
(megalodon_ref.py) and PyTorch autograd
  * the training loss: the mean token cross-entropy over all B*L targets, where row b has
    inputs ids[b, 0..L-1] and targets ids[b, 1..L] and starts from a fresh state (the
    reference's full forward without a cache; L < C or L % C == 0);
  * the gradient of that loss w.r.t. every trainable tensor: every float tensor of the
    model file except rope.freqs and the timestep norms' prior_mean / prior_logv buffers
    (with share_emb the one tensor token_embd.weight receives both contributions).
For some cases also a short AdamW trajectory (torch.optim.AdamW semantics: decoupled weight
decay p -= lr*wd*p, bias-corrected moments; global gradient-norm clipping as
torch.nn.utils.clip_grad_norm_; the learning-rate schedule of mg_train_lr), with a fresh
batch every step.

Before writing, the generator checks itself and fails loudly otherwise:
  * the gradients with the CEMA recurrence equal those with the FFT path (1e-9 relative);
  * fourth-order central differences of the float64 loss agree with autograd on sampled elements
    of every tensor (1e-6 relative to the tensor's largest gradient);
  * the AdamW trajectory of torch.optim.AdamW + clip_grad_norm_ equals a hand-written
    update with the documented formulas (1e-12);
  * every written file reads back with the same keys and tensors.
It also measures how sensitive the AdamW trajectory is to float32-level noise in the
gradients (a twin run with the weights rounded to float32 after every step and every
gradient perturbed by 1e-5 of its tensor's largest element) and prints that deviation in
units of the peak learning rate, which is what the C test's tolerance is based on.
"""
import math
import os
import sys
from collections import OrderedDict

import numpy as np
import torch

sys.dont_write_bytecode = True          # keep the tree free of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gguf_io as G  # noqa: E402
import make_golden as MG  # noqa: E402
from megalodon_ref import Megalodon, ModelConf  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
GOLDEN_DIR = os.path.normpath(os.path.join(HERE, "..", "golden"))
DT = torch.float64

# (case, golden model, B, L, seed, AdamW trajectory or None)
ADAMW = dict(n_steps=10, batch=2, seq_len=16, lr=3e-3, beta1=0.9, beta2=0.98, eps=1e-6,
             weight_decay=0.1, warmup=3, total_steps=10, schedule="linear",
             lr_init_ratio=0.1, lr_end_ratio=0.1, clip=None)   # clip: chosen per case
CASES = [
    ("base", "base", 2, 24, 201, dict(ADAMW)),                 # L = 3C
    ("base_short", "base", 2, 5, 202, None),                   # L < C
    ("heads2_swiglu", "heads2_swiglu", 2, 32, 203, None),      # L = 4C
    ("share_scale", "share_scale", 2, 24, 204, dict(ADAMW, seq_len=8)),
    ("rescale_noaffine", "rescale_noaffine", 3, 16, 205, None),  # L = 2C, 3 rows
    ("f16", "f16", 2, 8, 206, None),                           # L = C, F16 weights in the file
    ("bf16", "bf16", 2, 16, 207, None),                        # L = 2C, BF16 weights
    ("base_long", "base", 3, 96, 208, None),                   # 288 tokens: several row blocks
]
FD_SAMPLES = 4          # finite-difference elements checked per tensor
FD_STEP = 2e-4
FD_TOL = 1e-6
REC_TOL = 1e-9


# ----------------------------------------------------------------------------- model
def model_conf(model_name):
    over = {c[0]: c[1] for c in MG.CASES}[model_name]
    conf = ModelConf(**dict(MG.BASE, **over))
    conf.norm_eps = float(np.float32(conf.norm_eps))     # as stored in the model file
    return conf


def trainable(conf):
    """[(GGUF name, official name)] of the trainable tensors, in model-file order."""
    out = []
    for gname, oname in MG.tensor_map(conf):
        if gname == "rope.freqs" or oname.rsplit(".", 1)[1] in ("prior_count", "prior_mean",
                                                                 "prior_logv"):
            continue
        out.append((gname, oname))
    return out


def mean_loss(conf, sd, weights, ids, cema_impl="fft"):
    """Mean token cross-entropy of the rows of ids (B, L+1) with `weights` (official name ->
    float64 tensor) replacing the state dict's values. Returns a 0-dim tensor."""
    m = Megalodon(conf, sd, cema_impl=cema_impl)
    for name, w in weights.items():
        m.p[name] = w
    B, L1 = ids.shape
    L = L1 - 1
    total = 0.0
    for b in range(B):
        logits, _, _ = m.forward(ids[b, :L])
        total = total + torch.nn.functional.cross_entropy(logits, ids[b, 1:], reduction="sum")
    return total / (B * L)


def loss_and_grads(conf, sd, weights, ids, cema_impl="fft"):
    leaves = OrderedDict((n, w.detach().clone().requires_grad_(True)) for n, w in weights.items())
    loss = mean_loss(conf, sd, leaves, ids, cema_impl)
    grads = torch.autograd.grad(loss, list(leaves.values()))
    return loss.item(), OrderedDict(zip(leaves.keys(), grads))


def rel_diff(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-300)).item()


def check(what, d, tol):
    if not d <= tol:
        raise AssertionError("grad golden self-check FAILED: %s: %.3e > %.0e" % (what, d, tol))
    return d


def finite_differences(conf, sd, weights, ids, grads, gen):
    """Worst |fd - autograd| / max|grad of the tensor| over sampled elements."""
    worst = 0.0
    with torch.no_grad():
        for name, g in grads.items():
            n = g.numel()
            # the largest element plus random ones
            idx = [int(g.abs().argmax())] + torch.randint(0, n, (FD_SAMPLES - 1,),
                                                          generator=gen).tolist()
            scale = g.abs().max().clamp_min(1e-12).item()
            for i in idx:
                f = {}
                for k in (-2, -1, 1, 2):
                    w = dict(weights)
                    wk = weights[name].clone()
                    wk.view(-1)[i] += k * FD_STEP
                    w[name] = wk
                    f[k] = mean_loss(conf, sd, w, ids).item()
                # fourth-order central difference
                fd = (f[-2] - 8 * f[-1] + 8 * f[1] - f[2]) / (12 * FD_STEP)
                worst = max(worst, abs(fd - g.view(-1)[i].item()) / scale)
    return worst


# ----------------------------------------------------------------------------- AdamW
class ClipTooClose(Exception):
    """A gradient norm within 1e-3 of the clip threshold (the golden would be fragile)."""


def lr_ratio(a, s):
    """r(s) of mg_train_lr (float32 parameters widened to double, as the C code stores them)."""
    init, end = a["lr_init_ratio"], a["lr_end_ratio"]
    warm, total = a["warmup"], a["total_steps"]
    if s < warm:
        return init + (1.0 - init) * s / warm
    p = min(max((s - warm) / (total - warm), 0.0), 1.0) if total > warm else 1.0
    if a["schedule"] == "linear":
        return 1.0 - (1.0 - end) * p
    if a["schedule"] == "cosine":
        return end + (1.0 - end) * (1.0 + math.cos(math.pi * p)) / 2.0
    return 1.0


def f32v(x):
    return float(np.float32(x))


def adamw_batches(conf, a, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, conf.vocab_size, (a["n_steps"], a["batch"], a["seq_len"] + 1),
                         generator=g, dtype=torch.int64)


def adamw_run(conf, sd, names, a, batches, noise=None):
    """The trajectory with torch.optim.AdamW + clip_grad_norm_, cross-checked against a
    hand-written update. noise: None, or a torch.Generator for the float32-noise twin.
    Returns losses, grad norms (before clipping), lrs, final weights (official names)."""
    params = OrderedDict((n, sd[n].to(DT).clone().requires_grad_(True)) for n in names)
    opt = torch.optim.AdamW(list(params.values()), lr=a["lr"], betas=(a["beta1"], a["beta2"]),
                            eps=a["eps"], weight_decay=a["weight_decay"])
    # hand-written twin
    hw = OrderedDict((n, sd[n].to(DT).clone()) for n in names)
    mom = {n: torch.zeros_like(w) for n, w in hw.items()}
    vel = {n: torch.zeros_like(w) for n, w in hw.items()}
    b1, b2, eps, wd = a["beta1"], a["beta2"], a["eps"], a["weight_decay"]
    losses, norms, lrs = [], [], []
    hw_worst = 0.0
    for s in range(a["n_steps"]):
        opt.zero_grad()
        loss = mean_loss(conf, sd, params, batches[s])
        loss.backward()
        if noise is not None:
            with torch.no_grad():
                for p in params.values():
                    # float32-level error: relative 1e-5 per element plus 1e-7 of the
                    # tensor's largest element (not on exact zeros: embedding rows of
                    # tokens absent from the batch)
                    scale = p.grad.abs().max()
                    nz = (p.grad != 0).to(DT)
                    p.grad *= 1.0 + 1e-5 * torch.randn(p.grad.shape, generator=noise, dtype=DT)
                    p.grad += nz * 1e-7 * scale * torch.randn(p.grad.shape, generator=noise,
                                                              dtype=DT)
        grads = {n: p.grad.detach().clone() for n, p in params.items()}
        norm = math.sqrt(sum((g * g).sum().item() for g in grads.values()))
        clip = a["clip"]
        if noise is None and clip > 0 and abs(norm - clip) < 1e-3 * clip:
            raise ClipTooClose()
        if clip > 0:
            tn = torch.nn.utils.clip_grad_norm_(list(params.values()), clip)
            assert abs(tn.item() - norm) <= 1e-12 * norm
        lr = a["lr"] * lr_ratio(a, s)
        for group in opt.param_groups:
            group["lr"] = lr
        opt.step()
        # hand-written: clip, decoupled decay, Adam with bias correction
        c = clip / (norm + 1e-6) if (clip > 0 and norm > clip) else 1.0
        t = s + 1
        for n in names:
            g = grads[n] * c
            hw[n] = hw[n] * (1.0 - lr * wd)
            mom[n] = b1 * mom[n] + (1.0 - b1) * g
            vel[n] = b2 * vel[n] + (1.0 - b2) * g * g
            mhat = mom[n] / (1.0 - b1 ** t)
            vhat = vel[n] / (1.0 - b2 ** t)
            hw[n] = hw[n] - lr * mhat / (vhat.sqrt() + eps)
            if noise is None:
                hw_worst = max(hw_worst, (hw[n] - params[n].detach()).abs().max().item())
            else:
                hw[n] = params[n].detach().clone()
        if noise is not None:     # the C trainer keeps float32 weights
            with torch.no_grad():
                for p in params.values():
                    p.copy_(p.to(torch.float32).to(DT))
        losses.append(loss.item())
        norms.append(norm)
        lrs.append(lr)
    if noise is None:
        check("AdamW: torch.optim vs hand-written", hw_worst, 1e-12)
    final = OrderedDict((n, p.detach()) for n, p in params.items())
    return losses, norms, lrs, final


# ----------------------------------------------------------------------------- main
def f32(t):
    return t.detach().to(torch.float32).numpy()


def run_case(case, model_name, B, L, seed, adamw):
    conf = model_conf(model_name)
    C = conf.chunk_size
    assert L < C or L % C == 0
    sd = MG.state_dict_from_model_file(os.path.join(GOLDEN_DIR, model_name + ".gguf"), conf)
    names = trainable(conf)
    weights = OrderedDict((o, sd[o].to(DT)) for _, o in names)
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, conf.vocab_size, (B, L + 1), generator=gen, dtype=torch.int64)

    loss, grads = loss_and_grads(conf, sd, weights, ids)
    loss_r, grads_r = loss_and_grads(conf, sd, weights, ids, cema_impl="recurrence")
    d_rec = check("%s: loss FFT vs recurrence CEMA" % case, abs(loss - loss_r) / abs(loss), REC_TOL)
    for n in grads:
        d_rec = max(d_rec, check("%s: grad %s FFT vs recurrence CEMA" % (case, n),
                                 rel_diff(grads_r[n], grads[n]), REC_TOL))
    d_fd = check("%s: finite differences" % case,
                 finite_differences(conf, sd, weights, ids, grads, gen), FD_TOL)

    w = G.GGUFWriter()
    w.add_str("general.architecture", "megalodon-grad-golden")
    w.add_str("grad.case", case)
    w.add_str("grad.model", model_name + ".gguf")
    w.add_u32("train.batch", B)
    w.add_u32("train.seq_len", L)
    w.add_kv("train.loss", G.T_FLOAT64, float(loss))
    w.add_tensor("ids", ids.numpy().astype(np.int32), G.GGML_I32)        # ne [L+1, B]
    for gname, oname in names:
        w.add_tensor("grad." + gname, f32(grads[oname]), G.GGML_F32)

    msg = ""
    if adamw:
        a = dict(adamw)
        for k in ("lr", "beta1", "beta2", "eps", "weight_decay", "lr_init_ratio", "lr_end_ratio"):
            a[k] = f32v(a[k])                 # the C trainer holds these as float
        batches = adamw_batches(conf, a, seed + 1000)
        onames = [o for _, o in names]
        if a["clip"] is None:
            # a clip threshold inside the range of the gradient norms, so that clipping is
            # active on some steps and not on others (and no norm is close to it)
            _, norms0, _, _ = adamw_run(conf, sd, onames, dict(a, clip=0.0), batches)
            srt = sorted(norms0)
            cands = [round((srt[i] + srt[i + 1]) / 2, 3) for i in (4, 3, 5, 2, 6)]
        else:
            cands = [a["clip"]]
        for clip in cands:
            a["clip"] = f32v(clip)
            try:
                losses, norms, lrs, final = adamw_run(conf, sd, onames, a, batches)
            except ClipTooClose:
                continue
            n_clipped = sum(1 for x in norms if x > a["clip"])
            if 0 < n_clipped < len(norms):
                break
        else:
            raise AssertionError("%s: no usable clip threshold" % case)
        _, _, _, final_n = adamw_run(conf, sd, onames, a, batches,
                                     noise=torch.Generator().manual_seed(seed + 2000))
        sens = max((final_n[o] - final[o]).abs().max().item() for o in onames) / a["lr"]
        moved = max((final[o] - sd[o].to(DT)).abs().max().item() for o in onames) / a["lr"]
        w.add_u32("adamw.n_steps", a["n_steps"])
        w.add_u32("adamw.batch", a["batch"])
        w.add_u32("adamw.seq_len", a["seq_len"])
        for k in ("lr", "beta1", "beta2", "eps", "weight_decay", "clip", "lr_init_ratio",
                  "lr_end_ratio"):
            w.add_f32("adamw." + k, a[k])
        w.add_u32("adamw.warmup", a["warmup"])
        w.add_u32("adamw.total_steps", a["total_steps"])
        w.add_str("adamw.schedule", a["schedule"])
        w.add_tensor("adamw.ids", batches.numpy().astype(np.int32), G.GGML_I32)  # [L+1, B, n]
        w.add_tensor("adamw.loss", np.array(losses, dtype=np.float32), G.GGML_F32)
        w.add_tensor("adamw.grad_norm", np.array(norms, dtype=np.float32), G.GGML_F32)
        w.add_tensor("adamw.lr_sched", np.array(lrs, dtype=np.float32), G.GGML_F32)
        for gname, oname in names:
            w.add_tensor("adamw.final." + gname, f32(final[oname]), G.GGML_F32)
        msg = ("  adamw: clip %.2f (clipped %d/%d), loss %.4f -> %.4f, max move %.2f lr, "
               "f32-noise twin %.2e lr" % (a["clip"], n_clipped, len(norms), losses[0],
                                            losses[-1], moved, sens))

    path = os.path.join(GOLDEN_DIR, "grad-%s.gguf" % case)
    w.write(path)
    MG.verify_roundtrip(path, w)
    gmax = max(g.abs().max().item() for g in grads.values())
    print("grad-%-17s B=%d L=%2d loss %.6f  |grad|max %.3f  fft/rec %.1e  fd %.1e  %6d B%s"
          % (case, B, L, loss, gmax, d_rec, d_fd, os.path.getsize(path), msg))
    return os.path.getsize(path)


def main():
    only = sys.argv[1:]
    total = 0
    for c in CASES:
        if not only or c[0] in only:
            total += run_case(*c)
    print("all checks passed; %d bytes written" % total)


if __name__ == "__main__":
    main()
