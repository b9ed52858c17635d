"""The documentation site (mkdocs.yml, docs/) builds with warnings as errors, and a browser renders
it: headless Chromium opens the built home page and one API-reference page and the test reads the
DOM it dumps after the pages' scripts ran (title, navigation, a code block, the generated
reference). A build that only warns must fail: a broken link is planted in a copy of the docs.

Chromium is Debian's package (`apt-get install chromium`); `.ci/run` installs it where it is
missing. Without it these tests fail, saying so: they never skip."""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
ENV = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}  # Material's banner about MkDocs 2, not a warning of ours


def build(site: Path, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
                          cwd=cwd, env=ENV, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    done = build(out)
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stdout}\n{done.stderr}"
    return out


@pytest.fixture(scope="module")
def chromium() -> str:
    wanted = (os.environ["CHROMIUM"],) if os.environ.get("CHROMIUM") else BROWSERS  # $CHROMIUM: a browser to use
    found = next(filter(None, map(shutil.which, wanted)), None)
    if not found:
        pytest.fail("headless Chromium is needed to check the documentation site and none was found "
                    f"(looked for {', '.join(wanted)}): install Debian's package with "
                    "`apt-get update && apt-get install -y chromium` (.ci/run does so where apt can)")
    return found


def dump_dom(browser: str, page: Path, profile: Path) -> str:
    """The page's DOM after load and its scripts, as headless Chromium serialises it."""
    done = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                           f"--user-data-dir={profile}", "--virtual-time-budget=3000", "--dump-dom",
                           page.as_uri()], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "</html>" in done.stdout, \
        f"{browser} --dump-dom {page}: exit {done.returncode}\n{done.stderr[-2000:]}"
    return done.stdout


def nav_titles(dom: str) -> list:
    """The titles of the primary navigation's links."""
    nav = dom[dom.index('md-nav--primary'):]
    nav = nav[:nav.index('md-sidebar md-sidebar--secondary')] if 'md-sidebar--secondary' in nav else nav
    return [re.sub(r"<[^>]+>|\s+", " ", t).strip()
            for t in re.findall(r'<a\b[^>]*\bclass="md-nav__link[^"]*"[^>]*>(.*?)</a>', nav, re.S)]


def test_home_page_renders(site, chromium, tmp_path):
    dom = dump_dom(chromium, site / "index.html", tmp_path / "profile")
    assert re.search(r"<title>\s*ums-rep\s*</title>", dom)
    # Material's scripts ran in the browser: the root lost "no-js", tables got their scroll wrapper
    root = re.search(r"<html[^>]*>", dom).group(0)
    assert "no-js" not in root and re.search(r'class="[^"]*\bjs\b', root), root
    assert "md-typeset__scrollwrap" in dom
    nav = nav_titles(dom)
    for title in ("Getting started", "Commands", "UMS-Rep", "MT-UNet", "A fair strategy comparison",
                  "Data layouts and phantoms", "Scaling out", "GPU and performance", "Training", "Models"):
        assert title in nav, (title, nav)
    blocks = re.findall(r"<pre[^>]*>(.*?)</pre>", dom, re.S)
    text = [re.sub(r"<[^>]+>", "", b) for b in blocks]
    assert any("python -m ums_rep.finetune --strategy joint" in t and "bash .ci/run" in t for t in text), text


def test_api_reference_page_renders(site, chromium, tmp_path):
    dom = dump_dom(chromium, site / "api" / "training" / "index.html", tmp_path / "profile")
    assert re.search(r"<title>\s*Training - ums-rep\s*</title>", dom)
    assert "Getting started" in nav_titles(dom)
    # fit's entry, generated from its docstring: heading, signature (a code block), parameters, returns
    assert 'id="ums_rep.strategies.fit"' in dom
    entry = dom[dom.index('id="ums_rep.strategies.fit"'):]
    entry = entry[:next((m.start() for m in re.finditer(r"<h[1-6] id=", entry)), None)]  # to the next heading
    signature = re.sub(r"<[^>]+>", "", re.search(r"<pre[^>]*>(.*?)</pre>", entry, re.S).group(1))
    assert "fit(" in signature and "strategy_name" in signature, signature
    plain = re.sub(r"<[^>]+>", " ", entry)
    for words in ("Parameters:", "strategy_name", "joint_model", "Returns:", "Raises:", "NonFiniteLossError"):
        assert words in plain, words
    # the docstrings' Sphinx roles became links to the objects they name
    assert re.search(r'<a class="autorefs autorefs-internal"[^>]*href="[^"]*#ums_rep\.strategies\.FitConfig"', dom)
    assert ":func:" not in dom and ":class:" not in dom


def test_a_warning_fails_the_build(tmp_path):
    """--strict is what CI relies on: a page with a broken link must fail the build."""
    for name in ("ums_rep", "mt_unet", "data_prep", "benchmarks"):
        (tmp_path / name).symlink_to(ROOT / name)
    shutil.copy(ROOT / "mkdocs.yml", tmp_path)
    shutil.copytree(ROOT / "docs", tmp_path / "docs")
    index = tmp_path / "docs" / "index.md"
    index.write_text(index.read_text() + "\nSee [the missing page](no-such-page.md).\n")
    done = build(tmp_path / "site", cwd=tmp_path)
    said = done.stdout + done.stderr
    assert done.returncode != 0, said
    assert "no-such-page.md" in said and "strict mode" in said, said
