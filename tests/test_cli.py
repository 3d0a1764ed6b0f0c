"""The command line: flags derived from the configs, presets, and one-line argument errors raised
before any work (the run is replaced by a stub that fails if it is reached)."""

import pytest

from alol_min import cli
from alol_min.run.config import ReproduceConfig


@pytest.fixture
def no_run(monkeypatch):
    def refuse(cfg):
        raise AssertionError("the run started although the arguments are wrong")

    monkeypatch.setattr(cli, "run", refuse)


def _error(argv, capsys) -> str:
    with pytest.raises(SystemExit) as stop:
        cli.main(argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--methods", "nll", "foo"], "--methods: unknown method 'foo'"),
        (["--methods", "nll,nll"], "--methods: method nll given more than once"),
        (["--seeds", "0", "0"], "--seeds: seed 0 given more than once"),
        (
            ["--seeds", "a", "b"],
            "Error parsing --seeds: Could not find valid parse for arguments: ['a', 'b']",
        ),
        (["--pool", "nope"], "invalid choice 'nope' for argument '--pool'"),
        (["--bogus"], "Unrecognized options: --bogus"),
        (["--methods=nll,nll"], "--methods: method nll given more than once"),
        (
            ["--task", "hh-rlhf", "--source", "x", "--reward-format", "xml"],
            "invalid choice 'xml' for argument '--reward-format'",
        ),
        (
            [
                "--preset",
                "smoke",
                "--task",
                "hh-rlhf",
                "--source",
                "x",
                "--reward-model",
                "rm",
                "--rm-steps",
                "5",
            ],
            "--rm-steps",
        ),
        (["--offline.eval-every", "0"], "--offline.eval-every: must be >= 1, got 0"),
        (["--offline.steps", "0", "--n-val-eval", "0"], "--offline.steps: must be >= 1, got 0"),
        (["--n-test", "-1"], "--n-test: must be >= 1, got -1"),
        (
            ["--ppo.rollout-prompts", "30"],
            "--ppo.rollout-prompts: must be a multiple of --ppo.minibatch-size (16), got 30",
        ),
        (["--ppo.epochs", "0"], "--ppo.epochs: must be >= 1, got 0"),
        (["--n-kl-prompts", "-1"], "--n-kl-prompts: must be >= 0, got -1"),
        (["--task", "nope"], "--task: no task 'nope'"),
        (["--preset", "huge"], "--preset: no preset 'huge'"),
        (["--source", "data/hh"], "--source: is an option of --task hh-rlhf, not of chitchat"),
        (["--task", "hh-rlhf"], "--source: --task hh-rlhf needs a source"),
        (
            ["--task", "hh-rlhf", "--source", "x", "--test-reward-model", "rm"],
            "--test-reward-model: needs --reward-model",
        ),
        (
            ["--task", "hh-rlhf", "--source", "x", "--reward-allow-pickle"],
            "--reward-allow-pickle: needs --reward-model",
        ),
        (
            ["--value.neighbours", "8"],
            "--value.neighbours: is used only by --value.estimator neighbours",
        ),
        (["--task", "tiny-hh", "--data.max-train", "10"], "--data.*"),
        (["--no-ref-sft"], "--no-ref-sft: needs a pretrained model"),
        (
            ["--offline.lr", "fast"],
            "could not convert string to float: 'fast' (expected: --offline.lr FLOAT)",
        ),
    ],
)
def test_argument_errors_are_one_line_and_come_before_any_work(argv, expected, no_run, capsys):
    err = _error(["reproduce", *argv], capsys)
    assert err.startswith("reproduce: error: ") and expected in err, err


def test_unknown_command(capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(["train"])
    assert stop.value.code == 2 and "unknown command 'train'" in capsys.readouterr().err


def test_reproduce_help_lists_the_hyperparameters_and_tasks(capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(["reproduce", "--help"])
    assert stop.value.code == 0
    out = capsys.readouterr().out
    for option in (
        "--model",
        "--offline.lr",
        "--offline.steps",
        "--sft.lr",
        "--eval-decode.do-sample",
        "--eval-decode.num-beams",
        "--eval-decode.top-p",
        "--methods",
        "--seeds",
        "--source",
    ):
        assert option in out, option
    assert "hh-rlhf" in out and "tiny-hh" in out


def test_lists_may_be_written_with_commas_and_other_values_are_kept_whole():
    assert cli.split_lists(["--methods", "nll,a_lol", "--seeds=0,1", "--source", "a,b.jsonl"]) == [
        "--methods", "nll", "a_lol", "--seeds", "0", "1", "--source", "a,b.jsonl"]  # fmt: skip
    smoke = cli.reproduce_config(
        ["--preset", "smoke", "--task", "hh-rlhf", "--source", "x", "--reward-model", "rm"]
    )
    assert smoke.hh.reward_model == "rm"  # the preset's own Bradley-Terry budget is not "given"


def test_train_ref_refuses_a_task_it_cannot_train_on(capsys):
    err = _error(["train-ref", "--task", "hh-rlhf"], capsys)
    assert "--task: invalid choice 'hh-rlhf'" in err


def test_flags_override_the_preset_of_the_task():
    cfg = cli.reproduce_config(
        ["--task", "tiny-hh", "--offline.lr", "1e-4", "--model", "micro", "--seeds", "1", "2"]
    )
    assert isinstance(cfg, ReproduceConfig) and cfg.task == "tiny-hh" and cfg.model == "micro"
    assert cfg.offline.lr == 1e-4 and cfg.seeds == (1, 2)
    assert cfg.sft.steps == 500  # tiny-hh's pi_ref budget, from its preset
    smoke = cli.reproduce_config(["--preset", "smoke"])
    assert smoke.model == "micro" and smoke.offline.steps == 6 and len(smoke.methods) == 11
    hh = cli.reproduce_config(["--task", "hh-rlhf", "--source", "somewhere"])
    assert (
        hh.offline.steps == 9000
        and hh.offline.grad_clip == 0.3
        and hh.offline.lr == 2e-5
        and hh.decoding == "greedy"
        and hh.second_view == "none"
    )
