"""Configuration: one clear line and exit code 2 for every bad config, ``DEPLOYHQ_LITE_*``
environment overrides, and relative paths resolved against the config file's directory."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
from pathlib import Path

import pytest

import deployhq_lite as dhq
from deployhq_lite.config import (
    Destination,
    Settings,
    build_settings,
    load_settings,
    server_identifier,
)
from deployhq_lite.repobuilder import GitRepoBuilder
from deployhq_lite.testing.plugin import Site
from deployhq_lite.testing.plugin import run_cli as run


def one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    """Exit code 2, nothing on stdout, exactly one line on stderr, no traceback."""
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


def config_text(repo: Path | str, root: Path | str, state: Path | str, extra: str = "") -> str:
    return (
        f'state_dir = "{state}"\n\n'
        "[projects.website]\n"
        'name = "Website"\n'
        f'repository = "{repo}"\n'
        'branch = "main"\n\n'
        "[projects.website.servers.production]\n"
        'name = "Production Server"\n'
        'protocol_type = "local"\n'
        f'root = "{root}"\n' + extra
    )


BAD_CONFIGS = {
    "unknown-key": (
        lambda t: t.replace('protocol_type = "local"', 'protocl_type = "local"'),
        ["projects.website.servers.production.protocl_type", "unknown key"],
    ),
    "unknown-top-level-key": (
        lambda t: "stat_dir = 'x'\n" + t,
        ["stat_dir"],
    ),
    "wrong-type": (
        lambda t: t.replace('branch = "main"', "branch = 3"),
        ["projects.website.branch"],
    ),
    "wrong-protocol": (
        lambda t: t.replace('protocol_type = "local"', 'protocol_type = "ftp"'),
        ["projects.website.servers.production.protocol_type", "ftp"],
    ),
    "missing-repository": (
        lambda t: "\n".join(line for line in t.splitlines() if "repository" not in line),
        ["projects.website.repository", "missing"],
    ),
    "missing-root": (
        lambda t: "\n".join(line for line in t.splitlines() if not line.startswith("root")),
        ["projects.website.servers.production.root"],
    ),
    "toml-syntax": (
        lambda t: t.replace('branch = "main"', "branch = main"),
        ["line 6"],
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_bad_config_one_line_naming_key_and_file(site: Site, case: str) -> None:
    site.repo.commit({"index.html": "hi"})
    mutate, expected = BAD_CONFIGS[case]
    site.config.write_text(mutate(site.config.read_text()))
    line = one_error_line(run("deploy", "website", "-s", "production", "--config", site.config))
    assert str(site.config) in line
    for text in expected:
        assert text in line
    assert not site.root.exists()
    with pytest.raises(dhq.ConfigError) as raised:
        load_settings(site.config)
    assert str(raised.value) in line


def test_bad_config_under_json_is_an_error_object(site: Site) -> None:
    site.config.write_text(site.config.read_text().replace('branch = "main"', "branch = 3"))
    done = run("deploy", "website", "-s", "production", "--config", site.config, "--json")
    assert done.returncode == 2
    data = json.loads(done.stdout)
    assert set(data) == {"error"}
    assert "projects.website.branch" in data["error"]
    assert str(site.config) in data["error"]


@pytest.mark.parametrize("kind", ["plain-directory", "missing-path"])
def test_repository_that_is_not_a_git_repository(site: Site, tmp_path: Path, kind: str) -> None:
    bogus = tmp_path / "not-a-repo"
    if kind == "plain-directory":
        bogus.mkdir()
        (bogus / "README").write_text("just files")
    site.config.write_text(config_text(bogus, site.root, site.state_dir))
    line = one_error_line(run("deploy", "website", "-s", "production", "--config", site.config))
    assert str(site.config) in line
    assert "projects.website.repository" in line
    assert str(bogus) in line
    assert not site.root.exists()


def test_unknown_project_and_server_list_known_names(site: Site) -> None:
    site.config.write_text(
        site.config.read_text()
        + f'\n[projects.blog]\nrepository = "{site.repo.path}"\n'
        + '[projects.blog.servers.staging]\nroot = "/tmp/nowhere-blog"\n'
    )
    line = one_error_line(run("deploy", "shop", "-s", "production", "--config", site.config))
    assert "'shop'" in line
    assert "blog, website" in line
    line = one_error_line(run("deploy", "website", "-s", "live", "--config", site.config))
    assert "'live'" in line
    assert "production" in line
    assert "staging" not in line  # another project's server
    with pytest.raises(dhq.UnknownNameError) as raised:
        load_settings(site.config).get_server("blog", "production")
    assert raised.value.known == ("staging",)


def test_no_config_file_at_all(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    line = one_error_line(run("deploy", "website", "-s", "production", cwd=empty))
    assert "deployhq-lite.toml" in line
    assert "--config" in line
    line = one_error_line(
        run("deployments", "list", "website", "--config", tmp_path / "nope.toml", cwd=empty)
    )
    assert str(tmp_path / "nope.toml") in line
    assert list(empty.iterdir()) == []  # no state directory made on the way out


# -- environment overrides -----------------------------------------------------------------


def test_env_overrides_branch_in_library(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings(site.config).get_project("website").branch == "main"
    monkeypatch.setenv("DEPLOYHQ_LITE_PROJECTS__WEBSITE__BRANCH", "release")
    settings = load_settings(site.config)
    project = settings.get_project("website")
    assert project.branch == "release"
    # The rest of the file still applies (a merge, not a replacement).
    assert project.name == "Website"
    assert project.repository == site.repo.path
    assert settings.get_server("website", "production").root == site.root


def test_env_overrides_branch_for_a_real_deploy(site: Site) -> None:
    site.repo.commit({"index.html": "main branch"})
    release = GitRepoBuilder(site.repo.path, branch="release").commit(
        {"index.html": "release branch", "only-release.txt": "r"}
    )
    done = run(
        "deploy",
        "website",
        "-s",
        "production",
        "--config",
        site.config,
        "--json",
        env={"DEPLOYHQ_LITE_PROJECTS__WEBSITE__BRANCH": "release"},
    )
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["branch"] == "release"
    assert data["end_revision"] == release
    assert site.files() == {"index.html": b"release branch", "only-release.txt": b"r"}


def test_env_override_state_dir(
    site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site.repo.commit({"index.html": "hi"})
    other = tmp_path / "other-state"
    monkeypatch.setenv("DEPLOYHQ_LITE_STATE_DIR", str(other))
    assert load_settings(site.config).state_dir == other
    dhq.deploy("website", "production", config=site.config)
    assert (other / "history.sqlite3").exists()
    assert not site.state_dir.exists()


def test_bad_env_override_is_a_config_error(site: Site) -> None:
    line = one_error_line(
        run(
            "deploy",
            "website",
            "-s",
            "production",
            "--config",
            site.config,
            env={"DEPLOYHQ_LITE_PROJECTS__WEBSITE__SERVERS__PRODUCTION__PROTOCOL_TYPE": "ftp"},
        )
    )
    assert "protocol_type" in line
    assert "DEPLOYHQ_LITE_" in line  # says the environment took part
    assert str(site.config) in line


def test_config_env_variable_is_not_a_setting(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    """DEPLOYHQ_LITE_CONFIG names the file; it must not trip ``extra="forbid"``."""
    monkeypatch.setenv("DEPLOYHQ_LITE_CONFIG", str(site.config))
    settings = load_settings()
    assert settings.get_project("website").name == "Website"
    assert os.environ["DEPLOYHQ_LITE_CONFIG"] == str(site.config)


# -- relative paths --------------------------------------------------------------------------


@pytest.fixture
def relative_site(tmp_path: Path, git_repo: GitRepoBuilder) -> tuple[Path, Path]:
    """A config in conf/ naming its state dir, repository and root by relative paths."""
    conf = tmp_path / "conf"
    conf.mkdir()
    git_repo.commit({"index.html": "relative", "sub/page.txt": "p"})
    os.symlink(git_repo.path, conf / "src")  # repository = "src" means conf/src
    config = conf / "deployhq-lite.toml"
    config.write_text(config_text("src", "public/www", "state"))
    cwd = tmp_path / "somewhere-else"
    cwd.mkdir()
    return config, cwd


def test_relative_paths_resolve_against_config_dir_library(
    relative_site: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    config, cwd = relative_site
    monkeypatch.chdir(cwd)
    settings = load_settings(os.path.relpath(config, cwd))
    conf = config.parent.resolve()
    assert settings.state_dir == conf / "state"
    assert settings.get_project("website").repository == conf / "src"
    assert settings.get_server("website", "production").root == conf / "public" / "www"


def test_relative_paths_resolve_against_config_dir_cli(relative_site: tuple[Path, Path]) -> None:
    config, cwd = relative_site
    conf = config.parent
    done = run(
        "deploy",
        "website",
        "-s",
        "production",
        "--config",
        os.path.relpath(config, cwd),
        "--json",
        cwd=cwd,
    )
    assert done.returncode == 0, done.stderr
    assert (conf / "public" / "www" / "index.html").read_text() == "relative"
    assert (conf / "public" / "www" / "sub" / "page.txt").read_text() == "p"
    assert (conf / "state" / "history.sqlite3").exists()
    assert list(cwd.iterdir()) == []  # nothing landed in the working directory


def test_config_path_that_is_a_directory_or_not_utf8(site: Site, tmp_path: Path) -> None:
    done = run("deployments", "list", "website", "--config", tmp_path)
    assert done.returncode == 2
    assert "is a directory" in done.stderr
    assert "Traceback" not in done.stderr
    site.config.write_bytes(b'state_dir = "\xff"\n')
    line = one_error_line(run("deployments", "list", "website", "--config", site.config))
    assert str(site.config) in line


def state_dir_is_a_file(site: Site) -> str:
    blocker = site.config.with_name("not-a-directory")
    blocker.write_text("a file")
    site.state_dir = blocker
    site.write_config()
    site.repo.commit({"index.html": "hi"})
    line = one_error_line(run("deploy", "website", "-s", "production", "--config", site.config))
    assert not site.root.exists()
    return line


def test_unusable_state_dir_is_a_config_error(site: Site) -> None:
    line = state_dir_is_a_file(site)
    assert "state_dir" in line
    assert str(site.state_dir) in line


def test_unusable_state_dir_error_names_the_config_file(site: Site) -> None:
    assert str(site.config) in state_dir_is_a_file(site)


# -- every problem, a line each ------------------------------------------------------------


def test_every_problem_reported_a_line_each_with_nearest_key(site: Site) -> None:
    site.config.write_text(
        "stat_dir = 'x'\n"
        + site.config.read_text()
        .replace('branch = "main"', 'brnach = "main"')
        .replace('protocol_type = "local"', 'protocol_type = "local"\nport = "many"')
        + '\n[[projects.website.config_files]]\nbdy = "x"\nzzzzqqq = 1\n'
    )
    done = run("deploy", "website", "-s", "production", "--config", site.config)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    prefix = f"error: {site.config}: "
    assert all(line.startswith(prefix) for line in lines), lines
    problems = sorted(line.removeprefix(prefix) for line in lines)
    assert problems[0] == "missing required key 'projects.website.config_files.0.path'"
    assert problems[1].startswith("projects.website.servers.production.port: ")
    assert problems[2:] == [
        "unknown key 'projects.website.brnach' \N{EM DASH} did you mean 'branch'?",
        "unknown key 'projects.website.config_files.0.bdy' \N{EM DASH} did you mean 'body'?",
        "unknown key 'projects.website.config_files.0.zzzzqqq'",  # nothing near it
        "unknown key 'stat_dir' \N{EM DASH} did you mean 'state_dir'?",
    ]
    assert not site.root.exists()
    with pytest.raises(dhq.ConfigError) as raised:
        load_settings(site.config)
    assert sorted(raised.value.problems) == [line.removeprefix("error: ") for line in sorted(lines)]


def test_every_problem_under_json(site: Site) -> None:
    site.config.write_text(
        site.config.read_text()
        .replace('branch = "main"', 'brnach = "main"')
        .replace('protocol_type = "local"', 'protocl_type = "local"')
    )
    done = run("deploy", "website", "-s", "production", "--config", site.config, "--json")
    assert done.returncode == 2
    data = json.loads(done.stdout)
    assert sorted(data["problems"]) == [
        f"{site.config}: unknown key 'projects.website.brnach' \N{EM DASH} did you mean 'branch'?",
        f"{site.config}: unknown key 'projects.website.servers.production.protocl_type' "
        "\N{EM DASH} did you mean 'protocol_type'?",
    ]
    assert data["error"].splitlines() == data["problems"]


# -- roots that are no place to deploy to -----------------------------------------------------


def _root_case(site: Site, tmp_path: Path, case: str) -> tuple[str, list[str]]:
    """The config text of ``case`` and what its error line must say."""
    key = "projects.website.servers.production.root"
    text = site.config.read_text()
    root_line = f'root = "{site.root}"'
    if case == "empty":
        return text.replace(root_line, 'root = ""'), [key, "not be empty", "(got '')"]
    if case == "empty-ssh":
        ssh = 'protocol_type = "ssh"\nhost = "127.0.0.1"\nuser = "deploy"\nroot = ""'
        text = text.replace(f'protocol_type = "local"\n{root_line}', ssh)
        return text, [key, "not be empty"]
    if case == "is-state-dir":
        return text.replace(root_line, f'root = "{site.state_dir}"'), [key, "is the state_dir"]
    if case == "contains-state-dir":  # the default state_dir, beside the config file
        text = text.replace(f'state_dir = "{site.state_dir}"\n', "").replace(
            root_line, 'root = "."'
        )
        return text, [f"{key}: {tmp_path} contains the state_dir {tmp_path}/.deployhq-lite"]
    if case == "inside-state-dir":
        root = site.state_dir / "www"
        return text.replace(root_line, f'root = "{root}"'), [key, "is inside the state_dir"]
    if case == "is-repository":
        root = site.repo.path
        return text.replace(root_line, f'root = "{root}"'), [key, "is the repository"]
    assert case == "inside-repository"
    root = site.repo.path / "public"
    return text.replace(root_line, f'root = "{root}"'), [
        f"{key}: {root} is inside the repository {site.repo.path}"
    ]


ROOT_CASES = [
    "empty",
    "empty-ssh",
    "is-state-dir",
    "contains-state-dir",
    "inside-state-dir",
    "is-repository",
    "inside-repository",
]


@pytest.mark.parametrize("case", ROOT_CASES)
def test_root_that_is_no_place_to_deploy_is_a_config_error(
    site: Site, tmp_path: Path, case: str
) -> None:
    site.repo.commit({"index.html": "hi"})
    text, expected = _root_case(site, tmp_path, case)
    site.config.write_text(text)
    before = sorted(tmp_path.rglob("*"))
    line = one_error_line(run("deploy", "website", "-s", "production", "--config", site.config))
    assert line.startswith(f"error: {site.config}: ")
    for part in expected:
        assert part in line
    assert sorted(tmp_path.rglob("*")) == before  # nothing deployed, no state made
    with pytest.raises(dhq.ConfigError):
        load_settings(site.config)


def test_empty_root_from_the_environment(site: Site) -> None:
    line = one_error_line(
        run(
            "deploy",
            "website",
            "-s",
            "production",
            "--config",
            site.config,
            env={"DEPLOYHQ_LITE_PROJECTS__WEBSITE__SERVERS__PRODUCTION__ROOT": ""},
        )
    )
    assert "projects.website.servers.production.root: must name a directory" in line
    assert "DEPLOYHQ_LITE_" in line


def test_stack_environment_roots_checked_too_each_on_its_line(site: Site, tmp_path: Path) -> None:
    site.config.write_text(
        site.config.read_text()
        + f'\n[stacks.blog]\nrepository = "{site.repo.path}"\n'
        + '[stacks.blog.environments.staging]\nlocales = ["en-us"]\n'
        + f'root = "{site.repo.path / "delivery"}"\n'
        + '[stacks.blog.environments.production]\nlocales = ["en-us"]\nroot = ""\n'
        + '[stacks.blog.environments.remote]\nlocales = ["en-us"]\nprotocol_type = "ssh"\n'
        + f'host = "127.0.0.1"\nuser = "deploy"\nroot = "{site.repo.path}"\n'  # remote path
    )
    with pytest.raises(dhq.ConfigError) as raised:
        load_settings(site.config)
    assert raised.value.problems == (
        f"{site.config}: stacks.blog.environments.production.root: "
        "must name a directory, not be empty (got '')",
    )
    site.config.write_text(
        site.config.read_text().replace('root = ""', f'root = "{site.state_dir}"')
    )
    with pytest.raises(dhq.ConfigError) as raised:
        load_settings(site.config)
    assert raised.value.problems == (
        f"{site.config}: stacks.blog.environments.staging.root: {site.repo.path / 'delivery'} "
        f"is inside the repository {site.repo.path}",
        f"{site.config}: stacks.blog.environments.production.root: {site.state_dir} "
        "is the state_dir",
    )


def test_a_root_beside_the_repository_and_state_dir_is_fine(site: Site, tmp_path: Path) -> None:
    # Names that share a prefix are not inside one another.
    site.root = Path(f"{site.repo.path}-www")
    site.state_dir = tmp_path / "www-state"
    site.write_config()
    site.repo.commit({"index.html": "hi"})
    done = run("deploy", "website", "-s", "production", "--config", site.config)
    assert done.returncode == 0, done.stderr
    assert site.files() == {"index.html": b"hi"}


def destination_settings(tmp_path: Path) -> Settings:
    return build_settings(
        {
            "state_dir": str(tmp_path / "state"),
            "projects": {
                "website": {
                    "name": "Website",
                    "repository": str(tmp_path / "site.git"),
                    "branch": "live",
                    "servers": {"production": {"name": "Prod", "root": str(tmp_path / "www")}},
                    "server_groups": {"all": {"servers": ["production"]}},
                },
            },
            "stacks": {
                "blog": {
                    "name": "Blog",
                    "repository": str(tmp_path / "blog.git"),
                    "environments": {
                        "staging": {"locales": ["en-us"], "root": str(tmp_path / "blog")}
                    },
                },
            },
        }
    )


def test_destination_of_a_project_server(tmp_path: Path) -> None:
    settings = destination_settings(tmp_path)
    found = settings.destination("website", "production")
    assert found == Destination(
        project="website",
        server="production",
        config=settings.projects["website"].servers["production"],
        project_name="Website",
        repository=tmp_path / "site.git",
        branch="live",
    )
    assert not found.is_stack and found.stack is None
    assert (found.key, found.server_name) == ("website/production", "Prod")
    assert found.identifier == server_identifier("website", "production")
    with pytest.raises(dataclasses.FrozenInstanceError):
        found.server = "elsewhere"  # type: ignore[misc]


def test_destination_of_a_stack_environment_is_stored_as_stack_project(tmp_path: Path) -> None:
    settings = destination_settings(tmp_path)
    project = Destination.stack_project("blog")
    assert project == "stack:blog"  # the form the history stores, as before
    assert Destination.stack_of(project) == "blog"
    assert Destination.stack_of("website") is None
    found = settings.destination(project, "staging")
    assert found.is_stack and found.stack == "blog"
    assert (found.project, found.server, found.key) == (
        "stack:blog",
        "staging",
        "stack:blog/staging",
    )
    assert (found.project_name, found.branch) == ("Blog", "main")
    assert found.repository == tmp_path / "blog.git"
    assert found.config is settings.stacks["blog"].environments["staging"]
    assert found.identifier == server_identifier("stack:blog", "staging")
    assert settings.find_server(project, "staging") is found.config
    assert settings.get_repository(project) == (tmp_path / "blog.git", "stacks.blog")
    assert settings.get_repository("website") == (tmp_path / "site.git", "projects.website")


@pytest.mark.parametrize(
    ("project", "server", "message"),
    [
        ("shop", "production", "unknown project 'shop' (known: website)"),
        (
            "website",
            "live",
            "unknown server 'live' in project 'website' (known: production)",
        ),
        ("website", "all", "unknown server 'all' in project 'website' (known: production)"),
        ("stack:news", "staging", "unknown stack 'news' (known: blog)"),
        (
            "stack:blog",
            "production",
            "unknown environment 'production' in stack 'blog' (known: staging)",
        ),
        ("blog", "staging", "unknown project 'blog' (known: website)"),
    ],
)
def test_destination_refuses_unknown_names(
    tmp_path: Path, project: str, server: str, message: str
) -> None:
    settings = destination_settings(tmp_path)
    with pytest.raises(dhq.UnknownNameError) as raised:
        settings.destination(project, server)
    assert str(raised.value) == message
    assert settings.find_server(project, server) is None
