"""Training a config's hyper-parameter grid: programs, waves, member records.

A variant's members are the points of its per-member grid (experiments.configs.grid.variant_grid)
times the seeds, trained as one compiled ensemble; each point of `grid_programs` is a separate
program, run one after another. `max_members` splits a program's members into waves of at most
that many (whole points while a point's seeds fit, else one point's seeds in chunks); every wave
is its own output folder `<variant>[_p<program>][_w<wave>]` (suffixes only when there are several),
so a resume continues the unfinished ones.
"""

from __future__ import annotations

import time
from pathlib import Path

import jax
import pandas as pd

from experiments.configs import ConfigError, merge, validate
from experiments.configs.grid import variant_grid
from experiments.run import build_trainer, run_variant
from lipctr.member_hparams import grid_points
from lipctr.train import to_device

MEMORY_FRACTION = 0.8  # of the free device memory a wave may plan to use
GRID_LIMIT = 1000  # members of one variant's grid (points x programs x seeds) trained without --grid-limit


def grid_members(config: dict) -> dict[str, int]:
    """{variant: members it trains} of a config's grid (points x programs x seeds); {} without a grid."""
    if not (config["grid"] or config["grid_programs"]):
        return {}
    programs = len(grid_points(config["grid_programs"]))
    return {v: len(grid_points(variant_grid(config, v))) * programs * len(config["seeds"]) for v in config["variants"]}


def check_grid_size(config: dict, limit: int | None) -> None:
    """ConfigError when a variant's grid has more members than `limit` (None: GRID_LIMIT; 0: no limit)."""
    limit = GRID_LIMIT if limit is None else limit
    members = grid_members(config)
    widest = max(members, key=members.get, default=None)
    if limit and widest is not None and members[widest] > limit:
        raise ConfigError(
            f"--grid: variant {widest} would train {members[widest]:,} members (grid points x programs x seeds), "
            f"above the limit of {limit:,}; shrink the grid, or raise the limit with --grid-limit "
            f"{members[widest]} (--grid-limit 0: no limit)")


def grid_note(config: dict, dataset) -> str:
    """Members per variant and one epoch's estimated memory and time, measured on one member."""
    members = grid_members(config)
    variant = max(members, key=members.get)
    size, seconds = one_member_epoch(config, dataset, variant)
    count = members[variant]
    return (f"grid: {', '.join(f'{v} {m:,} members' for v, m in members.items())}; one member's epoch took "
            f"{seconds:.2f} s and {_size(size)} here, so one epoch of {variant}'s {count:,} members needs about "
            f"{_size(count * size)} and at most {count * seconds:,.1f} s (less where members run in parallel)"
            f"{'; waves of ' + str(config['max_members']) if config['max_members'] else ''}")


def _size(num_bytes: float) -> str:
    return f"{num_bytes / 2**30:.2f} GiB" if num_bytes >= 2**30 else f"{num_bytes / 2**20:.1f} MiB"


def waves(grid_points: list[dict], seeds: list[int], max_members: int) -> list[tuple[list[dict], list[int]]]:
    """(points, seeds) of each wave: members = points x seeds, at most max_members (0: one wave)."""
    size = len(grid_points) * len(seeds)
    if max_members <= 0 or max_members >= size:
        return [(grid_points, list(seeds))]
    if max_members >= len(seeds):
        step = max_members // len(seeds)
        return [(grid_points[i:i + step], list(seeds)) for i in range(0, len(grid_points), step)]
    return [([point], list(seeds[i:i + max_members])) for point in grid_points
            for i in range(0, len(seeds), max_members)]


def output_name(base: str, program: int, num_programs: int, wave: int, num_waves: int) -> str:
    return base + (f"_p{program + 1}" if num_programs > 1 else "") + (f"_w{wave + 1}" if num_waves > 1 else "")


def _program_config(config: dict, program: dict, member_grid: dict) -> dict:
    update: dict = {}
    for key, value in program.items():
        section, leaf = key.split(".", 1)
        update.setdefault(section, {})[leaf] = value
    return validate(merge({**config, "grid": member_grid, "grid_programs": {}}, update), source="grid program")


def member_records(final: dict, out: Path, program: dict, keys: list[str], base: str) -> list[dict]:
    """final.json's members with their grid point, output folder, the validation LogLoss at their
    best epoch and the epochs they trained (both from metrics.csv)."""
    history = pd.read_csv(out / "metrics.csv").set_index(["member", "epoch"])
    records = []
    for m in final["members"]:
        point = {**{k: tuple(v) if isinstance(v, list) else v for k, v in program.items()},
                 **{k: m["hparams"][k] for k in keys}}
        best = (m["member"], m["best_epoch"])
        records.append({**m, "variant": base, "output": out.name, "point": point,
                        "valid_logloss": float(history.loc[best, "valid_logloss"]) if best in history.index
                        else float("nan"),
                        "epochs": int(history.loc[m["member"]].index.max())})
    return records


def run_grid(config: dict, dataset, variant: str, run_dir: Path, candidates, progress: bool = True,
             mesh=None, base: str | None = None) -> list[dict]:
    """Train every program and wave of `variant`'s grid into run_dir; every member's record."""
    base = base or variant
    member_grid = variant_grid(config, variant)
    programs = grid_points(config["grid_programs"])
    records = []
    for p, program in enumerate(programs):
        program_config = _program_config(config, program, member_grid)
        plan = waves(grid_points(member_grid), program_config["seeds"], config["max_members"])
        for w, (wave_points, wave_seeds) in enumerate(plan):
            output = output_name(base, p, len(programs), w, len(plan))
            final = run_variant({**program_config, "seeds": wave_seeds}, dataset, variant, run_dir, candidates,
                                progress, output, mesh=mesh, points=wave_points if member_grid else None)
            records += member_records(final, run_dir / output, program, list(member_grid), base)
    return records


def free_device_bytes(device=None) -> int | None:
    """Free memory of an accelerator (memory_stats: bytes_limit - bytes_in_use), None where the
    backend reports none (the CPU)."""
    stats = (device or jax.devices()[0]).memory_stats()
    if not stats or "bytes_limit" not in stats:
        return None
    return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))


def members_that_fit(free_bytes: int, member_bytes: int) -> int:
    """Members per wave: MEMORY_FRACTION of the free memory over one member's bytes, at least 1."""
    return max(1, int(MEMORY_FRACTION * free_bytes) // max(1, member_bytes))


def one_member_bytes(config: dict, dataset, variant: str) -> int:
    """Device bytes of one member's compiled epoch (arguments, outputs and temporaries, less the
    training data it shares with the other members), from XLA's memory analysis."""
    return one_member_epoch(config, dataset, variant, timed=False)[0]


def one_member_epoch(config: dict, dataset, variant: str, timed: bool = True) -> tuple[int, float]:
    """(one_member_bytes, seconds of one run of that compiled epoch; NaN untimed)."""
    single = {**config, "grid": {}, "grid_programs": {}, "seeds": config["seeds"][:1], "lambda_sweep": []}
    trainer = build_trainer(single, dataset, variant)
    train = to_device(dataset.train)
    state, stopping = trainer.init(train["features"], single["seeds"], [single["loss"]["lambda_r"]])
    compiled = trainer.train_epoch.lower(state, stopping, train).compile()
    memory = compiled.memory_analysis()
    data = sum(x.nbytes for x in jax.tree.leaves(train))
    size = int(memory.argument_size_in_bytes + memory.output_size_in_bytes + memory.temp_size_in_bytes - data)
    if not timed:
        return size, float("nan")
    start = time.perf_counter()
    jax.block_until_ready(compiled(state, stopping, train))
    return size, time.perf_counter() - start


def wave_size(config: dict, dataset) -> int:
    """config's max_members, or where it is 0 (automatic) on an accelerator, how many members of the
    widest variant fit in its free memory; 0 (all at once) on the CPU."""
    free = free_device_bytes()
    if config["max_members"] or free is None:
        return config["max_members"]
    variant = "smooth" if "smooth" in config["variants"] or config["select_lambda"] else "orig"
    return members_that_fit(free, one_member_bytes(config, dataset, variant))
