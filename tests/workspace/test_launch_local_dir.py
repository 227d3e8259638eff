"""Where a run's dlt keeps its local files, whatever folder its code comes from."""

from __future__ import annotations

from pathlib import Path

from headwater.workspace.launch import run_environment, served_local_dir

RUN = {"id": "r1", "number": 1}


def test_a_dlt_workspace_keeps_local_files_per_profile_in_dot_dlt_data(tmp_path: Path) -> None:
    (tmp_path / ".dlt").mkdir()
    (tmp_path / ".dlt" / ".workspace").touch()
    (tmp_path / "__deployment__.py").touch()
    assert served_local_dir(tmp_path, "dev", {}) == tmp_path / ".dlt" / "data" / "dev"
    assert served_local_dir(tmp_path, "prod", {}) == tmp_path / ".dlt" / "data" / "prod"


def test_a_configured_local_dir_is_relative_to_the_workspace(tmp_path: Path) -> None:
    (tmp_path / ".dlt").mkdir()
    (tmp_path / ".dlt" / ".workspace").touch()
    (tmp_path / ".dlt" / "config.toml").write_text('[workspace.settings]\nlocal_dir = "out"\n')
    assert served_local_dir(tmp_path, "dev", {}) == tmp_path / "out"
    env = {"WORKSPACE__SETTINGS__LOCAL_DIR": "env_out"}
    assert served_local_dir(tmp_path, "dev", env) == tmp_path / "env_out"
    assert served_local_dir(tmp_path, "dev", {"DLT_LOCAL_DIR": "/x"}) == Path("/x")


def test_a_plain_folder_with_its_own_code_is_its_own_local_dir(tmp_path: Path) -> None:
    (tmp_path / "__deployment__.py").touch()
    assert served_local_dir(tmp_path, "dev", {}) == tmp_path


def test_a_folder_filled_by_remote_deploys_only_keeps_them_in_dot_dlt_data(
    tmp_path: Path,
) -> None:
    assert served_local_dir(tmp_path, "dev", {}) == tmp_path / ".dlt" / "data" / "dev"


def test_a_package_run_gets_the_pinned_local_dir_unless_the_user_set_one(tmp_path: Path) -> None:
    pkg, data, local = tmp_path / "pkg", tmp_path / "data", tmp_path / "local"
    env = run_environment({}, pkg, RUN, "ws", data, local_dir=local)
    assert (env["DLT_PROJECT_DIR"], env["DLT_DATA_DIR"]) == (str(pkg), str(data))
    assert env["DLT_LOCAL_DIR"] == str(local)
    own = run_environment({"DLT_LOCAL_DIR": "/mine"}, pkg, RUN, "ws", data, local_dir=local)
    assert own["DLT_LOCAL_DIR"] == "/mine"
    # the folder's own code: dlt finds its local dir itself
    assert "DLT_LOCAL_DIR" not in run_environment({}, tmp_path, RUN, "ws", data)
