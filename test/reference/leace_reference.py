"""LEACE reference in PyTorch float64 (LAPACK eigh/svd), written from the paper's formulas and the
conventions of EleutherAI concept-erasure (Bessel-corrected covariances, optimal linear shrinkage of
Sigma_xx toward tr/d * I, pinv threshold max_eig * d * eps, singular values of W Sigma_xz <= svd_tol
dropped, P = I - W^+ U U^T W). For each case it writes <out>/<case>.safetensors with the data x
[n, d], the concept z [n, c] and the projection P [d, d], all float64; the TypeScript fitter must
give the same P from the same x and z."""
import argparse, json, os
import numpy as np
import torch
from safetensors.torch import save_file

p = argparse.ArgumentParser()
p.add_argument("--out", required=True)
a = p.parse_args()

# name, n, d, classes (1: one scalar 0/1 column), method, shrinkage, svd_tol
CASES = [
    ("binary_leace_shrink", 400, 24, 1, "leace", True, 0.01),
    ("binary_leace_plain", 400, 24, 1, "leace", False, 0.01),
    ("onehot3_leace_shrink", 500, 24, 3, "leace", True, 0.01),
    ("binary_orth", 400, 24, 1, "orth", False, 0.01),
    ("onehot4_orth", 500, 16, 4, "orth", False, 0.01),
]


def shrink(S, n):
    d = S.shape[0]
    tr = torch.trace(S)
    target_scale = tr / d
    # alpha = 1 - (tr^2 / n) / (||S||_F^2 - tr^2 / d), clamped to [0, 1].
    spread = (S ** 2).sum() - tr ** 2 / d
    alpha = (1 - (tr ** 2 / n) / spread).clamp(0, 1)
    return alpha * S + (1 - alpha) * target_scale * torch.eye(d, dtype=S.dtype)


def projection(x, z, method, shrinkage, svd_tol):
    n, d = x.shape
    xc = x - x.mean(0)
    zc = z - z.mean(0)
    sigma_xz = xc.T @ zc / (n - 1)
    if method == "leace":
        if shrinkage:
            sigma = shrink(xc.T @ xc / n, n)
        else:
            sigma = xc.T @ xc / (n - 1)
        evals, evecs = torch.linalg.eigh(sigma)
        keep = evals > evals.max() * d * torch.finfo(evals.dtype).eps
        evals = evals.clamp_min(0)
        inv_sqrt = torch.where(keep, evals.rsqrt(), torch.zeros_like(evals))
        sqrt = torch.where(keep, evals.sqrt(), torch.zeros_like(evals))
        W = (evecs * inv_sqrt) @ evecs.T
        W_pinv = (evecs * sqrt) @ evecs.T
    else:
        W = W_pinv = torch.eye(d, dtype=x.dtype)
    U, s, _ = torch.linalg.svd(W @ sigma_xz, full_matrices=False)
    U = U[:, s > svd_tol]
    return torch.eye(d, dtype=x.dtype) - W_pinv @ U @ U.T @ W


cases = {}
for k, (name, n, d, classes, method, shrinkage, svd_tol) in enumerate(CASES):
    rng = np.random.RandomState(100 + k)
    mixing = rng.randn(d, d) * np.geomspace(3, 1 / 3, d)
    labels = rng.randint(0, max(classes, 2), size=n)
    shifts = rng.randn(max(classes, 2), d)
    x = rng.randn(n, d) @ mixing.T + shifts[labels]
    z = labels[:, None].astype(np.float64) if classes == 1 else np.eye(classes)[labels]
    xt, zt = torch.from_numpy(x), torch.from_numpy(z)
    P = projection(xt, zt, method, shrinkage, svd_tol)
    save_file({"x": xt.contiguous(), "z": zt.contiguous(), "P": P.contiguous()}, os.path.join(a.out, f"{name}.safetensors"))
    cases[name] = {"n": n, "d": d, "classes": classes, "method": method, "shrinkage": shrinkage, "svd_tol": svd_tol}

with open(os.path.join(a.out, "cases.json"), "w") as f:
    json.dump(cases, f, indent=1)
