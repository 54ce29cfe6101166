"""Entry-point plugins: a real installed distribution (a dist-info folder on sys.path) registers a selector."""
import sys
import textwrap

import pytest

from esn_lens import SELECTORS, NeuronStats, find_neurons
from esn_lens.errors import InputError
from esn_lens.plugins import load_entry_point_plugins, load_plugin

GROUP = "esn_lens.plugins"


def _install(root, dist, entry_points, modules):
    """Write a minimal installed distribution ``dist`` (METADATA + entry_points.txt) and modules under ``root``."""
    info = root / f"{dist}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    lines = "\n".join(f"{name} = {value}" for name, value in entry_points.items())
    (info / "entry_points.txt").write_text(f"[{GROUP}]\n{lines}\n")
    for name, code in modules.items():
        (root / f"{name}.py").write_text(textwrap.dedent(code))


@pytest.fixture
def site_dir(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    added = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - added:
        if name.startswith(("myplug_mod", "brokenplug_mod")):
            del sys.modules[name]


def test_entry_point_plugin_registers_a_selector(site_dir):
    _install(site_dir, "myplug", {"myplug": "myplug_mod"}, {"myplug_mod": """
        from esn_lens.selectors import SELECTORS

        @SELECTORS.register("plugin_firing")
        def plugin_firing(stats, *, seed=0):
            return stats.firing_rate.clone()
    """})
    assert "plugin_firing" not in SELECTORS
    try:
        loaded = load_entry_point_plugins()
        assert "myplug" in loaded
        assert "plugin_firing" in SELECTORS
        # the plugin's selector works like a built-in one
        stats = NeuronStats(("angry", "happy"), 1, 4)
        stats.K[0, 0, 2], stats.K[1, 0, 1] = 5.0, 5.0
        stats.T[:] = 10.0
        ns = find_neurons(stats, "plugin_firing", count=1)
        assert ns["angry"][0].nonzero().flatten().tolist() == [2]
        assert ns["happy"][0].nonzero().flatten().tolist() == [1]
        assert load_entry_point_plugins() == loaded  # loading twice is harmless
    finally:
        if "plugin_firing" in SELECTORS:
            SELECTORS.unregister("plugin_firing")
    assert "plugin_firing" not in SELECTORS


def test_broken_entry_point_plugin_is_a_clear_error(site_dir):
    _install(site_dir, "brokenplug", {"brokenplug": "brokenplug_mod"},
             {"brokenplug_mod": "import esn_lens_no_such_dependency\n"})
    with pytest.raises(InputError, match=r"plugin 'brokenplug' \(brokenplug_mod.*No module named "
                                         r"'esn_lens_no_such_dependency'"):
        load_entry_point_plugins()


def test_missing_entry_point_module_and_other_groups(site_dir):
    _install(site_dir, "ghostplug", {"ghost": "ghostplug_mod_missing"}, {})
    with pytest.raises(InputError, match=r"'ghost'.*ghostplug_mod_missing"):
        load_entry_point_plugins()
    assert load_entry_point_plugins(group="esn_lens.no_such_group") == []


def test_load_plugin_by_module_name(site_dir):
    (site_dir / "myplug_mod.py").write_text("VALUE = 42\n")
    assert load_plugin("myplug_mod").VALUE == 42
    with pytest.raises(InputError, match=r"cannot import plugin 'no_such_plugin_mod'"):
        load_plugin("no_such_plugin_mod")
    with pytest.raises(InputError, match="expected a module name"):
        load_plugin("")
