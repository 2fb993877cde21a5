"""``modules.rng.ImageRNG``: per-image seeded noise (CPU generator per seed; subseed blending)."""

import torch


def randn(seed, shape):
    g = torch.Generator().manual_seed(int(seed))
    return torch.randn(shape, generator=g)


def slerp(val, low, high):
    low_norm = low / torch.norm(low, dim=1, keepdim=True)
    high_norm = high / torch.norm(high, dim=1, keepdim=True)
    dot = (low_norm * high_norm).sum(1)
    if dot.mean() > 0.9995:
        return low * val + high * (1 - val)
    omega = torch.acos(dot)
    so = torch.sin(omega)
    return (torch.sin((1.0 - val) * omega) / so).unsqueeze(1) * low + (torch.sin(val * omega) / so).unsqueeze(1) * high


class ImageRNG:
    def __init__(self, shape, seeds, subseeds=None, subseed_strength=0.0, seed_resize_from_h=0, seed_resize_from_w=0):
        self.shape = tuple(map(int, shape))
        self.seeds = seeds
        self.subseeds = subseeds
        self.subseed_strength = subseed_strength
        self.generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
        self.is_first = True

    def first(self):
        xs = []
        for i, g in enumerate(self.generators):
            noise = torch.randn(self.shape, generator=g)
            if self.subseeds is not None and self.subseed_strength != 0:
                sub = randn(self.subseeds[i] if i < len(self.subseeds) else 0, self.shape)
                noise = slerp(self.subseed_strength, noise, sub)
            xs.append(noise)
        return torch.stack(xs)

    def next(self):
        if self.is_first:
            self.is_first = False
            return self.first()
        return torch.stack([torch.randn(self.shape, generator=g) for g in self.generators])
