"""The training commands' one command line (experiments.cli): the same shared flags with the same
help in experiments.main, experiments.mechanism and experiments.bandwidth; removed spellings refused
with one line naming the new one; --print-config's TOML runs the identical config; the committed
example configs say their command, time and test AUC, and validate."""

from pathlib import Path

import pytest

from experiments import cli
from experiments.bandwidth import sweep
from experiments.configs import PAPER_MODELS, load_config, toml
from experiments.main import main
from experiments.mechanism import study
from lipctr.models import MODEL_NAMES

SHARED = ["--config", "--set", "--seeds", "--epochs", "--models", "--runs-dir", "--resume", "--no-progress", "--mesh",
          "--print-config", "--data", "--format", "--inter", "--user", "--item", "--columns", "--field-types"]
ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "experiments" / "configs" / "examples").glob("*.toml"))
COMMANDS = {"main": (cli.main_parser, main, cli.parse_args), "mechanism": (study.parser, study.main, study.parse_args),
            "bandwidth": (sweep.parser, sweep.main, sweep.parse_args)}


def shared_flags(parser) -> dict:
    """{option strings: (help, default, metavar)} of the parser's shared groups (cli's and the data flags)."""
    groups = [g for g in parser._action_groups if g.title.startswith(("every training command", "data ("))]
    return {tuple(a.option_strings): (a.help, a.default, a.metavar) for g in groups for a in g._group_actions}


def test_the_three_training_commands_share_the_same_flags_and_help():
    flags = {name: shared_flags(make()) for name, (make, _, _) in COMMANDS.items()}
    assert [options[0] for options in flags["main"]] == SHARED
    assert flags["mechanism"] == flags["main"] and flags["bandwidth"] == flags["main"]


def test_models_takes_all_paper_or_a_list():
    assert cli.model_names("all") == MODEL_NAMES and len(MODEL_NAMES) == 12
    assert cli.model_names("paper") == PAPER_MODELS and len(PAPER_MODELS) == 7 and set(PAPER_MODELS) < set(MODEL_NAMES)
    assert cli.model_names("nfm, dcnv2") == ("nfm", "dcnv2")
    configs = cli.resolve_configs(cli.parse_args(["--models", "nfm,widedeep", "--config", "dcnv2_ml1m"]))
    assert [(c["model"], c["dataset"]) for c in configs] == [("nfm", "ml1m"), ("widedeep", "ml1m")]


@pytest.mark.parametrize("name, argv, expected", [
    ("main", ["--lambda-sweep", "0.1,0.5"], "--lambda-sweep is no longer a flag of python -m experiments.main; use "
                                            "--grid loss.lambda_r=0.1,0.3,0.5"),
    ("main", ["--lambda-sweep=0.1"], "--lambda-sweep is no longer a flag"),
    ("main", ["--models", "dcnv4"], "--models: unknown backbone(s) ['dcnv4']; expected all, paper or a comma list"),
    ("mechanism", ["--models", "dcnv4"], "--models: unknown backbone(s) ['dcnv4']"),
    ("bandwidth", ["--models", "dcnv4"], "--models: unknown backbone(s) ['dcnv4']"),
    ("main", ["--models", "all", "--print-config"], "--print-config prints one config; --models gave 12"),
    ("mechanism", ["--set", "bandwidth.classes=[1]"], "key 'bandwidth.classes' must list numbers of rating classes"),
    ("main", ["--resume", "x", "--analysis", "lambda"], "--analysis lambda cannot be combined with --resume"),
])
def test_bad_flags_are_one_error_line_and_write_nothing(name, argv, expected, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert COMMANDS[name][1]([*argv, "--runs-dir", str(tmp_path / "runs")]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("error: ") and expected in captured.err, captured.err
    assert len(captured.err.splitlines()) == 1, captured.err
    assert captured.out == "" and list(tmp_path.iterdir()) == []


def test_analysis_lambda_is_select_lambda_on_the_figure4_models():
    args = cli.parse_args(["--models", "paper", "--analysis", "lambda"])
    from experiments.main import lambda_analysis

    chosen = {c["model"]: c["select_lambda"] for c in lambda_analysis(cli.resolve_configs(args))}
    assert {m for m, on in chosen.items() if on} == {"dcnv2", "widedeep", "xdeepfm"}
    assert lambda_analysis(cli.resolve_configs(cli.parse_args(["--config", "nfm_ml100k"])))[0]["select_lambda"]


@pytest.mark.parametrize("name, argv", [
    ("main", ["--config", "widedeep_ml1m", "--set", "train.learning_rate=5e-3", "--seeds", "1,2", "--epochs", "7",
              "--grid", "loss.lambda_r=0.1,0.5", "--grid-programs", "model_hparams.mlp_hidden_size=[[16],[32,32]]",
              "--set", "eval.ks=[5]", "--mesh", "seeds=2", "--set", "log.tensorboard=true"]),
    ("main", ["--data", "DIR", "--format", "csv", "--inter", "r.csv", "--columns", "userId=user_id",
              "--field-types", "genres=token_seq", "--set", "data.split_ratios=[0.7,0.2,0.1]", "--variant", "smooth",
              "--set", 'data.delimiter="\\t"', "--set", 'data_path="d ü \\"q\\""']),
    ("mechanism", ["--config", "nfm_ml100k", "--set", "controls.label_smoothing=0.1"]),
    ("bandwidth", ["--set", "bandwidth.classes=[3,5]", "--set", "train.compute_dtype=\"bfloat16\"",
                   "--set", "model_hparams.mlp_hidden_size=[64,64]"]),
])
def test_print_config_fed_back_as_a_toml_config_is_the_identical_config(name, argv, capsys, tmp_path):
    _, run, parse = COMMANDS[name]
    assert run([*argv, "--print-config"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith(f"# the config of: python -m experiments.{name} ")
    path = tmp_path / "printed.toml"
    path.write_text(printed)
    resolved = cli.resolve_config(parse(argv))
    assert load_config(str(path)) == resolved
    assert cli.resolve_config(parse(["--config", str(path)])) == resolved


def test_toml_writer_quotes_what_needs_quoting():
    text = toml.dumps({"a": 1.5e-7, "b": [[1, 2], []], "c": {"x.y": "tab\there", "d": {"e": True}}, "f": {}},
                      ("a comment",))
    assert text.splitlines()[0] == "# a comment"
    assert '"x.y" = "tab\\there"' in text and "[c.d]" in text and "[f]" in text
    import tomllib

    assert tomllib.loads(text) == {"a": 1.5e-7, "b": [[1, 2], []], "c": {"x.y": "tab\there", "d": {"e": True}},
                                   "f": {}}


def test_every_example_config_opens_with_its_command_time_and_auc_and_validates():
    assert len(EXAMPLES) >= 4
    for path in EXAMPLES:
        head = path.read_text().split("\n\n")[0]
        assert "python -m experiments.main --config experiments/configs/examples/" in head, path.name
        assert "s on a 2-core CPU" in head and "test AUC" in head, path.name
        load_config(str(path))  # raises ConfigError naming the key if it does not validate
