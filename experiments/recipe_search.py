"""Plain-PyTorch search for a ShortGAN recipe that does not collapse (scratch, not shipped)."""
import argparse, json, time, os
import torch, torch.nn.functional as F
from torchvision.utils import save_image
from shortgan.data import load_mnist_sample, to_unit_range
from shortgan.networks import ShortGANGenerator, ShortGANDiscriminator, DigitClassifier
from shortgan import metrics

torch.set_num_threads(2)
p = argparse.ArgumentParser()
p.add_argument("--pretrain", default="none")
p.add_argument("--pretrain_s", type=float, default=20)
p.add_argument("--adv_s", type=float, default=120)
p.add_argument("--pretrain_its", type=int, default=0)
p.add_argument("--adv_its", type=int, default=0)
p.add_argument("--g_sn", type=int, default=1)
p.add_argument("--d_mbstd", type=int, default=1)
p.add_argument("--d_sn", type=int, default=1)
p.add_argument("--noise_fakes", type=int, default=1)
p.add_argument("--noise", type=float, default=0.1)
p.add_argument("--real_label", type=float, default=0.9)
p.add_argument("--g_steps", type=int, default=2)
p.add_argument("--lr_g", type=float, default=2e-4)
p.add_argument("--lr_d", type=float, default=2e-4)
p.add_argument("--pre_lr", type=float, default=1e-3)
p.add_argument("--gch", type=int, default=32)
p.add_argument("--upch", type=int, default=2)
p.add_argument("--dch", type=int, default=32)
p.add_argument("--bs", type=int, default=64)
p.add_argument("--name", default="run")
p.add_argument("--seed", type=int, default=0)
a = p.parse_args()
torch.manual_seed(a.seed)
imgs, labels = load_mnist_sample()
x_all = to_unit_range(imgs); test = torch.arange(len(x_all)) % 5 == 4
xtr, ytr, xte, yte = x_all[~test], labels[~test], x_all[test], labels[test]

clf_path = "/tmp/clf.pt"
clf = DigitClassifier()
if os.path.exists(clf_path):
    clf.load_state_dict(torch.load(clf_path))
else:
    opt = torch.optim.Adam(clf.parameters(), 1e-3)
    for ep in range(8):
        perm = torch.randperm(len(xtr))
        for i in range(0, len(xtr), 64):
            idx = perm[i:i+64]
            loss = F.cross_entropy(clf(xtr[idx]), ytr[idx]); opt.zero_grad(); loss.backward(); opt.step()
    torch.save(clf.state_dict(), clf_path)
clf.eval()
with torch.no_grad():
    real_logits = clf(xte); real_feats = clf.features(xte)
    print("clf test acc", (real_logits.argmax(1) == yte).float().mean().item())

G = ShortGANGenerator(channels=a.gch, up_channels=a.upch, spectral_norm=bool(a.g_sn))
D = ShortGANDiscriminator(channels=a.dch, minibatch_std=bool(a.d_mbstd), spectral_norm=bool(a.d_sn))
print("G params", sum(p.numel() for p in G.parameters()), "D params", sum(p.numel() for p in D.parameters()))

def evaluate(tag):
    G.eval()
    with torch.no_grad():
        fake = G(torch.randn(1000, 128))
        fl = clf(fake); ff = clf.features(fake)
    G.train()
    prec, rec = metrics.precision_recall(real_feats, ff)
    # distinct outputs: pairs with L2 < 1 are "the same image"
    d = torch.cdist(fake[:200].flatten(1), fake[:200].flatten(1))
    res = dict(tag=tag, cov=metrics.class_coverage(fl, 10), kl=round(metrics.class_kl(fl, real_logits, 10).item(), 3),
               IS=round(metrics.classifier_score(fl).item(), 2), fid=round(metrics.frechet_distance(ff, real_feats).item(), 2),
               prec=round(prec.item(), 3), rec=round(rec.item(), 3), pair_l2=round(d.mean().item(), 2))
    save_image(fake[:64], f"/tmp/exp_{a.name}_{tag}.png", nrow=8, normalize=True, value_range=(-1, 1))
    return res

results = []
# --- pretraining
if a.pretrain != "none":
    opt = torch.optim.Adam(G.parameters(), a.pre_lr, betas=(0.5, 0.999))
    t0 = time.time(); it = 0
    while (it < a.pretrain_its) if a.pretrain_its else (time.time() - t0 < a.pretrain_s):
        idx = torch.randint(len(xtr), (a.bs,)); real = xtr[idx]
        if a.pretrain == "random":
            fake = G(torch.randn(a.bs, 128)); loss = F.smooth_l1_loss(fake, real)
        elif a.pretrain == "nearest":
            with torch.no_grad():
                zc = torch.randn(a.bs * 4, 128)
                cand = G(zc)
                nn_idx = torch.cdist(real.flatten(1), cand.flatten(1)).argmin(1)
            fake = G(zc[nn_idx]); loss = F.smooth_l1_loss(fake, real)
        opt.zero_grad(); loss.backward(); opt.step(); it += 1
    print("pretrain its", it, "loss", loss.item())
    results.append(evaluate("pre"))
    print(results[-1], flush=True)

og = torch.optim.Adam(G.parameters(), a.lr_g, betas=(0.5, 0.999))
od = torch.optim.Adam(D.parameters(), a.lr_d, betas=(0.5, 0.999))
t0 = time.time(); it = 0; next_eval = 30
next_eval_it = 300
done = lambda: (it >= a.adv_its) if a.adv_its else (time.time() - t0 > a.adv_s)
while not done():
    perm = torch.randperm(len(xtr))
    for i in range(0, len(xtr) - a.bs + 1, a.bs):
        real = xtr[perm[i:i+a.bs]]
        z = torch.randn(a.bs, 128)
        with torch.no_grad():
            fake = G(z)
        rn = real + a.noise * torch.randn_like(real)
        fn = fake + a.noise * torch.randn_like(fake) if a.noise_fakes else fake
        lr_, lf_ = D(rn), D(fn)
        dl = F.binary_cross_entropy_with_logits(lr_, torch.full_like(lr_, a.real_label)) + F.binary_cross_entropy_with_logits(lf_, torch.zeros_like(lf_))
        od.zero_grad(); dl.backward(); od.step()
        for p_ in D.parameters(): p_.requires_grad_(False)
        for _ in range(a.g_steps):
            fake = G(torch.randn(a.bs, 128))
            fn = fake + a.noise * torch.randn_like(fake) if a.noise_fakes else fake
            lg = D(fn)
            gl = F.binary_cross_entropy_with_logits(lg, torch.ones_like(lg))
            og.zero_grad(); gl.backward(); og.step()
        for p_ in D.parameters(): p_.requires_grad_(True)
        it += 1
        el = time.time() - t0
        if (a.adv_its and it >= next_eval_it) or (not a.adv_its and el > next_eval):
            next_eval_it += 300
            r = evaluate(f"{int(next_eval)}s"); r.update(it=it, its=round(it/el, 1), dl=round(dl.item(), 3), gl=round(gl.item(), 3)); print(r, flush=True); results.append(r); next_eval += 30
        if done(): break
r = evaluate("end"); r.update(it=it, its=round(it / (time.time()-t0), 1)); print(r); results.append(r)
json.dump(dict(args=vars(a), results=results), open(f"/tmp/exp_{a.name}.json", "w"))
