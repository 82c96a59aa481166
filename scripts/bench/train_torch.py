#!/usr/bin/env python3
"""PyTorch eager twin of `cargo run --example train_bench`: the same backbone (MobileFaceNet
112 px or the face engine's 128-d ResNet at 150 px), the same ArcFace head (1,000 classes,
s=30, m=0.3), SGD with Nesterov momentum and weight decay, random inputs; forward + loss +
backward + step timed after warm-up with torch.cuda.synchronize(), img/s as the median of 3
timed runs.

Precision, as in facepipe: bf16 autocast on the backbone (no loss scaling), fp16 autocast with
a GradScaler, or f32; the ArcFace head runs in f32 in every case. CPU runs are always f32.

usage: train_torch.py ARCH BATCH STEPS bf16|fp16|f32 [JSON]
"""
import json
import math
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class ConvBn(nn.Module):
    def __init__(self, cin, cout, k, s, groups, act):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, s, 0 if k == 7 else k // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.act = nn.PReLU(cout) if act else None

    def forward(self, x):
        x = self.bn(self.conv(x))
        return self.act(x) if self.act is not None else x


class Bottleneck(nn.Module):
    def __init__(self, cin, cout, s, t):
        super().__init__()
        h = cin * t
        self.expand = ConvBn(cin, h, 1, 1, 1, True)
        self.dw = ConvBn(h, h, 3, s, h, True)
        self.project = ConvBn(h, cout, 1, 1, 1, False)
        self.residual = s == 1 and cin == cout

    def forward(self, x):
        y = self.project(self.dw(self.expand(x)))
        return x + y if self.residual else y


class MobileFaceNet(nn.Module):
    SETTINGS = [(2, 64, 5, 2), (4, 128, 1, 2), (2, 128, 6, 1), (4, 128, 1, 2), (2, 128, 2, 1)]

    def __init__(self, dim=128):
        super().__init__()
        self.stem = ConvBn(3, 64, 3, 2, 1, True)
        self.stem_dw = ConvBn(64, 64, 3, 1, 64, True)
        blocks, cin = [], 64
        for t, c, n, s in self.SETTINGS:
            for i in range(n):
                blocks.append(Bottleneck(cin, c, s if i == 0 else 1, t))
                cin = c
        self.stages = nn.Sequential(*blocks)
        self.conv_512 = ConvBn(cin, 512, 1, 1, 1, True)
        self.gdc = ConvBn(512, 512, 7, 1, 512, False)
        self.embed = nn.Conv2d(512, dim, 1, bias=False)
        self.embed_bn = nn.BatchNorm1d(dim)

    def forward(self, x):
        x = self.gdc(self.conv_512(self.stages(self.stem_dw(self.stem(x)))))
        return self.embed_bn(self.embed(x).flatten(1))


class Block(nn.Module):
    def __init__(self, cin, cout, down):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, 2 if down else 1, 0 if down else 1)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1)
        self.down = down

    def forward(self, x):
        main = self.conv2(F.relu(self.conv1(x)))
        if not self.down:
            return F.relu(main + x)
        pooled = F.avg_pool2d(x, 2, 2, count_include_pad=True)
        if pooled.shape[2] != main.shape[2]:
            main = F.pad(main, (0, pooled.shape[3] - main.shape[3], 0, pooled.shape[2] - main.shape[2]))
        if pooled.shape[1] != main.shape[1]:
            pooled = torch.cat([pooled, torch.zeros_like(pooled)], 1)
        return F.relu(pooled + main)


class FaceResNet(nn.Module):
    BLOCKS = [(32, 32, False)] * 3 + [(32, 64, True)] + [(64, 64, False)] * 3 + [(64, 128, True)] + \
        [(128, 128, False)] * 2 + [(128, 256, True)] + [(256, 256, False)] * 2 + [(256, 256, True)]

    def __init__(self, dim=128):
        super().__init__()
        self.stem = nn.Conv2d(3, 32, 7, 2)
        self.blocks = nn.Sequential(*[Block(a, b, d) for a, b, d in self.BLOCKS])
        self.fc = nn.Linear(256, dim, bias=False)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.stem(x)), 3, 2)
        return self.fc(self.blocks(x).mean((2, 3)))


class ArcFace(nn.Module):
    def __init__(self, dim, classes, s=30.0, m=0.3):
        super().__init__()
        self.centres = nn.Parameter(torch.randn(classes, dim) * 0.01)
        self.s, self.m = s, m

    def forward(self, e, y):
        cos = F.linear(F.normalize(e.float()), F.normalize(self.centres)).clamp(-1, 1)
        sin = (1 - cos * cos).clamp(1e-9, 1).sqrt()
        phi = cos * math.cos(self.m) - sin * math.sin(self.m)
        phi = torch.where(cos > math.cos(math.pi - self.m), phi, cos - math.sin(math.pi - self.m) * self.m)
        oh = F.one_hot(y, cos.shape[1]).float()
        return F.cross_entropy(self.s * (oh * phi + (1 - oh) * cos), y)


def main():
    arch = sys.argv[1] if len(sys.argv) > 1 else "mobilefacenet"
    batch = int(sys.argv[2]) if len(sys.argv) > 2 else 256
    steps = int(sys.argv[3]) if len(sys.argv) > 3 else 20
    precision = sys.argv[4] if len(sys.argv) > 4 else "bf16"
    if precision not in ("bf16", "fp16", "f32"):
        sys.exit(f"precision must be bf16, fp16 or f32, not {precision!r}")
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    if dev != "cuda":
        precision = "f32"
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    torch.backends.cudnn.benchmark = True
    net, size = (MobileFaceNet(), 112) if arch == "mobilefacenet" else (FaceResNet(), 150)
    head = ArcFace(128, 1000)
    net.to(dev).train()
    head.to(dev)
    opt = torch.optim.SGD(list(net.parameters()) + list(head.parameters()), lr=0.01, momentum=0.9,
                          nesterov=True, weight_decay=5e-4)
    # Loss scaling only for fp16: bf16 has f32's exponent range.
    scaler = torch.amp.GradScaler("cuda", enabled=precision == "fp16")
    x = torch.randn(batch, 3, size, size, device=dev)
    y = torch.randint(0, 1000, (batch,), device=dev)

    def run(n):
        for _ in range(n):
            opt.zero_grad(set_to_none=True)
            with torch.autocast(dev, dtype=dtype or torch.bfloat16, enabled=dtype is not None):
                emb = net(x)
            loss = head(emb.float(), y)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()

    run(3)
    if dev == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    rates = []
    for _ in range(3):
        t = time.perf_counter()
        run(steps)
        if dev == "cuda":
            torch.cuda.synchronize()
        rates.append(batch * steps / (time.perf_counter() - t))
    rates.sort()
    report = {
        "impl": "pytorch eager",
        "torch": torch.__version__,
        "arch": "resnet128" if arch != "mobilefacenet" else "mobilefacenet",
        "batch": batch,
        "steps": steps,
        "precision": precision,
        "device": dev,
        "img_per_s_median_of_3": rates[1],
        "img_per_s_all": rates,
        "peak_gpu_memory_mib": torch.cuda.max_memory_allocated() / 2**20 if dev == "cuda" else None,
    }
    print(json.dumps(report))
    if len(sys.argv) > 5:
        with open(sys.argv[5], "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
