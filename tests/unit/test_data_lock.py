"""The data-directory lock: one holder at a time, named in the refusal; free again once released."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from proxy.data_lock import LOCK_NAME, DataDirInUse, data_dir_lock


def test_a_held_directory_refuses_a_second_holder_until_released(tmp_path: Path) -> None:
    with data_dir_lock(tmp_path / "d") as path:
        assert path.read_text().strip() == str(os.getpid())
        refusal = re.escape(f"{tmp_path / 'd'} is in use") + rf".*\(pid {os.getpid()}\)"
        with pytest.raises(DataDirInUse, match=refusal), data_dir_lock(tmp_path / "d"):
            pass
    with data_dir_lock(tmp_path / "d"):  # released: a stale file does not block
        assert (tmp_path / "d" / LOCK_NAME).exists()
