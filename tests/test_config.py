"""Config: defaults, file discovery, overrides, and error messages that say what to fix."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from autoresearch_ci.config import Config, ConfigError, load_config


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_without_any_file(tmp_path):
    cfg = load_config(tmp_path)
    assert cfg == Config()
    assert cfg.editable_files == ("train.py",)
    assert "harness/" in cfg.protected_paths and ".github/" in cfg.protected_paths
    assert (cfg.preset, cfg.runner, cfg.proposer, cfg.forge) == ("cpu", "local", "offline", "local")
    assert cfg.judge.noise_multiplier == 2.5 and cfg.judge.max_pairs == 4 and cfg.parallel_runs == 0
    assert cfg.paths.ledger == "ledger/experiments.jsonl"
    assert cfg.llm.model == "claude-sonnet-4-6"
    assert cfg.budget.gpu_usd_per_hour["H100"] == pytest.approx(3.95)


def test_autoresearch_toml(tmp_path):
    write(
        tmp_path / "autoresearch.toml",
        """
preset = "tiny"
candidates_per_tick = 3
[judge]
noise_multiplier = 3.0
[github]
repo = "me/my-fork"
labels = ["autoresearch", "bot"]
""",
    )
    cfg = load_config(tmp_path)
    assert cfg.preset == "tiny" and cfg.candidates_per_tick == 3
    assert cfg.judge.noise_multiplier == 3.0 and cfg.judge.baseline_seeds == 2
    assert cfg.github.repo == "me/my-fork" and cfg.github.labels == ("autoresearch", "bot")


def test_pyproject_table_and_precedence(tmp_path):
    write(tmp_path / "pyproject.toml", '[project]\nname = "x"\n[tool.autoresearch]\npreset = "gpu"\n')
    assert load_config(tmp_path).preset == "gpu"
    # autoresearch.toml wins, whole: it is not merged with pyproject's table
    write(tmp_path / "autoresearch.toml", 'runner = "modal"\n')
    cfg = load_config(tmp_path)
    assert cfg.runner == "modal" and cfg.preset == "cpu"


def test_pyproject_without_table_gives_defaults(tmp_path):
    write(tmp_path / "pyproject.toml", '[project]\nname = "x"\n')
    assert load_config(tmp_path) == Config()


def test_overrides_dotted_and_nested_and_strings(tmp_path):
    write(tmp_path / "autoresearch.toml", "[judge]\nmin_effect = 0.003\n")
    cfg = load_config(
        tmp_path,
        {
            "judge.noise_multiplier": "3",
            "llm": {"model": "claude-haiku-4-5"},
            "candidates_per_tick": "4",
            "runner": None,
        },
    )
    assert cfg.judge.noise_multiplier == 3.0 and cfg.judge.min_effect == 0.003
    assert cfg.llm.model == "claude-haiku-4-5" and cfg.candidates_per_tick == 4
    assert cfg.runner == "local"  # None means the flag was not given


def test_unlimited_budget_in_toml(tmp_path):
    write(tmp_path / "autoresearch.toml", '[budget]\nusd_per_day = "unlimited"\ngpu_seconds_per_day = 0\n')
    cfg = load_config(tmp_path)
    assert cfg.budget.usd_per_day is None and cfg.budget.gpu_seconds_per_day == 0
    assert "budget.usd_per_day" in errors_of(tmp_path, '[budget]\nusd_per_day = "lots"\n')


def test_frozen(tmp_path):
    cfg = load_config(tmp_path)
    with pytest.raises(ValidationError, match="frozen"):
        cfg.preset = "gpu"
    with pytest.raises(ValidationError, match="frozen"):
        cfg.judge.min_effect = 0.0


def errors_of(tmp_path, text=None, overrides=None) -> str:
    if text is not None:
        write(tmp_path / "autoresearch.toml", text)
    with pytest.raises(ConfigError) as e:
        load_config(tmp_path, overrides)
    return str(e.value)


def test_unknown_key_names_path_file_and_suggestion(tmp_path):
    msg = errors_of(tmp_path, "[judge]\nnoise_multiplyer = 3\n")
    assert "autoresearch.toml: judge.noise_multiplyer: unknown key" in msg
    assert "did you mean 'noise_multiplier'" in msg and "allowed here:" in msg


def test_unknown_section(tmp_path):
    msg = errors_of(tmp_path, "[jugde]\nmin_effect = 1\n")
    assert "jugde: unknown key" in msg and "did you mean 'judge'" in msg


def test_bad_values_one_line_each(tmp_path):
    msg = errors_of(
        tmp_path,
        """
runner = "gpu"
candidates_per_tick = 17
[judge]
noise_multiplier = -1
baseline_seeds = 1
[github]
merge_mode = "rebase"
repo = "not a repo"
""",
    )
    lines = msg.splitlines()[1:]
    assert len(lines) == 6, msg
    assert any("runner: must be 'local', 'self-hosted' or 'modal' (got 'gpu')" in x for x in lines)
    assert any("candidates_per_tick: must be less than or equal to 16" in x for x in lines)
    assert any("judge.noise_multiplier: must be greater than 0" in x for x in lines)
    assert any("judge.baseline_seeds: must be greater than or equal to 2" in x for x in lines)
    assert any("github.merge_mode: must be 'squash' or 'auto'" in x for x in lines)
    assert any("github.repo: must look like owner/name" in x for x in lines)
    assert all(x.strip().startswith(str(tmp_path / "autoresearch.toml")) for x in lines)


def test_unknown_preset_lists_choices(tmp_path):
    msg = errors_of(tmp_path, 'preset = "huge"\n')
    assert "preset: unknown preset 'huge'; allowed: gpu, cpu, tiny" in msg


def test_editable_file_may_not_be_protected(tmp_path):
    msg = errors_of(tmp_path, 'editable_files = ["train.py", "harness/eval.py"]\n')
    assert "editable_files" in msg and "protected path 'harness/'" in msg


def test_error_from_override_names_overrides(tmp_path):
    msg = errors_of(tmp_path, overrides={"judge.confirm_margin": "0.5"})
    assert "overrides: judge.confirm_margin: must be greater than or equal to 1" in msg


def test_pyproject_error_names_the_table(tmp_path):
    write(tmp_path / "pyproject.toml", '[tool.autoresearch]\nforge = "gitlab"\n')
    msg = errors_of(tmp_path)
    assert "pyproject.toml [tool.autoresearch]: forge: must be 'local' or 'github'" in msg


def test_toml_syntax_error_names_file(tmp_path):
    msg = errors_of(tmp_path, "preset = \n")
    assert "autoresearch.toml: not valid TOML" in msg and "line 1" in msg
