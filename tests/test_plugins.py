"""The plugin host: built-ins load through the hooks, third-party plugins are fault tolerant."""

from __future__ import annotations

import importlib.metadata as md
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from memctl.ingest import hookspecs, plugins
from memctl.ingest.plugins import BUILTIN_PLUGINS, PluginHost

ROOT = Path(__file__).resolve().parent.parent

BUILTIN_SOURCES = {
    "markdown": ["markdown", "text"],
    "records": ["json"],
    "mail": ["eml", "mbox"],
    "chat": ["chatgpt", "claude"],
    "shell": ["bash", "zsh"],
    "bookmarks": ["chromium", "firefox"],
}


@pytest.fixture
def plugin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory on sys.path where tests write throw-away plugin modules."""
    d = tmp_path / "plugin_src"
    d.mkdir()
    monkeypatch.syspath_prepend(str(d))
    return d


def write_plugin(d: Path, module: str, body: str) -> md.EntryPoint:
    (d / f"{module}.py").write_text(textwrap.dedent(body))
    sys.modules.pop(module, None)
    return md.EntryPoint(name=module.removeprefix("memctl_test_"), value=module, group="memctl")


GOOD_PLUGIN = """
    from pathlib import Path
    from memctl.ingest.hookspecs import hookimpl
    from memctl.ingest.sources import SourceSpec

    __version__ = "1.2.3"

    def detect(path, head):
        return 99 if path.suffix == ".demo" else 0

    def iter_items(path, options):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            yield {"text": line, "locator": f"L{n}"}

    @hookimpl
    def memctl_sources():
        return [SourceSpec(name="demo", description="demo lines", detect=detect,
                           iter_items=iter_items)]
"""


def test_builtins_are_listed_with_name_version_hooks() -> None:
    host = PluginHost(load_entry_points=False)
    listed = {p["name"]: p for p in host.list_plugins()}
    assert set(listed) == set(BUILTIN_SOURCES)
    for name, info in listed.items():
        assert info["builtin"] is True
        assert info["hooks"] == ["memctl_sources"]
        assert re.match(r"^\d+\.\d+", info["version"]), info
        assert info["sources"] == BUILTIN_SOURCES[name]
    assert host.warnings == []


def test_builtins_go_through_the_same_hooks() -> None:
    host = PluginHost(load_entry_points=False)
    impls = host.pm.hook.memctl_sources.get_hookimpls()
    assert [i.plugin_name for i in impls] == [m.rsplit(".", 1)[1] for m in BUILTIN_PLUGINS]
    sources = host.sources()
    assert sorted(sources) == sorted(s for v in BUILTIN_SOURCES.values() for s in v)
    assert all(spec.plugin for spec in sources.values())


def test_third_party_entry_point_is_loaded(plugin_dir: Path, tmp_path: Path) -> None:
    ep = write_plugin(plugin_dir, "memctl_test_good", GOOD_PLUGIN)
    host = PluginHost(entry_points=[ep])
    assert host.warnings == []
    listed = {p["name"]: p for p in host.list_plugins()}
    assert listed["good"] == {
        "name": "good",
        "version": "1.2.3",
        "hooks": ["memctl_sources"],
        "builtin": False,
        "sources": ["demo"],
    }
    from memctl.ingest.sources import plan

    f = tmp_path / "x.demo"
    f.write_text("one\ntwo\n")
    (task,) = plan(f, host=host)
    assert task.spec.name == "demo"
    assert [i["text"] for i in task.run()] == ["one", "two"]


@pytest.mark.parametrize(
    "body, expected",
    [
        ("raise ImportError('missing dependency foo')", "ImportError: missing dependency foo"),
        ("1/0", "ZeroDivisionError"),
        ("import sys; sys.exit(3)", "SystemExit"),
        ("def broken(:", "SyntaxError"),
    ],
)
def test_broken_plugin_is_a_warning_and_the_rest_load(
    plugin_dir: Path, body: str, expected: str
) -> None:
    broken = write_plugin(plugin_dir, "memctl_test_broken", body)
    good = write_plugin(plugin_dir, "memctl_test_good", GOOD_PLUGIN)
    host = PluginHost(entry_points=[broken, good])
    assert len(host.warnings) == 1
    warning = host.warnings[0]
    assert warning.plugin == "broken"
    assert expected in warning.message
    assert "broken" in str(warning)
    names = [p["name"] for p in host.list_plugins()]
    assert "broken" not in names
    assert "good" in names and "markdown" in names
    assert "demo" in host.sources() and "markdown" in host.sources()


def test_missing_module_entry_point_is_a_warning() -> None:
    ep = md.EntryPoint(name="ghost", value="memctl_no_such_module_xyz", group="memctl")
    host = PluginHost(entry_points=[ep])
    assert [w.plugin for w in host.warnings] == ["ghost"]
    assert "ModuleNotFoundError" in host.warnings[0].message


def test_global_host_reports_load_warnings(
    plugin_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = write_plugin(plugin_dir, "memctl_test_broken", "raise RuntimeError('boom')")
    monkeypatch.setattr(plugins, "_entry_points", lambda: [broken])
    plugins.reset_host()
    try:
        warnings = plugins.load_warnings()
        assert [w.plugin for w in warnings] == ["broken"]
        assert {p["name"] for p in plugins.list_plugins()} == set(BUILTIN_SOURCES)
    finally:
        plugins.reset_host()


def test_hook_that_raises_costs_only_its_own_sources(plugin_dir: Path) -> None:
    ep = write_plugin(
        plugin_dir,
        "memctl_test_raising",
        """
        from memctl.ingest.hookspecs import hookimpl

        @hookimpl
        def memctl_sources():
            raise ValueError("bad plugin")
        """,
    )
    host = PluginHost(entry_points=[ep])
    sources = host.sources()
    assert "markdown" in sources and "mbox" in sources
    assert any(w.plugin == "raising" and "ValueError" in w.message for w in host.warnings)


def test_hook_returning_garbage_is_a_warning(plugin_dir: Path) -> None:
    ep = write_plugin(
        plugin_dir,
        "memctl_test_garbage",
        """
        from memctl.ingest.hookspecs import hookimpl

        @hookimpl
        def memctl_sources():
            return ["not a spec", 42]
        """,
    )
    host = PluginHost(entry_points=[ep])
    assert len(host.sources()) == sum(len(v) for v in BUILTIN_SOURCES.values())
    assert [w.plugin for w in host.warnings] == ["garbage", "garbage"]


def test_a_source_name_cannot_be_hijacked(plugin_dir: Path) -> None:
    ep = write_plugin(
        plugin_dir,
        "memctl_test_hijack",
        GOOD_PLUGIN.replace('name="demo"', 'name="markdown"'),
    )
    host = PluginHost(entry_points=[ep])
    assert host.sources()["markdown"].plugin == "markdown"
    assert any("already provided" in w.message for w in host.warnings)


def test_a_typo_in_a_hook_name_is_reported(plugin_dir: Path) -> None:
    ep = write_plugin(
        plugin_dir,
        "memctl_test_typo",
        """
        from memctl.ingest.hookspecs import hookimpl

        @hookimpl
        def memctl_source():
            return []
        """,
    )
    host = PluginHost(entry_points=[ep])
    assert any("unknown hook 'memctl_source'" in w.message for w in host.warnings)


def test_builtin_declared_as_entry_point_is_not_loaded_twice() -> None:
    eps = [
        md.EntryPoint(name=m.rsplit(".", 1)[1], value=m, group="memctl") for m in BUILTIN_PLUGINS
    ]
    host = PluginHost(entry_points=eps)
    assert host.warnings == []
    assert len(host.list_plugins()) == len(BUILTIN_PLUGINS)


def test_entry_point_name_clash_with_builtin_is_a_warning(plugin_dir: Path) -> None:
    ep = write_plugin(plugin_dir, "memctl_test_good", GOOD_PLUGIN)
    clash = md.EntryPoint(name="markdown", value=ep.value, group="memctl")
    host = PluginHost(entry_points=[clash])
    assert any(w.plugin == "markdown" and "already taken" in w.message for w in host.warnings)
    assert "demo" not in host.sources()


def test_commands_hook_adds_a_sub_app(plugin_dir: Path) -> None:
    import typer
    from typer.testing import CliRunner

    ep = write_plugin(
        plugin_dir,
        "memctl_test_cmds",
        """
        import typer
        from memctl.ingest.hookspecs import hookimpl

        @hookimpl
        def memctl_commands(app):
            sub = typer.Typer()

            @sub.command()
            def hello(name: str = "world"):
                print(f"hello {name}")

            app.add_typer(sub, name="demo")
        """,
    )
    bad = write_plugin(
        plugin_dir,
        "memctl_test_badcmds",
        """
        from memctl.ingest.hookspecs import hookimpl

        @hookimpl
        def memctl_commands(app):
            raise RuntimeError("no")
        """,
    )
    host = PluginHost(entry_points=[ep, bad])
    app = typer.Typer()

    @app.command()
    def version() -> None:
        print("0")

    host.register_commands(app)
    result = CliRunner().invoke(app, ["demo", "hello", "--name", "you"])
    assert result.exit_code == 0, result.output
    assert "hello you" in result.output
    assert any(w.plugin == "badcmds" and "RuntimeError" in w.message for w in host.warnings)


def test_every_hook_is_documented() -> None:
    doc = (ROOT / "docs" / "plugins.md").read_text()
    hooks = [name for name in dir(hookspecs) if name.startswith("memctl_")]
    assert hooks == ["memctl_commands", "memctl_sources"]
    for name in hooks:
        assert f"`{name}" in doc, f"{name} is not documented in docs/plugins.md"


def test_loading_plugins_imports_nothing_heavy() -> None:
    probe = (
        "import json, sys\n"
        "from memctl.ingest.plugins import get_host\n"
        "host = get_host(); host.sources(); host.list_plugins()\n"
        "heavy = ['numpy', 'torch', 'sentence_transformers', 'mcp', 'sqlcipher3', 'email.parser',"
        " 'sqlite3']\n"
        "print(json.dumps([m for m in heavy if m in sys.modules]))\n"
    )
    env_path = f"{ROOT}:{ROOT / 'plugins'}"
    proc = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"PYTHONPATH": env_path, "PATH": "/usr/bin:/bin"},
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == []


def test_the_documented_example_plugin_works(plugin_dir: Path, tmp_path: Path) -> None:
    doc = (ROOT / "docs" / "plugins.md").read_text()
    code = re.search(r"`memctl_todo\.py`:\n\n```python\n(.*?)```", doc, re.DOTALL)
    assert code, "the example plugin is missing from docs/plugins.md"
    (plugin_dir / "memctl_todo.py").write_text(code.group(1))
    sys.modules.pop("memctl_todo", None)
    host = PluginHost(entry_points=[md.EntryPoint("todo", "memctl_todo", "memctl")])
    assert host.warnings == []
    assert {"name": "todo", "version": "0.1.0"}.items() <= host.list_plugins()[-1].items()
    from memctl.ingest.sources import SourceError, plan

    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "groceries.todo").write_text("[ ] eggs\n[x] milk\n[ ] bread\n")
    (task,) = list(plan(lists, host=host))
    run = task.run()
    assert [(i["text"], i["locator"]) for i in run] == [
        ("eggs", "groceries.todo#L1"),
        ("bread", "groceries.todo#L3"),
    ]
    assert run.skipped == 1
    (lists / "bad.todo").write_text("[ ] ok\nnot a to-do line\n")
    with pytest.raises(SourceError, match=r"bad\.todo \(line 2\): not a to-do list"):
        list(next(iter(plan(lists / "bad.todo", host=host))).run())
