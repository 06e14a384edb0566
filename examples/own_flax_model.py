"""Scaled supervision in your own flax model, own optax loop, on ML-100K (fetched on first use):
orig (1 logit, BCE) vs scaled (5 rating logits, `lipctr.scaled_supervision_loss`) vs aux (a click
logit + a rating head, `lipctr.aux_rating_loss`). Prints per variant `<variant> test AUC <mean> ±
<std> over <S> seeds (<each seed>)`, each seed at its best validation AUC; under a minute on a CPU.

    python examples/own_flax_model.py [--small]   # --small: synthetic data, 1 seed, 2 epochs
"""
import argparse

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

import lipctr
from lipctr.data import get_preset, load_dataset, synthetic_dataset
from lipctr.metrics import auc


class TinyCTR(nn.Module):
    vocab: dict  # token field -> vocabulary size
    head: str  # "orig": 1 logit; "scaled": 5 rating logits; "aux": 1 click + 5 rating logits

    @nn.compact  # x: dict of token fields [B] -> logits [B, 1], [B, 5] or [B, 6]
    def __call__(self, x, deterministic=True):
        h = jnp.concatenate([nn.Embed(n, 16)(x[f]) for f, n in self.vocab.items()], -1)
        h = nn.Dropout(0.2, deterministic=deterministic)(nn.relu(nn.Dense(64)(h)))
        return nn.Dense(1)(h) if self.head == "orig" else lipctr.RatingHead(5, aux=self.head == "aux")(h)


def train(head, seed, data, epochs, lambda_r=0.7, batch=1024):
    vocab = {f.name: f.vocab_size for f in data.schema.fields if f.kind == "token"}
    x, valid, test = ({f: s.features[f] for f in vocab} for s in (data.train, data.valid, data.test))
    r, y = data.train.rating, data.train.label
    model, opt = TinyCTR(vocab, head), optax.adam(1e-3)
    params = model.init(jax.random.key(seed), {f: v[:2] for f, v in x.items()})
    state, key, best = opt.init(params), jax.random.key(seed + 1), (-1.0, None)
    score = jax.jit(lambda p, x: lipctr.click_score(model.apply(p, x)[:, :1 if head == "aux" else None]))

    def loss(p, x, r, y, key):
        logits = model.apply(p, x, deterministic=False, rngs={"dropout": key})
        if head == "orig":
            return optax.losses.sigmoid_binary_cross_entropy(logits[:, 0], y).mean()
        per_example = lipctr.aux_rating_loss if head == "aux" else lipctr.scaled_supervision_loss
        return per_example(logits, r, y, lambda_r=lambda_r).mean()  # [B] -> the batch loss

    @jax.jit
    def step(p, s, x, r, y, key):
        updates, s = opt.update(jax.grad(loss)(p, x, r, y, key), s)
        return optax.apply_updates(p, updates), s

    for epoch in range(epochs):  # a fresh permutation each epoch, cut into full batches
        order = np.random.default_rng([seed, epoch]).permutation(len(y))[: len(y) // batch * batch]
        for idx in order.reshape(-1, batch):
            key, k = jax.random.split(key)
            params, state = step(params, state, {f: v[idx] for f, v in x.items()}, r[idx], y[idx], k)
        best = max(best, (float(auc(score(params, valid), data.valid.label)), params), key=lambda b: b[0])
    return float(auc(score(best[1], test), data.test.label))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="orig vs scaled supervision vs aux rating head, own flax model")
    parser.add_argument("--small", action="store_true", help="synthetic data, 1 seed, 2 epochs (the test suite)")
    small = parser.parse_args().small
    data = synthetic_dataset("tiny") if small else load_dataset(get_preset("ml100k"))
    seeds, epochs = ([0], 2) if small else ([0, 1, 2], 15)
    for head in ("orig", "scaled", "aux"):
        aucs = [train(head, seed, data, epochs) for seed in seeds]
        print(f"{head:6s} test AUC {np.mean(aucs):.4f} ± {np.std(aucs):.4f} over {len(seeds)} seeds "
              f"({', '.join(f'{a:.4f}' for a in aucs)})")
