"""benchmarks.fuxictr_logits: lipctr's side of the same-logits check against FuxiCTR's FinalMLP and
GDCN (no torch needed), and, where a torch python with fuxictr and a FuxiCTR model_zoo exist, the
check itself (slow)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import fuxictr_logits as fl
from benchmarks.recbole_logits import unflatten
from lipctr.models import build_model

BENCH_PYTHON = os.environ.get("LIPCTR_BENCH_PYTHON", "/work/venv-bench/bin/python")
ZOO = os.environ.get("LIPCTR_FUXICTR_ZOO", "/work/fuxictr_zoo")
DCNV3 = os.environ.get("LIPCTR_DCNV3_REPO", "/work/dcnv3_repo")
ROWS = 8


@pytest.mark.parametrize("case", ["gdcn_k5", pytest.param("finalmlp", marks=pytest.mark.slow)])
def test_export_holds_every_leaf_redrawn_and_the_models_logits_on_them(case):
    arrays = fl.export_case(case, ROWS, seed=0)
    name, extra, k = fl.CASES[case]
    model = build_model(name, fl.schema(), k, **extra)
    features = {f: jnp.asarray(arrays[f"features/{f}"]) for f in fl.TOKEN_FIELDS}
    shapes = jax.eval_shape(model.init, {"params": jax.random.key(0), "dropout": jax.random.key(1)}, features)
    expected = {"/".join(str(p.key) for p in path): leaf.shape
                for path, leaf in jax.tree.flatten_with_path(shapes["params"])[0]}
    assert {n.removeprefix("params/"): v.shape for n, v in arrays.items() if n.startswith("params/")} == expected
    for n in expected:  # no constant leaf left (a zero bias would hide its term from the check)
        assert arrays[f"params/{n}"].size == 1 or np.ptp(arrays[f"params/{n}"]) > 0, n
    tables = [n for n in expected if n.endswith("/embedding")]
    assert tables and all(0.4 < arrays[f"params/{n}"].std() < 0.6 for n in tables if arrays[f"params/{n}"].size > 100)
    params = {"params": unflatten(arrays, "params")}
    logits = model.apply(params, features, deterministic=True)
    np.testing.assert_array_equal(np.asarray(logits), arrays["logits"])
    assert arrays["logits"].shape == (ROWS, k)
    settings = json.loads(str(arrays["settings"]))
    assert settings["k"] == k and [f[0] for f in settings["fields"]] == list(fl.TOKEN_FIELDS)


def test_a_missing_model_zoo_is_refused_naming_the_flag(tmp_path, capsys):
    assert fl.main(["--fuxictr-zoo", str(tmp_path), "--cases", "finalmlp,gdcn"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --fuxictr-zoo") and "FinalMLP/src/FinalMLP.py" in err
    assert fl.main(["--fuxictr-zoo", str(tmp_path), "--cases", "dcnv3", "--dcnv3-repo", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith(f"error: --dcnv3-repo '{tmp_path}': no src/DCNv3.py there")


@pytest.mark.slow
@pytest.mark.skipif(not (Path(BENCH_PYTHON).is_file() and (Path(ZOO) / "GDCN" / "src" / "GDCN.py").is_file()
                         and (Path(DCNV3) / "src" / "DCNv3.py").is_file()),
                    reason="needs a torch python with fuxictr ($LIPCTR_BENCH_PYTHON), a FuxiCTR model_zoo "
                           "($LIPCTR_FUXICTR_ZOO) and a DCNv3 checkout ($LIPCTR_DCNV3_REPO)")
def test_every_case_gives_fuxictrs_logits(tmp_path, capsys):
    out = tmp_path / "fuxictr.json"
    code = fl.main(["--torch-python", BENCH_PYTHON, "--fuxictr-zoo", ZOO, "--dcnv3-repo", DCNV3, "--rows", "64",
                    "--json", str(out)])
    assert code == 0, capsys.readouterr().out
    results = json.loads(out.read_text())
    assert [r["case"] for r in results] == list(fl.CASES)
    for r in results:
        assert r["max_abs_diff"] <= 1e-5 * max(1.0, r["max_abs_logit"]) and r["passed"]
        assert r["mapped_elements"] == r["lipctr_elements"] and not r["unfilled_fuxictr"]
