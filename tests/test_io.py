"""Atomic writes leave files and directories with the permissions a plain write would give them."""

import os
import stat

from modsearch._io import atomic_dir, write_json


def test_atomic_files_and_dirs_get_the_usual_permissions(tmp_path):
    mask = os.umask(0o022)
    try:
        write_json(str(tmp_path / "a.json"), {"x": 1})
        with atomic_dir(str(tmp_path / "d")) as d:
            open(os.path.join(d, "f"), "w").close()
    finally:
        os.umask(mask)
    assert stat.S_IMODE(os.stat(tmp_path / "a.json").st_mode) == 0o644
    assert stat.S_IMODE(os.stat(tmp_path / "d").st_mode) == 0o755
