"""The configs' defaults: every key of a config (`DEFAULTS`), the settings of each dataset and
model, the (model, dataset) overrides of the authors' runs (REFERENCE.md section 2), and `merge`, how
one table of keys is written over another."""

from __future__ import annotations

import copy
import dataclasses

from lipctr.data import PRESETS
from lipctr.losses import LossConfig
from lipctr.train import TrainConfig

DATASETS = tuple(PRESETS)  # the real presets of lipctr.data.registry
PAPER_MODELS = ("widedeep", "nfm", "xdeepfm", "autoint", "fignn", "dcnv2", "eulernet")  # the paper's (--models paper)

DEFAULTS: dict = {
    "model": "dcnv2",
    "dataset": "ml100k",
    "data_path": "",  # dataset folder; "" = the preset's folder under datasets/
    "data": {},  # lipctr.data.DataConfig fields for the data (experiments.data_source); {} = the preset's
    "model_hparams": {},  # overrides of the model's own defaults (lipctr.models.default_hparams)
    "train": {k: v for k, v in dataclasses.asdict(TrainConfig()).items()},  # lipctr.train's defaults
    "loss": {  # lipctr.losses.LossConfig's defaults: lambda_r 0.7, aggregation "prob" (eq. 11; "logit_sum" =
        # the authors' code), scale_penalty True (the backbone's L2 term scaled by 1 - lambda_r, as the authors do)
        key: getattr(LossConfig(), key) for key in ("lambda_r", "aggregation", "scale_penalty")
    },
    "controls": {  # the mechanism study's controls (lipctr.controls); the defaults change nothing
        "rating_noise": "none",  # "within_label": training ratings permuted within their binary class
        "rating_noise_seed": 0,
        "rating_classes": 0,  # N > 0: ratings merged into N classes (ML: 3 = 1-2/3/4-5, 2 = binary)
        "aux_rating": False,  # smooth = the K = 1 BCE head plus a separate rating head
        "label_smoothing": 0.0,  # epsilon of the BCE targets, in [0, 1)
        "embedding_l2": 0.0,  # weight of an explicit squared-L2 term on the embedding tables
    },
    "variants": ["orig", "smooth"],
    "seeds": [2020, 2021, 2022, 2023, 2024],
    "lambda_sweep": [],  # e.g. [0.1, 0.3, 0.5, 0.7, 0.9]: smooth members for every (lambda, seed)
    "checkpoint_every": 1,  # epochs between resumable-state checkpoints (and always at the end)
    "grid": {},  # per-member hyper-parameter grid {dotted_key: [values]}, one ensemble (experiments.configs.grid)
    "grid_programs": {},  # shape-changing grid {dotted_key: [values]}: one program per point, one after another
    "select_lambda": False,  # also train the lambda_r sweep and report smooth at the validation-chosen lambda_r
    "max_members": 0,  # a grid's members per wave (program); 0 = all at once on CPU, from free memory on accelerators
    "mesh": "",  # device mesh, e.g. "seeds=4" or "seeds=2,data=2" (lipctr.sharding); "" = one device
    "log": {"tensorboard": False},  # true: TensorBoard event files per member (experiments.tensorboard_log)
    "bandwidth": {  # the supervision-bandwidth sweep's own settings (experiments.bandwidth); no other run reads them
        "preset": "small",  # its synthetic data (lipctr.data.registry.SYNTHETIC_PRESETS), in place of the dataset
        "data_seed": 0,  # the synthetic data's seed
        "classes": [2, 3, 5, 10, 20],  # the numbers of rating classes N swept
        "quantile": 0.6,  # the binary threshold's quantile of the latent preference
        "lipschitz_examples": 256,  # test examples the local Lipschitz constant is measured on
        "power_iters": 30,  # power iterations of its spectral norms
    },
    "eval": {
        "num_negatives": 100,
        "relevance": "positive",  # "positive" (label 1) or "any" (every rated test item, RecBole)
        "ranking_seed": 0,
        "ks": [10, 20],
    },
}

# lambda_r and learning rates of the authors' runs (REFERENCE.md section 2); ml100k uses ml1m's.
MODEL_SETTINGS: dict[str, dict] = {
    "widedeep": {"train": {"learning_rate": 5e-3}, "loss": {"lambda_r": 0.1}},
    "nfm": {"train": {"learning_rate": 5e-3}, "loss": {"lambda_r": 0.5}},
    "xdeepfm": {"train": {"learning_rate": 5e-4}, "loss": {"lambda_r": 0.1}},
    "autoint": {"train": {"learning_rate": 1e-3}, "loss": {"lambda_r": 0.5}},
    "fignn": {"train": {"learning_rate": 5e-3}, "loss": {"lambda_r": 0.1}},
    "dcnv2": {"train": {"learning_rate": 1e-3}, "loss": {"lambda_r": 0.7}},
    "eulernet": {"train": {"learning_rate": 1e-3}, "loss": {"lambda_r": 0.1}},
    # no authors' runs: learning rate 1e-3 of RecBole's / FuxiCTR's published settings; architecture: the
    # registry defaults (docs/models.md); lambda_r chosen on ML-100K validation from 0.1-0.9 (3 seeds;
    # experiments/results/mechanism_new_backbones/tuning)
    "deepfm": {"train": {"learning_rate": 1e-3}, "loss": {"lambda_r": 0.7}},
    "dcn": {"train": {"learning_rate": 1e-3}, "loss": {"lambda_r": 0.9}},
    "finalmlp": {"train": {"learning_rate": 1e-3}, "loss": {"lambda_r": 0.9}},
    "gdcn": {"train": {"learning_rate": 1e-3}, "loss": {"lambda_r": 0.9}},
    "dcnv3": {"train": {"learning_rate": 1e-3}, "loss": {"lambda_r": 0.9}},
}

MODEL_DATASET_SETTINGS: dict[tuple[str, str], dict] = {
    ("dcnv2", "yelp2018"): {"train": {"learning_rate": 5e-3}, "model_hparams": {"mlp_hidden_size": [64, 64, 64]}},
    ("widedeep", "yelp2018"): {
        "train": {"learning_rate": 5e-4},
        "model_hparams": {"mlp_hidden_size": [256, 256, 256], "dropout_prob": 0.1},
    },
    ("xdeepfm", "yelp2018"): {"model_hparams": {"cin_layer_size": [100, 100, 100]}},
    ("autoint", "yelp2018"): {
        "loss": {"lambda_r": 0.5},
        "model_hparams": {"dropout_probs": [0.0, 0.0, 0.0], "mlp_hidden_size": [128, 128, 128]},
    },
    ("eulernet", "yelp2018"): {"loss": {"lambda_r": 0.5}, "model_hparams": {"drop_im": 0.3}},
    ("dcnv2", "amazon_book"): {"model_hparams": {"cross_layer_num": 4, "mlp_hidden_size": [64, 64]}},
    ("widedeep", "amazon_book"): {
        "train": {"learning_rate": 5e-4},
        "model_hparams": {"mlp_hidden_size": [64, 64, 64], "dropout_prob": 0.1},
    },
    ("xdeepfm", "amazon_book"): {
        "train": {"learning_rate": 1e-4},
        "model_hparams": {"dropout_prob": 0.5, "mlp_hidden_size": [256, 256, 256]},
    },
    ("autoint", "amazon_book"): {
        "loss": {"lambda_r": 0.5},
        "model_hparams": {"mlp_hidden_size": [64, 64, 64], "dropout_probs": [0.0, 0.0, 0.0]},
    },
    ("eulernet", "amazon_book"): {"loss": {"lambda_r": 0.5}, "model_hparams": {"reg_weight": 0.0}},
}


def merge(base: dict, update: dict) -> dict:
    """A deep copy of base with update's keys written over it (nested dicts merged)."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "model_hparams":
            out[key] = merge(out[key], value)
        elif key == "model_hparams":
            out[key] = {**out.get(key, {}), **copy.deepcopy(value)}
        else:
            out[key] = copy.deepcopy(value)
    return out
