"""Hostile and damaged inputs: model files, checkpoints, configs and run folders. Real files in
tmp_path, real loads, no mocks (the disk-full case injects one ENOSPC into one real save).

A header is attacker-controlled even when its digest verifies: anyone can recompute a SHA-256, so
every hostile header here is written through ``write_safetensors``, which records a valid digest.
Every refusal is one line that names the file and the field.
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from envs_for_tests import PickleExploit

from agents import GaussianSAC, GumbelSAC
from agents.checkpoint import read_checkpoint, read_model_file, write_safetensors
from agents.memory import available_memory, check_fits, safety_margin
from experiments.config import ConfigError, load_config, parse_overrides
from experiments.eval_run import resolve_target, run_eval
from experiments.rundir import run_lock

REPO = Path(__file__).resolve().parents[1]
TINY: dict[str, Any] = {"net_arch": [16, 16], "batch_size": 16, "learning_starts": 50, "buffer_size": 2_000,
                        "seed": 0, "device": "cpu"}
MAX_MESSAGE = 600
"""Characters a refusal may take: one line, the path of the file and a sentence."""


def assert_one_line(message: str, path: Path, field: str | None = None) -> None:
    assert "\n" not in message and len(message) < MAX_MESSAGE + len(str(path)), message[:2000]
    assert str(path) in message, message
    if field is not None:
        assert field in message, message


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """A real model file's tensors and header, to edit."""
    path = GumbelSAC("CartPole-v1", **TINY).learn(60).save(tmp_path_factory.mktemp("m") / "model")
    return read_model_file(path)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return GumbelSAC("CartPole-v1", **TINY).learn(80).checkpoint(tmp_path_factory.mktemp("ck") / "step_80")


def hostile(model: tuple[dict, dict], tmp_path: Path, edit: Any, name: str = "model.safetensors") -> Path:
    """The model file with ``edit(meta)`` applied to a copy of its header, written with a valid digest."""
    tensors, meta = model
    meta = json.loads(json.dumps(meta))
    meta.pop("sha256")
    edit(meta)
    return write_safetensors(tmp_path / name, tensors, meta)


def setter(dotted: str, value: Any) -> Any:
    def edit(meta: dict) -> None:
        *parents, last = dotted.split(".")
        d = meta
        for p in parents:
            d = d[p]
        d[last] = value
    return edit


# ------------------------------------------------------------------------------- header fields


@pytest.mark.parametrize("field, value", [
    ("agent", "os.system"),
    ("agent", ["GumbelSAC"]),
    ("hparams", "net_arch=[4096]"),
    ("hparams.learning_rate", "3e-4; import os"),
    ("hparams.gamma", [0.99]),
    ("hparams.net_arch", "[16, 16]"),
    ("hparams.net_arch", [16, -1]),
    ("hparams.estimator", "__import__('os')"),
    ("hparams.compile", "yes"),
    ("observation_space", None),
    ("observation_space.type", "Dict"),
    ("observation_space.shape", [10**7]),
    ("observation_space.low", "low"),
    ("action_space.n", 10**9),
    ("action_space.n", -3),
    ("action_space.n", 2.5),
    ("num_timesteps", "60"),
    ("num_timesteps", -1),
    ("num_updates", 1.5),
    ("optimizers", []),
    ("optimizers.actor", [{"params": [0], "lr": "fast"}]),
    ("extra", {"gumbel_temperature": {"nested": [1, 2]}}),
    ("env_id", 42),
    ("env_id", "x" * 1000),
])
def test_mistyped_or_oversized_header_field_is_refused_naming_it(field: str, value: Any, model: tuple[dict, dict],
                                                                 tmp_path: Path) -> None:
    path = hostile(model, tmp_path, setter(field, value))
    with pytest.raises(ValueError) as info:
        GumbelSAC.load(path, device="cpu")
    assert_one_line(str(info.value), path, field.split(".")[0])
    assert type(info.value).__name__ == "HeaderError"  # refused by the schema, not by a crash further in


def test_hparams_with_an_unknown_key_is_refused(model: tuple[dict, dict], tmp_path: Path) -> None:
    path = hostile(model, tmp_path, setter("hparams.__class__", "os.system"))
    with pytest.raises(ValueError, match=r"hparams: unknown hyperparameter '__class__'") as info:
        GumbelSAC.load(path, device="cpu")
    assert_one_line(str(info.value), path)


def test_hparams_out_of_range_is_refused_by_the_agents_checks(model: tuple[dict, dict], tmp_path: Path) -> None:
    path = hostile(model, tmp_path, setter("hparams.gamma", 7.0))
    with pytest.raises(ValueError, match=r"header field hparams: invalid hyperparameters: gamma=7.0") as info:
        GumbelSAC.load(path, device="cpu")
    assert_one_line(str(info.value), path)


def test_a_50_mb_agent_name_gives_a_bounded_message(model: tuple[dict, dict], tmp_path: Path) -> None:
    path = hostile(model, tmp_path, setter("agent", "A" * 50_000_000))
    with pytest.raises(ValueError) as info:
        GumbelSAC.load(path, device="cpu")
    assert_one_line(str(info.value), path, "agent")
    assert len(str(info.value)) < 400 + len(str(path))


PEAK_RSS = """
import os, resource, sys
from agents import GumbelSAC

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

GumbelSAC.load(sys.argv[1], device="cpu")  # a good small file first: the first load's one-time costs
peak, now = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, rss()
try:
    agent = GumbelSAC.load(sys.argv[2], device="cpu")
except ValueError as e:
    print("refused:", e, file=sys.stderr)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - peak, rss() - now)
"""


def rss_growth(warm_up: Path, path: Path) -> tuple[int, int, str]:
    """Peak RSS growth and resident growth of a fresh process loading ``path`` (after ``warm_up``)."""
    proc = subprocess.run([sys.executable, "-c", PEAK_RSS, str(warm_up), str(path)], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    peak, resident = (int(x) for x in proc.stdout.split()[-2:])
    return peak, resident, proc.stderr


def test_huge_net_arch_is_refused_before_anything_is_allocated(model: tuple[dict, dict], tmp_path: Path) -> None:
    """net_arch [4096, 4096] over 16-wide tensors: building that agent allocates policy, critics and
    target critics of 5 x 4096 x 4096 floats (~335 MB) before load_state_dict could notice. Refused
    from the shapes alone: the peak RSS of a fresh process grows by less than 32 MB during the load."""
    path = hostile(model, tmp_path, setter("hparams.net_arch", [4096, 4096]))
    with pytest.raises(ValueError, match="hparams.net_arch/spaces: imply policy.net.0.weight of shape") as info:
        GumbelSAC.load(path, device="cpu")
    assert_one_line(str(info.value), path)
    good = hostile(model, tmp_path, lambda meta: None, "good.safetensors")
    peak, _, err = rss_growth(good, path)
    assert "refused:" in err and peak < 32 * 2**20, (peak, err)
    # The same process does hold an honest file of that size once loaded: the bound is not vacuous.
    small = GumbelSAC.load(good, device="cpu")
    honest = GumbelSAC(None, observation_space=small.observation_space, action_space=small.action_space,
                       net_arch=[4096, 4096], device="cpu").save(tmp_path / "big")
    _, resident, err = rss_growth(good, honest)
    assert resident > 100 * 2**20, (resident, err)


def test_a_huge_action_space_over_small_tensors_is_refused(model: tuple[dict, dict], tmp_path: Path) -> None:
    path = hostile(model, tmp_path, setter("action_space.n", 900_000))
    with pytest.raises(ValueError, match="net_arch/spaces: imply policy.net.4.weight of shape") as info:
        GumbelSAC.load(path, device="cpu")
    assert_one_line(str(info.value), path)


def test_json_nested_ten_thousand_deep_is_refused(model: tuple[dict, dict], tmp_path: Path) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "deep.safetensors"
    save_file(model[0], str(path), metadata={"reparl": "[" * 100_000 + "]" * 100_000})
    with pytest.raises(ValueError, match="not valid JSON") as info:
        GumbelSAC.load(path, device="cpu")
    assert_one_line(str(info.value), path)


def test_header_edited_without_the_digest_is_refused_as_corrupt(model: tuple[dict, dict], tmp_path: Path) -> None:
    """Checked in this order: a hand-edited header is reported as damaged, not as a schema problem."""
    tensors, meta = model
    from safetensors.torch import save_file

    path = tmp_path / "edited.safetensors"
    save_file(tensors, str(path), metadata={"reparl": json.dumps({**meta, "hparams": {"net_arch": [4096, 4096]}})})
    with pytest.raises(ValueError, match="is corrupt: its header or tensors do not match the SHA-256") as info:
        GumbelSAC.load(path, device="cpu")
    assert_one_line(str(info.value), path)


def test_a_model_file_from_one_agent_passes_as_that_agent_only(model: tuple[dict, dict], tmp_path: Path) -> None:
    """The header's agent picks the shapes it must match: a GumbelSAC file relabelled GaussianSAC fails them."""
    path = hostile(model, tmp_path, setter("agent", "GaussianSAC"))
    with pytest.raises(ValueError) as info:
        GaussianSAC.load(path, device="cpu")
    assert_one_line(str(info.value), path, "header field")


# ------------------------------------------------------------------------------- checkpoints


def checkpoint_edit(checkpoint: Path, tmp_path: Path, edit: Any) -> Path:
    tensors, meta = read_checkpoint(checkpoint)
    meta = json.loads(json.dumps(meta))
    meta.pop("sha256")
    edit(meta)
    (tmp_path / "checkpoints").mkdir(exist_ok=True)
    return write_safetensors(tmp_path / "checkpoints" / "step_90.safetensors", tensors, meta)


@pytest.mark.parametrize("field, value", [
    ("checkpoint.numpy_random.bit_generator", "os.system"),
    ("checkpoint.python_random", "seed"),
    ("checkpoint.info_groups", [[["a"], "1"]]),
    ("checkpoint.episode_returns", ["1.0"]),
    ("checkpoint.num_episodes", -5),
])
def test_mistyped_checkpoint_field_is_refused(field: str, value: Any, checkpoint: Path, tmp_path: Path) -> None:
    path = checkpoint_edit(checkpoint, tmp_path, setter(field, value))
    with pytest.raises(ValueError) as info:
        GumbelSAC("CartPole-v1", **TINY).restore(path)
    assert_one_line(str(info.value), path, ".".join(field.split(".")[:2]))


def test_env_state_may_not_name_new_attributes_or_odd_dtypes(checkpoint: Path, tmp_path: Path) -> None:
    """The env state sets attributes on the env's layers: only plain names, plain values and numeric dtypes."""
    for k, d, field in (("__class__", {"v": 1}, "attribute name"),
                        ("state", {"a": [1], "dtype": "O", "scalar": False}, "checkpoint.env.layers"),
                        ("state", {"call": "os.system"}, "checkpoint.env.layers")):
        path = checkpoint_edit(checkpoint, tmp_path, lambda meta, k=k, d=d: meta["checkpoint"]["env"]["layers"][-1]
                               .__setitem__(k, d))
        with pytest.raises(ValueError) as info:
            GumbelSAC("CartPole-v1", **TINY).restore(path)
        assert_one_line(str(info.value), path, field)
    # A plain, well-typed attribute the env never had: refused when it is set, not added.
    path = checkpoint_edit(checkpoint, tmp_path, lambda meta: meta["checkpoint"]["env"]["layers"][-1]
                           .__setitem__("injected", {"v": 1}))
    with pytest.raises(ValueError, match="env state sets 'injected'") as info:
        GumbelSAC("CartPole-v1", **TINY).restore(path)
    assert_one_line(str(info.value), path)


@pytest.mark.parametrize("kind", ["model", "checkpoint"])
@pytest.mark.parametrize("where", ["header", "tensor"])
def test_bit_flips_are_refused(kind: str, where: str, model: tuple[dict, dict], checkpoint: Path,
                               tmp_path: Path) -> None:
    source = checkpoint if kind == "checkpoint" else hostile(model, tmp_path, lambda meta: None, "good.safetensors")
    raw = bytearray(source.read_bytes())
    header_len = int.from_bytes(raw[:8], "little")
    at = raw.index(b"num_timesteps") + 2 if where == "header" else 8 + header_len + (len(raw) - 8 - header_len) // 2
    raw[at] ^= 0x01  # 'n' -> 'o' in a key of the header, or one bit of a weight
    path = tmp_path / "flipped.safetensors"
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="corrupt|not a readable") as info:
        read_model_file(path)
    assert_one_line(str(info.value), path)


@pytest.mark.parametrize("keep", [0, 7, 100, 0.5, 0.999])
def test_truncations_are_refused(keep: float, checkpoint: Path, tmp_path: Path) -> None:
    raw = checkpoint.read_bytes()
    path = tmp_path / "cut.safetensors"
    path.write_bytes(raw[: int(len(raw) * keep) if isinstance(keep, float) else keep])
    with pytest.raises(ValueError) as info:
        GumbelSAC("CartPole-v1", **TINY).restore(path)
    assert_one_line(str(info.value), path)


def test_a_pickle_renamed_safetensors_is_refused_unexecuted(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "model.safetensors"
    path.write_bytes(pickle.dumps(PickleExploit(marker)))
    with pytest.raises(ValueError, match="not a readable reparl model file") as info:
        GumbelSAC.load(path)
    assert_one_line(str(info.value), path)
    assert not marker.exists()


# ------------------------------------------------------------------------------- eval


def test_eval_refuses_an_env_id_that_would_import_a_module(model: tuple[dict, dict], tmp_path: Path) -> None:
    """'os:system' in a model header: eval would have imported the module it names. Only a
    registered id is looked up; the user's --env may still import (trusted input)."""
    module = "reparl_hostile_probe"
    (tmp_path / f"{module}.py").write_text("IMPORTED = True\n")
    sys.path.insert(0, str(tmp_path))
    try:
        for env_id in ("os:system", f"{module}:Evil-v0", "NoSuchEnv-v9"):
            path = hostile(model, tmp_path, setter("env_id", env_id))
            with pytest.raises(ConfigError, match="pass --env ENV_ID explicitly") as info:
                resolve_target(path)
            assert_one_line(str(info.value), path, "env_id")
        assert module not in sys.modules
    finally:
        sys.path.remove(str(tmp_path))
    cfg, _, _ = resolve_target(path, env_id="CartPole-v1")  # the user names the env: fine
    assert cfg.env.id == "CartPole-v1"


@pytest.mark.parametrize("content", [b"hello, I am not a model\n", os.urandom(4096), b""])
def test_cli_eval_of_a_non_model_prints_one_error_line(content: bytes, tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    path.write_bytes(content)
    proc = subprocess.run([sys.executable, "run.py", "eval", str(path), "--env", "CartPole-v1", "--agent",
                           "GumbelSAC"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    (line,) = [x for x in proc.stderr.splitlines() if x.strip()]
    assert line.startswith("error: ") and str(path) in line and "Traceback" not in proc.stderr


# ------------------------------------------------------------------------------- configs


BILLION_LAUGHS = """\
agent: {name: GumbelSAC}
env:
  id: CartPole-v1
  kwargs:
    a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
    b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
    c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
    d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
    e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
    f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
    g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
    h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
    i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""


def test_billion_laughs_config_is_refused_at_once(tmp_path: Path) -> None:
    path = tmp_path / "laughs.yaml"
    path.write_text(BILLION_LAUGHS)
    assert len(BILLION_LAUGHS) < 700
    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match="line 5: YAML anchors and aliases") as info:
        load_config(path)
    assert time.perf_counter() - t0 < 1.0
    assert_one_line(str(info.value), path)


@pytest.mark.parametrize("text, match", [
    ("agent: !!python/object/apply:os.system ['touch pwned']\n", "no tags such as"),
    ("env: !!python/name:os.system\n", "no tags such as"),
    ("train: &t {seed: 1}\nwandb: *t\n", "anchors and aliases"),
])
def test_yaml_tags_and_aliases_are_refused(text: str, match: str, tmp_path: Path) -> None:
    path = tmp_path / "hostile.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match) as info:
        load_config(path)
    assert_one_line(str(info.value), path)
    assert not (tmp_path / "pwned").exists()


def test_aliases_in_set_overrides_are_refused() -> None:
    with pytest.raises(ConfigError, match="anchors and aliases"):
        parse_overrides(["env.kwargs=&a [*a, *a]"])


def test_oversized_config_is_refused_before_parsing(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_text("agent: {name: GumbelSAC}\n#" + "x" * 2**21 + "\n")
    with pytest.raises(ConfigError, match="more than a config may have") as info:
        load_config(path)
    assert_one_line(str(info.value), path)


def test_config_values_are_never_echoed_whole(tmp_path: Path) -> None:
    path = tmp_path / "long.yaml"
    path.write_text(f"train: {{seed: '{'9' * 100_000}'}}\nagent: {{name: {'G' * 100_000}}}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "\n" not in str(info.value) and len(str(info.value)) < 1000


# ------------------------------------------------------------------------------- run folders


def test_a_second_writer_is_refused_naming_the_pid_and_a_stale_lock_is_taken_over(tmp_path: Path) -> None:
    with run_lock(tmp_path):
        assert (tmp_path / "run.lock").read_text().strip() == str(os.getpid())
        with pytest.raises(ConfigError, match=f"in use by process {os.getpid()}") as info:
            with run_lock(tmp_path):
                pass
        assert "\n" not in str(info.value)
    assert not (tmp_path / "run.lock").exists()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / "run.lock").write_text(f"{dead.pid}\n")
    with pytest.warns(RuntimeWarning, match=f"taking over the lock of process {dead.pid}"), run_lock(tmp_path):
        assert (tmp_path / "run.lock").read_text().strip() == str(os.getpid())


def test_cli_refuses_a_resume_of_a_run_another_process_writes(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (run_dir / "run.lock").write_text(f"{holder.pid}\n")
        (run_dir / "config.yaml").write_text("agent: {name: GumbelSAC}\nenv: {id: CartPole-v1}\n")
        proc = subprocess.run([sys.executable, "run.py", "train", "--resume", str(run_dir)], cwd=REPO,
                              capture_output=True, text=True, timeout=120)
    finally:
        holder.kill()
        holder.wait()
    assert proc.returncode == 2
    assert proc.stderr.strip() == proc.stderr.strip().splitlines()[0]
    assert f"in use by process {holder.pid}" in proc.stderr


def test_a_buffer_leaving_less_than_the_safety_margin_is_refused() -> None:
    available = available_memory("cpu")
    if available is None:
        pytest.skip("available memory is unknown here")
    margin = safety_margin("cpu")
    assert 0 < margin <= 512 * 2**20
    with pytest.raises(MemoryError, match="less than the .* MiB the rest of the run needs"):
        check_fits(available - margin // 2, "cpu", "a test buffer")  # fits, but leaves half the margin
    check_fits(2**20, "cpu", "a small buffer")


# ------------------------------------------------------------------------------- disk full


def test_disk_full_at_the_final_save_then_resume_writes_the_model(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """ENOSPC at the model file's rename (after the checkpoints): the run fails, leaving no model
    and no temp file; --resume writes the model from the final checkpoint, and eval reads it."""
    from experiments.train import run_training

    cfg = load_config(REPO / "configs/gumbel_sac/cartpole.yaml", {
        "agent.net_arch": [16, 16], "agent.batch_size": 16, "agent.learning_starts": 50,
        "train.total_timesteps": 200, "train.checkpoint_freq": 100, "train.eval_freq": 0, "wandb.mode": "disabled",
        "train.device": "cpu"})
    real_replace = Path.replace

    def full_disk(self: Path, target: Any) -> Path:
        if Path(target).name == "model.safetensors":
            raise OSError(errno.ENOSPC, "No space left on device", str(target))
        return real_replace(self, target)

    monkeypatch.setattr(Path, "replace", full_disk)
    with pytest.warns(RuntimeWarning, match="could not write the final model"), \
            pytest.raises(OSError, match="No space left"):
        run_training(cfg, tmp_path, "full", ["pytest"], progress_bar=False)
    monkeypatch.setattr(Path, "replace", real_replace)
    (run_dir,) = tmp_path.iterdir()
    assert not (run_dir / "model.safetensors").exists() and not list(run_dir.glob("*.tmp"))
    assert not (run_dir / "run.lock").exists()
    assert (run_dir / "checkpoints" / "step_200.safetensors").is_file()

    with pytest.warns(RuntimeWarning, match="had finished training .* wrote"):
        result = run_training(load_config(run_dir / "config.yaml"), tmp_path, run_dir.name, ["pytest"],
                              run_dir=run_dir, progress_bar=False, resume=True)
    assert result.model_path == run_dir / "model.safetensors"
    restored = GumbelSAC.load(result.model_path, device="cpu")
    from_checkpoint = GumbelSAC.load(run_dir / "checkpoints" / "step_200.safetensors", device="cpu")
    assert restored.num_timesteps == 200
    assert all(torch.equal(v, from_checkpoint.policy.state_dict()[k]) for k, v in restored.policy.state_dict().items())
    report = run_eval(run_dir, episodes=2, device="cpu")
    assert len(report.result.returns) == 2 and np.isfinite(report.result.mean)
    with pytest.raises(ConfigError, match="already reached"):  # and now it is finished for good
        run_training(load_config(run_dir / "config.yaml"), tmp_path, run_dir.name, ["pytest"], run_dir=run_dir,
                     progress_bar=False, resume=True)
