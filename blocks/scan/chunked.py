"""Chunked selective-scan core (no autograd): forward and explicit backward for the `fast` backend.

Why it is built this way (pure PyTorch on a few CPU cores is bound by passes over the (B, L, N, D) state
tensors, by fresh multi-MB allocations, which the C allocator maps and page-faults on first touch, and by
the number of ops, since each op that wakes the thread pool can stall on a busy machine):
* The recurrence h_t = a_t * h_{t-1} + x_t is linear, so it splits exactly into nc chunks of T steps:
  scan every chunk at once from a zero state keeping only each chunk's end state and decay product, pass
  the true states along the chunks (one small step per chunk), then rescan every chunk from its true
  incoming state. That is about 7T + nc ops forward and 13T + 2nc backward instead of ~10L.
* All work for one in-chunk position t (decays, inputs, scan step, contraction with C; in the backward the
  state-gradient step and every input gradient) is done on that position's slab of all chunks, one slab
  after the other, so no big temporaries are made and each slab is reused while it is still in cache.
  What remains is ~7 passes over state-sized tensors forward and ~12 backward: that, not arithmetic, is
  what bounds this backend.
* The batch is processed in sub-batches so that the state tensors stay well under the allocator's mmap
  threshold (32 MiB) and are reused instead of page-faulted, without multiplying the op count too much.
* It never divides by a decay and never exponentiates a positive number: decays a = exp(delta*A) lie in
  [0, 1] for delta >= 0 and A <= 0, and their running products are built by multiplication, so any delta
  from softplus (1e4 or 1e-30) and any A = -exp(A_log) (-exp(10) or -1e-30) stays finite; a product that
  underflows becomes exactly 0, which is also the exact limit. (A log-space cumsum with exp(-S) overflows.)

Layout per sub-batch: big tensors are (T, nc*b, N, D), position-in-chunk outermost (slab t is contiguous,
so batched matmuls apply to it directly) and channels innermost (broadcasts run along a long contiguous
axis). Small (b, D, L) tensors become (T, nc*b, D). L is padded to nc*T with delta = 0 and u = 0 (decay 1,
input 0), which leaves the state, and so last_state, unchanged.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

STATE_ELEMENTS = 1 << 22  # per sub-batch state tensor: 16 MiB in fp32, under glibc's 32 MiB mmap threshold


def plan(batch: int, dim: int, length: int, state: int) -> tuple[int, int, int]:
    """(T, nc, sub_batch): T ~ sqrt(0.15 L) balances ~20T in-chunk ops against ~3L/T cross-chunk ops; the
    sub-batch keeps each (T, nc*b, N, D) tensor within STATE_ELEMENTS."""
    if length <= 4:
        T = max(length, 1)
    else:
        T = max(1, round(math.sqrt(0.15 * length)))
        if length % T:
            divisors = [k for k in range(max(2, int(0.7 * T)), int(1.5 * T) + 1) if length % k == 0]
            if divisors:
                T = min(divisors, key=lambda k: abs(k - T))
    nc = -(-length // T)
    sub = max(1, min(batch, STATE_ELEMENTS // (T * nc * state * dim)))
    return T, nc, sub


def _to_chunks(t: Tensor, T: int, nc: int) -> Tensor:
    """(b, X, L) -> (T, nc*b, X), zero-padded at the end of time, contiguous."""
    b, x, length = t.shape
    pad = T * nc - length
    if pad:
        t = F.pad(t, (0, pad))
    # contiguous() also densifies expanded gradients (e.g. of out.sum()), which would make bmm loop per matrix
    return t.view(b, x, nc, T).permute(3, 2, 0, 1).contiguous().view(T, nc * b, x)


def _from_chunks(t: Tensor, b: int, length: int) -> Tensor:
    """(T, nc*b, X) -> (b, X, L), dropping the padding."""
    T, ncb, x = t.shape
    nc = ncb // b
    return t.view(T, nc, b, x).permute(2, 3, 1, 0).reshape(b, x, T * nc)[:, :, :length]


class _Operand:
    """B or C for one sub-batch: shared (D, N), or per step (T, M, G, N) with M = nc*b.

    Gives the three things the scan needs from it, for one slab t: the outer product with a (M, D) tensor,
    the contraction of a (M, N, D) slab over N, and the gradient contribution of a slab.
    """

    def __init__(self, t: Tensor, T: int, nc: int, dim: int) -> None:
        self.shared = t.dim() == 2
        self.dim = dim
        self.acc: Optional[Tensor] = None
        self.grad_chunks: Optional[Tensor] = None
        if self.shared:
            self.n = t.shape[1]
            self.groups = dim
            self.nd = t.t().contiguous()  # (N, D)
        else:
            b, g, n, length = t.shape
            self.n, self.groups, self.b, self.length = n, g, b, length
            self.tmgn = _to_chunks(t.reshape(b, g * n, length), T, nc).view(T, nc * b, g, n)
            if g > 1:
                self.tmng = self.tmgn.transpose(2, 3).contiguous()  # (T, M, N, G)

    def expand(self, w: Tensor, t: int, out: Tensor) -> None:
        """out (M, N, D) = w (M, D) outer this operand at step t."""
        if self.shared:
            torch.mul(w.unsqueeze(1), self.nd, out=out)
        elif self.groups == 1:
            torch.mul(w.unsqueeze(1), self.tmgn[t].transpose(1, 2), out=out)
        else:
            m, g = w.shape[0], self.groups
            op = self.tmng[t].unsqueeze(-1)  # (M, N, G, 1)
            torch.mul(w.view(m, 1, g, self.dim // g), op, out=out.view(m, self.n, g, -1))

    def contract(self, big: Tensor, t: int, out: Tensor, tmp: Tensor) -> None:
        """out (M, D) = sum_n big (M, N, D) * operand at step t; tmp is a scratch slab."""
        if self.shared:
            torch.sum(torch.mul(big, self.nd, out=tmp), 1, out=out)
        elif self.groups == 1:
            torch.bmm(self.tmgn[t], big, out=out.unsqueeze(1))
        else:
            h = self.dim // self.groups
            for j in range(self.groups):
                part = torch.bmm(self.tmgn[t][:, j : j + 1], big[:, :, j * h : (j + 1) * h])
                out[:, j * h : (j + 1) * h] = part.squeeze(1)

    def add_grad(self, big: Tensor, w: Tensor, t: int) -> None:
        """Record the gradient of this operand at step t from d out = big (M, N, D) and the factor w (M, D)."""
        if self.shared:
            if self.acc is None:
                self.acc = torch.zeros_like(big)
            self.acc.addcmul_(big, w.unsqueeze(1))
            return
        if self.grad_chunks is None:
            self.grad_chunks = big.new_empty(self.tmgn.shape)
        # (M, 1, D) @ (M, D, N) with the slab read transposed: BLAS takes it as is and it measured ~3x
        # faster than the (M, N, D) @ (M, D, 1) form
        if self.groups == 1:
            torch.bmm(w.unsqueeze(1), big.transpose(1, 2), out=self.grad_chunks[t])
        else:
            h = self.dim // self.groups
            for j in range(self.groups):
                cols = slice(j * h, (j + 1) * h)
                part = torch.bmm(w[:, cols].unsqueeze(1), big[:, :, cols].transpose(1, 2))
                self.grad_chunks[t][:, j] = part.squeeze(1)

    def grad(self) -> Tensor:
        """The accumulated gradient: (D, N) for a shared operand, else (b, G, N, L)."""
        if self.shared:
            assert self.acc is not None
            return self.acc.sum(0).t()
        assert self.grad_chunks is not None
        b, g, n = self.b, self.groups, self.n
        flat = _from_chunks(self.grad_chunks.view(self.grad_chunks.shape[0], -1, g * n), b, self.length)
        return flat.reshape(b, g, n, self.length)


def _forward_sub(u, delta, A, Bsub, Csub, T, nc, need_saved):
    """Forward for one sub-batch; returns y (b, D, L), the last state (b, D, N) and the tensors backward needs."""
    b, d, length = u.shape
    n = A.shape[1]
    m = nc * b
    At = A.t().contiguous()  # (N, D)
    dl = _to_chunks(delta, T, nc)  # (T, M, D)
    du = _to_chunks(delta * u, T, nc)
    Bo, Co = _Operand(Bsub, T, nc, d), _Operand(Csub, T, nc, d)
    a = u.new_empty(T, m, n, d)
    h = u.new_empty(T, m, n, d)
    y = u.new_empty(T, m, d)
    tmp = u.new_empty(m, n, d) if Co.shared else None
    # phase A: decays, inputs and (with several chunks) each chunk's end state and decay product
    end = decay = None
    for t in range(T):
        torch.mul(dl[t].unsqueeze(1), At, out=a[t]).exp_()
        Bo.expand(du[t], t, h[t])
        if nc == 1 or T == 1:  # one chunk, or one step per chunk: a plain scan over time
            if t:
                h[t].addcmul_(a[t], h[t - 1])
            elif nc > 1:
                h4, a4 = h[0].view(nc, b, n, d), a[0].view(nc, b, n, d)
                for k in range(1, nc):
                    h4[k].addcmul_(a4[k], h4[k - 1])
            Co.contract(h[t], t, y[t], tmp)
        elif t == 0:
            end, decay = h[0], a[0]  # read-only views until t = 1 makes new tensors
        elif t == 1:
            end, decay = torch.addcmul(h[1], a[1], end), a[1] * decay
        else:
            torch.addcmul(h[t], a[t], end, out=end)
            decay.mul_(a[t])
    if nc > 1 and T > 1:
        # phase B: true state at the end of chunk k (chunks are the outer factor of M = nc*b)
        end4, decay4 = end.view(nc, b, n, d), decay.view(nc, b, n, d)
        for k in range(1, nc - 1):
            end4[k].addcmul_(decay4[k], end4[k - 1])
        # phase C: rescan every chunk from its true incoming state, contracting with C on the way
        h[0].view(nc, b, n, d)[1:].addcmul_(a[0].view(nc, b, n, d)[1:], end4[:-1])
        for t in range(T):
            if t:
                h[t].addcmul_(a[t], h[t - 1])
            Co.contract(h[t], t, y[t], tmp)
    last = h[T - 1].view(nc, b, n, d)[nc - 1].transpose(1, 2).contiguous()
    saved = (dl, du, a, h) if need_saved else ()
    return _from_chunks(y, b, length), last, saved


def _backward_sub(u, A, Bsub, Csub, saved, dy, dlast, T, nc):
    """Backward for one sub-batch: (d_u, d_delta, dA (N, D) partial, dB, dC)."""
    dl, du, a, h = saved
    b, d, length = u.shape
    n = A.shape[1]
    m = nc * b
    At = A.t().contiguous()
    Bo, Co = _Operand(Bsub, T, nc, d), _Operand(Csub, T, nc, d)
    dyl = _to_chunks(dy, T, nc)
    g = torch.empty_like(h)
    tmp = h.new_empty(m, n, d) if Bo.shared else None
    # phase A (reverse): state-gradient seeds dy_t C_t, each chunk's start value and decay product
    start = decay = None
    for t in range(T - 1, -1, -1):
        Co.expand(dyl[t], t, g[t])
        Co.add_grad(h[t], dyl[t], t)
        if t == T - 1 and dlast is not None:
            g[t].view(nc, b, n, d)[nc - 1] += dlast.transpose(1, 2)
        if nc == 1 or t == T - 1:
            continue
        if t == T - 2:
            start, decay = torch.addcmul(g[t], a[t + 1], g[t + 1]), a[t + 1]  # decay: a read-only view
        else:
            torch.addcmul(g[t], a[t + 1], start, out=start)
            decay = a[t + 1] * decay if t == T - 3 else decay.mul_(a[t + 1])
    if nc > 1 and T == 1:  # one step per chunk: a plain reverse scan over time
        g4, a4 = g[0].view(nc, b, n, d), a[0].view(nc, b, n, d)
        for k in range(nc - 2, -1, -1):
            g4[k].addcmul_(a4[k + 1], g4[k + 1])
    elif nc > 1:
        # phase B: incoming gradient a[0, k+1] * G[0, k+1], last chunk first; start becomes the true G[0, k]
        start4, decay4 = start.view(nc, b, n, d), decay.view(nc, b, n, d)
        incoming = torch.zeros_like(start4)
        a0 = a[0].view(nc, b, n, d)
        for k in range(nc - 2, -1, -1):
            torch.mul(a0[k + 1], start4[k + 1], out=incoming[k])
            start4[k].addcmul_(decay4[k], incoming[k])
        g[T - 1].view(nc, b, n, d).add_(incoming)
    # phase C (reverse): finish the state gradient at t, then spend slab t on every input gradient
    d_du = h.new_empty(T, m, d)
    d_delta = h.new_empty(T, m, d)
    acc_A = torch.zeros_like(g[0])

    def spend(t: int) -> None:
        gt = g[t]
        Bo.contract(gt, t, d_du[t], tmp)
        Bo.add_grad(gt, du[t], t)
        # d X_t (X = delta*A, a = exp X) = g_t * h_{t-1} * a_t, with h_{-1} = 0
        if t:
            gt.mul_(h[t - 1])
        else:
            g4 = gt.view(nc, b, n, d)
            g4[1:].mul_(h[T - 1].view(nc, b, n, d)[:-1])
            g4[0].zero_()
        gt.mul_(a[t])
        acc_A.addcmul_(gt, dl[t].unsqueeze(1))
        torch.sum(gt.mul_(At), 1, out=d_delta[t])

    for t in range(T - 2, -1, -1):
        g[t].addcmul_(a[t + 1], g[t + 1])
        spend(t + 1)  # g[t + 1] is final and no longer needed by the scan
    spend(0)
    d_delta.addcmul_(d_du, _to_chunks(u, T, nc))
    d_u = d_du.mul_(dl)
    return (
        _from_chunks(d_u, b, length),
        _from_chunks(d_delta, b, length),
        acc_A.sum(0),
        Bo.grad(),
        Co.grad(),
    )


def scan_forward(u: Tensor, delta: Tensor, A: Tensor, Bm: Tensor, Cm: Tensor, need_saved: bool):
    """y = <C_t, h_t> (B, D, L), last state (B, D, N), and (tensors, meta) for `scan_backward`.

    u, delta (B, D, L), A (D, N), B/C (D, N) or (B, G, N, L), all in one float dtype; no D, z, bias, softplus.
    The tensors are a flat list so that autograd can hold them (save_for_backward frees them after backward).
    """
    batch, dim, length = u.shape
    T, nc, sub = plan(batch, dim, length, A.shape[1])
    ys, lasts, saved = [], [], []
    for i in range(0, batch, sub):
        sl = slice(i, i + sub)
        Bs = Bm if Bm.dim() == 2 else Bm[sl]
        Cs = Cm if Cm.dim() == 2 else Cm[sl]
        y, last, sv = _forward_sub(u[sl], delta[sl], A, Bs, Cs, T, nc, need_saved)
        ys.append(y)
        lasts.append(last)
        saved.extend(sv)
    if len(ys) == 1:
        return ys[0].contiguous(), lasts[0], (saved, (T, nc, sub))
    return torch.cat(ys, 0), torch.cat(lasts, 0), (saved, (T, nc, sub))


def scan_backward(u: Tensor, A: Tensor, Bm: Tensor, Cm: Tensor, saved, meta, dy: Tensor, dlast: Optional[Tensor]):
    """Gradients (u, delta, A, B, C) of `scan_forward` (same u, A, B, C) for output gradients dy and dlast."""
    T, nc, sub = meta
    dy = dy.to(u.dtype)
    parts = []
    for j, i in enumerate(range(0, u.shape[0], sub)):
        sl = slice(i, i + sub)
        Bs = Bm if Bm.dim() == 2 else Bm[sl]
        Cs = Cm if Cm.dim() == 2 else Cm[sl]
        dl_ = None if dlast is None else dlast[sl].to(u.dtype)
        parts.append(_backward_sub(u[sl], A, Bs, Cs, saved[4 * j : 4 * j + 4], dy[sl], dl_, T, nc))
    if len(parts) == 1:
        d_u, d_delta, dA, dB, dC = parts[0]
        return d_u, d_delta, dA.t(), dB, dC
    d_u = torch.cat([p[0] for p in parts], 0)
    d_delta = torch.cat([p[1] for p in parts], 0)
    dA = torch.stack([p[2] for p in parts]).sum(0).t()
    dB = torch.stack([p[3] for p in parts]).sum(0) if Bm.dim() == 2 else torch.cat([p[3] for p in parts], 0)
    dC = torch.stack([p[4] for p in parts]).sum(0) if Cm.dim() == 2 else torch.cat([p[4] for p in parts], 0)
    return d_u, d_delta, dA, dB, dC
