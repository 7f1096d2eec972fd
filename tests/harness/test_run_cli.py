"""`python -m harness.run`: --dry-run plans without running; bad studies exit 2 with one message
naming the file and the field; --set and --output reach the study."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from harness.config import StudyError, parse_study
from harness.pipeline import check_fits
from harness.run import main
from tests.harness.conftest import merge, subprocess_env, tiny_study, write_study

REPO = Path(__file__).resolve().parents[2]


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def _plan_stages(text: str) -> dict[str, str]:
    return dict(re.findall(r"^\[plan\]\s+stage (\S+)\s+(will run|cached)\s*$", text, re.MULTILINE))


def test_dry_run_subprocess_prints_plan_and_runs_nothing(tmp_path):
    cache, out = tmp_path / "cache", tmp_path / "out"
    path = write_study(tmp_path / "tiny.yaml", tiny_study(cache, out))
    proc = subprocess.run(
        [sys.executable, "-m", "harness.run", str(path), "--dry-run",
         "--set", "seeds=[0, 1]", "--set", "training.iterations=6"],
        cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=120,
        check=False)
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert _plan_stages(text) == {
        "dataset-source": "will run", "dataset-target": "will run", "subsets": "will run",
        "source-model": "will run", "segmenter-target": "will run",
        "real-statistics": "will run", "trials": "will run", "analysis": "will run"}
    # 2 methods x 1 size x 2 seeds (from --set); the size is fixed, so not an axis
    assert "[plan] trials: grid of 4 over ['method', 'seed']" in text
    assert "[plan]   method: {'grid_search': ['no-cat', 'freezed']}" in text
    assert "[plan]   seed: {'grid_search': [0, 1]}" in text
    assert "[plan]   target_size: 20" in text
    assert "    iterations: 6" in text                          # the resolved study
    assert re.search(r"resources per trial: 1 worker\(s\) × 1(\.0)? CPU, 0(\.0)? GPU", text)
    assert f"[plan] outputs: {out / 'tiny'}" in text
    assert not (out / "tiny").exists()                         # nothing written, nothing run
    assert not (cache / "stages").exists()


def test_dry_run_of_the_second_domain_study_plans_the_aerial_target(tmp_path):
    """`python -m harness.run studies/second_domain.yaml --dry-run` exits 0 and draws nothing."""
    cache = tmp_path / "cache"
    proc = subprocess.run(
        [sys.executable, "-m", "harness.run", "studies/second_domain.yaml", "--dry-run",
         "--output", str(tmp_path / "out")],
        cwd=REPO, env={**subprocess_env(), "CAT_HARNESS_CACHE": str(cache)},
        capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "kind: synthetic_aerial" in proc.stdout                 # the resolved study
    assert "[plan] trials: grid of 6 over ['method', 'target_size']" in proc.stdout
    assert "[plan]   target_size: {'grid_search': [25, 100, 400]}" in proc.stdout
    assert "[check] target dataset: the embedded benchmark, drawn by the run" in proc.stdout
    assert not any(cache.rglob("*")) and not (tmp_path / "out").exists()   # nothing drawn


@pytest.mark.parametrize(("study", "generic"), [("piti_sota_comparison", True),
                                               ("piti_training_free", False)])
def test_dry_run_plans_the_generic_model_only_for_a_study_with_from_glide(
        study, generic, tmp_path, capsys):
    code = main([f"studies/{study}.yaml", "--dry-run", "--output", str(tmp_path / "out"),
                 "--set", f"cache_dir={tmp_path / 'cache'}"])
    stages = _plan_stages(capsys.readouterr().out)
    assert code == 0 and stages["source-model"] == "will run"
    assert (stages.get("generic-model") == "will run") is generic, stages


def test_dry_run_in_process_honours_output_and_sets(tmp_path, capsys):
    path = write_study(tmp_path / "tiny.yaml", tiny_study(tmp_path / "cache", tmp_path / "out"))
    code = main([str(path), "--dry-run", "--output", str(tmp_path / "elsewhere"),
                 "--set", "target_sizes=[10, 20]", "--set", "name=renamed"])
    text = capsys.readouterr().out
    assert code == 0
    assert f"[plan] outputs: {tmp_path / 'elsewhere' / 'renamed'}" in text
    assert "[plan] study 'renamed'" in text
    assert "grid of 4 over ['method', 'target_size']" in text
    assert not (tmp_path / "elsewhere").exists()


def test_bad_override_exits_2(tmp_path, capsys):
    path = write_study(tmp_path / "tiny.yaml", tiny_study(tmp_path / "cache", tmp_path / "out"))
    assert main([str(path), "--dry-run", "--set", "training.iterations=abc"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}: training.iterations: ") and "'abc'" in err


def test_target_size_larger_than_pool_exits_2_before_ray(tmp_path, capsys):
    out = tmp_path / "out"
    path = write_study(tmp_path / "big.yaml",
                       tiny_study(tmp_path / "cache", out, target_sizes=[20, 500]))
    code = main([str(path)])
    errors = _error_lines(capsys.readouterr().err)    # progress bars share stderr
    assert code == 2
    assert len(errors) == 1
    assert errors[0].startswith(f"error: {path}: target_sizes: [500] exceed the 60 images")
    assert not (out / "tiny" / "tune").exists()


def test_bad_study_subprocess_exit_code(tmp_path):
    data = merge(tiny_study(tmp_path / "cache", tmp_path / "out"),
                 {"resources": {"workers_per_trial": 0}})
    path = write_study(tmp_path / "bad.yaml", data)
    proc = subprocess.run([sys.executable, "-m", "harness.run", str(path)], cwd=REPO,
                          env=subprocess_env(), capture_output=True, text=True, timeout=120,
                          check=False)
    assert proc.returncode == 2
    assert _error_lines(proc.stderr) == [
        f"error: {path}: resources.workers_per_trial: Input should be greater than 0 (got 0)"]
    assert proc.stdout == "" and not (tmp_path / "out").exists()


def test_trial_larger_than_cluster_names_the_field(tmp_path):
    data = tiny_study(tmp_path / "cache", tmp_path / "out",
                      resources={"workers_per_trial": 2, "cpus_per_worker": 1})
    study = parse_study(data, "tiny.yaml")
    with pytest.raises(StudyError, match=r"^tiny\.yaml: resources\.workers_per_trial: one "
                                         r"trial needs 2\.01 CPUs \(2 workers × 1\) but the "
                                         r"cluster has 2$"):
        check_fits(study, {"CPU": 2.0}, "tiny.yaml")
    check_fits(study, {"CPU": 3.0}, "tiny.yaml")
    gpus = parse_study(merge(data, {"resources": {"gpus_per_worker": 1}}), "tiny.yaml")
    with pytest.raises(StudyError, match=r"^tiny\.yaml: resources: one trial needs 2 GPU"):
        check_fits(gpus, {"CPU": 8.0, "GPU": 1.0}, "tiny.yaml")


# ----------------------------------------------------------------------------- bad input table
def _folder_dataset(root: Path, n_train: int = 3, n_val: int = 2) -> Path:
    """A 2-class custom dataset (ADE20K layout + classes.txt), 32×32 px."""
    import numpy as np
    from PIL import Image

    for split, n in (("training", n_train), ("validation", n_val)):
        for i in range(n):
            img = root / "images" / split / f"im{i}.jpg"
            ann = root / "annotations" / split / f"im{i}.png"
            img.parent.mkdir(parents=True, exist_ok=True)
            ann.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((32, 32, 3), 60 + 40 * i, np.uint8)).save(img)
            lab = np.zeros((32, 32), np.uint8)
            lab[:16] = 1
            lab[16:] = 2
            Image.fromarray(lab).save(ann)
    (root / "classes.txt").write_text("meadow\nriver\n")
    return root


def _source_checkpoint(path: Path, resolution: int = 32, wrong_tensor: bool = False) -> Path:
    import torch

    from cat_models.oasis import build_discriminator, build_generator, preset
    from cat_models.oasis.source import save_source

    names = ["sky", "grass"]
    cfg = preset("bench64", resolution=(resolution, resolution), channels_g=2, channels_d=2,
                 spade_hidden=4, z_dim=2, num_res_blocks=4)
    torch.manual_seed(0)
    save_source(path, cfg, names, build_generator(cfg, 2), build_discriminator(cfg, 2),
                build_generator(cfg, 2))
    if wrong_tensor:
        payload = torch.load(path, weights_only=False)
        name = next(iter(payload["G"]))
        payload["G"][name] = torch.zeros(*payload["G"][name].shape[:-1], 7)
        torch.save(payload, path)
    return path


def _timm_features(model: str, checkpoint: Path) -> dict:
    """Study changes: a features method whose network is the timm `model` from `checkpoint`."""
    return {"affinity_backends": {"features": {"backend": "timm", "model": model,
                                               "checkpoint": str(checkpoint)}},
            "methods": [{"label": "cat-features", "baseline": "cat", "affinity": "features"}]}


def _break(case: str, tmp: Path) -> tuple[dict, str, str]:
    """(study changes, field prefix, message part) for one bad input; files made under tmp."""
    data = _folder_dataset(tmp / "data")
    target = {"target": {"dataset": {"kind": "folder", "root": str(data)}},
              "target_sizes": [2]}
    ann = data / "annotations" / "training"
    if case == "yaml-syntax":
        return {"__raw__": "name: [unclosed\n"}, "", "not valid YAML at line 2, column 1"
    if case == "empty-file":
        return {"__raw__": "# nothing yet\n"}, "", "the study file is empty"
    if case == "size-larger-than-pool":
        return {**target, "target_sizes": [2, 9]}, "target_sizes", "[9] exceed the 3 images"
    if case == "unknown-rare-class":
        return ({"target": {"subset": {"sampler": "rare_classes", "rare_classes": ["lake"]}}},
                "target.subset.rare_classes", "['lake'] are not classes of the embedded target")
    if case == "missing-dataset-folder":
        return ({"target": {"dataset": {"kind": "folder", "root": str(tmp / "nowhere")}}},
                "target.dataset", "dataset root folder does not exist")
    if case == "image-without-label":
        (ann / "im1.png").unlink()
        return target, "target.dataset", "image has no label map"
    if case == "label-id-out-of-range":
        import numpy as np
        from PIL import Image

        Image.fromarray(np.full((32, 32), 7, np.uint8)).save(ann / "im0.png")
        return target, "target.dataset", "label id 7 is outside the 2 classes"
    if case == "unreadable-image":
        (data / "images" / "training" / "im0.jpg").write_bytes(b"not an image at all")
        return target, "target.dataset", "unreadable file"
    if case == "rgb-label-png":
        import numpy as np
        from PIL import Image

        rgb = np.zeros((32, 32, 3), np.uint8)
        rgb[..., 0] = 1
        Image.fromarray(rgb).save(ann / "im2.png")
        return target, "target.dataset", "RGB label map"
    if case == "missing-classes-txt":
        (data / "classes.txt").unlink()
        return target, "target.dataset", "missing classes.txt"
    if case == "missing-checkpoint":
        return ({"source": {"checkpoint": str(tmp / "none.pt")}}, "source.checkpoint",
                "source checkpoint not found")
    if case == "not-a-checkpoint":
        (tmp / "rand.pt").write_bytes(bytes(range(256)) * 16)
        return ({"source": {"checkpoint": str(tmp / "rand.pt")}}, "source.checkpoint",
                "source checkpoint is not a torch checkpoint")
    if case == "wrong-architecture-checkpoint":
        import torch

        path = _source_checkpoint(tmp / "wrong.pt", wrong_tensor=True)
        name = next(iter(torch.load(path, weights_only=False)["G"]))   # the one changed
        return ({"source": {"checkpoint": str(path)}}, "source.checkpoint",
                ("does not match the OASIS G of its own config (32×32, 4 blocks, 2 classes): "
                 f"1 tensor(s) of another shape ({name}: checkpoint ["))
    if case == "wrong-resolution-checkpoint":
        path = _source_checkpoint(tmp / "s64.pt", resolution=64)
        return ({"source": {"checkpoint": str(path)}}, "source.checkpoint",
                "source checkpoint was trained at 64×64")
    if case == "wrong-timm-checkpoint":        # weights of a smaller ViT than the named one
        import timm
        import torch

        vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32,
                                patch_size=8, embed_dim=32, depth=2, num_heads=2)
        torch.save(vit.state_dict(), tmp / "small_vit.pth")
        return (_timm_features("vit_tiny_patch16_224", tmp / "small_vit.pth"),
                "affinity_backends.features.checkpoint",
                "does not match timm model 'vit_tiny_patch16_224'")
    if case == "unknown-timm-model":          # a typo in the model's name
        (tmp / "vit.pth").write_bytes(b"")
        return (_timm_features("vit_smal_patch16_224", tmp / "vit.pth"),
                "affinity_backends.features.checkpoint",
                "feature backend 'timm': unknown model 'vit_smal_patch16_224'")
    if case == "wrong-sentence-model":      # a config.json that the weights do not fit
        import json
        import shutil

        from cat_models.affinity.text_backends import default_sentence_model_path

        folder = Path(shutil.copytree(default_sentence_model_path(), tmp / "minilm"))
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**config, "intermediate_size": 512}))
        # the backend is named: the CLIP weights beside it are not what this study loads
        return ({"affinity_backends": {"text": {"backend": "sentence",
                                                "sentence_model": str(folder),
                                                "clip_pretrained": "laion2b_s34b_b79k"}},
                 "methods": [{"label": "cat-text", "baseline": "cat", "affinity": "text"}]},
                "affinity_backends.text.sentence_model",
                "intermediate.dense.weight: checkpoint [1536, 384] vs model [512, 384]")
    if case == "open-clip-weights-not-a-checkpoint":
        (tmp / "clip.bin").write_bytes(bytes(range(256)) * 16)
        return ({"affinity_backends": {"text": {"backend": "open_clip", "clip_model": "RN50",
                                                "clip_pretrained": str(tmp / "clip.bin")}},
                 "methods": [{"label": "cat-combination", "baseline": "cat",
                              "affinity": "combination"}]},
                "affinity_backends.text.clip_pretrained",
                "open_clip weights is not a torch checkpoint")
    if case == "output-under-a-file":
        (tmp / "plain-file").write_text("x")
        return ({"output_dir": str(tmp / "plain-file" / "out")}, "output folder",
                "is a file, not a folder")
    raise AssertionError(case)


BAD_INPUTS = ["yaml-syntax", "empty-file", "size-larger-than-pool", "unknown-rare-class",
              "missing-dataset-folder",
              "image-without-label", "label-id-out-of-range", "unreadable-image",
              "rgb-label-png", "missing-classes-txt", "missing-checkpoint", "not-a-checkpoint",
              "wrong-architecture-checkpoint", "wrong-resolution-checkpoint",
              "wrong-timm-checkpoint", "unknown-timm-model", "wrong-sentence-model",
              "open-clip-weights-not-a-checkpoint", "output-under-a-file"]


def _bad_study(tmp_path: Path, case: str) -> tuple[Path, str, str]:
    changes, field, message = _break(case, tmp_path)
    path = tmp_path / "bad.yaml"
    if "__raw__" in changes:
        path.write_text(changes["__raw__"])
    else:
        write_study(path, merge(tiny_study(tmp_path / "cache", tmp_path / "out"), changes))
    return path, field, message


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_dry_run_refuses_bad_input_naming_file_and_field(tmp_path, capsys, case):
    """`--dry-run` runs the real run's input checks: exit 2, one line naming file and field."""
    path, field, message = _bad_study(tmp_path, case)
    keep = tmp_path / "out" / "tiny" / "earlier-result.txt"       # nothing earlier is lost
    keep.parent.mkdir(parents=True)
    keep.write_text("kept")
    code = main([str(path), "--dry-run"])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.count("\n") == 0 and "Traceback" not in err, err
    assert err.startswith(f"error: {path}: {field}" if field else f"error: {path}: "), err
    assert message in err, err
    assert keep.read_text() == "kept"
    assert not (tmp_path / "cache" / "stages").exists()


@pytest.mark.parametrize("case", ["missing-classes-txt", "not-a-checkpoint",
                                  "wrong-architecture-checkpoint", "wrong-resolution-checkpoint",
                                  "wrong-timm-checkpoint", "output-under-a-file"])
def test_real_run_stops_on_bad_input_before_ray(tmp_path, case):
    path, field, message = _bad_study(tmp_path, case)
    proc = subprocess.run([sys.executable, "-m", "harness.run", str(path)], cwd=REPO,
                          env=subprocess_env(), capture_output=True, text=True, timeout=120,
                          check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = _error_lines(proc.stderr)
    assert len(errors) == 1 and message in errors[0] and f"{path}: {field}" in errors[0]
    assert "Traceback" not in proc.stderr
    assert "[ray]" not in proc.stdout and "[stage]" not in proc.stdout  # before Ray, stages


def test_unreachable_address_fails_in_bounded_time(tmp_path):
    path = write_study(tmp_path / "tiny.yaml", tiny_study(tmp_path / "cache", tmp_path / "out"))
    env = {**subprocess_env(), "CAT_CONNECT_TIMEOUT_S": "3"}
    start = __import__("time").monotonic()
    proc = subprocess.run([sys.executable, "-m", "harness.run", str(path),
                           "--address", "127.0.0.1:1"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=240, check=False)
    seconds = __import__("time").monotonic() - start
    assert proc.returncode != 0
    errors = _error_lines(proc.stderr)
    assert len(errors) == 1, proc.stderr[-2000:]
    assert errors[0].startswith("error: --address 127.0.0.1:1: no Ray cluster answers at "
                                "127.0.0.1:1 after 3 s")
    assert "Traceback" not in proc.stderr
    assert seconds < 200      # stages of the tiny study + 3 s, not Ray's endless retries


def _lock(folder: Path) -> Callable[[], None] | None:
    """Make `folder` unwritable to this process: read-only for its owner, immutable for root
    (who writes through permission bits). Returns the undo, or None where root may not set the
    immutable flag (no CAP_LINUX_IMMUTABLE, a file system without it)."""
    import os

    if os.geteuid() != 0:
        folder.chmod(0o500)
        return lambda: folder.chmod(0o700)
    try:
        subprocess.run(["chattr", "+i", str(folder)], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return lambda: subprocess.run(["chattr", "-i", str(folder)], check=True)


def test_unwritable_output_folder_stops_before_anything_runs(tmp_path, capsys):
    """An output folder the run cannot write in. Where it cannot be locked, one under /proc,
    where nobody can create files."""
    out = tmp_path / "locked"
    out.mkdir()
    earlier = out / "earlier-result.txt"
    earlier.write_text("kept")
    unlock = _lock(out)
    if unlock is None:
        out = Path("/proc") / f"cat-harness-test-{tmp_path.name}"
    path = write_study(tmp_path / "tiny.yaml", tiny_study(tmp_path / "cache", out))
    try:
        assert main([str(path)]) == 2
    finally:
        if unlock is not None:
            unlock()
    errors = _error_lines(capsys.readouterr().err)
    assert len(errors) == 1, errors
    assert errors[0].startswith(f"error: {path}: output folder {out / 'tiny'} is not writable "), \
        errors[0]
    assert sorted(p.name for p in earlier.parent.iterdir()) == ["earlier-result.txt"]
    assert earlier.read_text() == "kept"


def test_too_little_free_space_stops_before_anything_runs(tmp_path, capsys, monkeypatch):
    """Disk full: the free space of the output folder's disk, measured, against the minimum
    (raised here above any real disk's free space)."""
    from harness import checks

    monkeypatch.setattr(checks, "MIN_FREE_MB", 2**40)
    path = write_study(tmp_path / "tiny.yaml", tiny_study(tmp_path / "cache", tmp_path / "out"))
    assert main([str(path)]) == 2
    errors = _error_lines(capsys.readouterr().err)
    assert len(errors) == 1
    assert errors[0].startswith(f"error: {path}: output folder {tmp_path / 'out' / 'tiny'}: "
                                "only ") and "MB free" in errors[0]
    assert not (tmp_path / "out").exists()
