"""`python -m cat_models.affinity`: names from shipped lists, saved files, printed matches."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from cat_models.affinity import AffinityMatrix
from cat_models.affinity.cli import main


def test_text_cityscapes_from_ade20k(tmp_path, capsys):
    assert main(["--source", "ade20k", "--target", "cityscapes", "--method", "text",
                 "--out", str(tmp_path / "A.npy"), "--top", "2"]) == 0
    out = capsys.readouterr().out
    assert "text affinity: 150 source × 33 target classes" in out
    assert any(line.split("->")[1].strip().startswith("sky (")
               for line in out.splitlines() if line.strip().startswith("sky "))
    a = AffinityMatrix.load(tmp_path / "A.npy")
    assert a.shape == (150, 33) and a.target_names[6] == "road"
    np.testing.assert_allclose(a.values.sum(0), 1.0)


def test_random_and_average_from_saved_files(tmp_path, capsys):
    names = tmp_path / "classes.txt"
    names.write_text("sea\nlawn\n")
    paths = []
    for seed in (1, 2, 3):
        path = tmp_path / f"r{seed}.npy"
        main(["--source", "cityscapes", "--target", str(names), "--method", "random",
              "--seed", str(seed), "--out", str(path)])
        paths.append(path)
    a = AffinityMatrix.load(paths[0])
    assert a.shape == (33, 2) and a.target_names == ("sea", "lawn")
    main(["--method", "average", "--inputs", *map(str, paths), "--out",
          str(tmp_path / "avg.npy"), "--html"])
    out = capsys.readouterr().out
    assert "average affinity: 33 source × 2 target classes" in out
    assert (tmp_path / "avg.html").is_file()
    expected = np.mean([AffinityMatrix.load(p).values for p in paths], axis=0)
    np.testing.assert_allclose(AffinityMatrix.load(tmp_path / "avg.npy").values, expected)


def test_module_entry_point_reports_errors(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "cat_models.affinity", "--method", "features", "--source",
         "folder", "--target", "ade20k", "--out", str(tmp_path / "A.npy")],
        check=False, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "'folder' needs --source-root" in proc.stderr
