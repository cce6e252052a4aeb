"""conftest - pytest fixtures for Petrel's integration tests.

certs (session), petrel, petrel_factory, unbound_factory, sink_factory,
workdir. See petrel_fixtures.py for the classes.
"""

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import petrel_fixtures as pf  # noqa: E402

SANITIZER_MARKS = ("AddressSanitizer", "runtime error", "LeakSanitizer: detected")


def check_sanitizer_log(p):
    """check_sanitizer_log - fail when petreld's log shows a sanitizer report"""
    log = p.log()
    for mark in SANITIZER_MARKS:
        i = log.find(mark)
        if i >= 0:
            start = log.rfind("\n", 0, max(0, i - 200)) + 1
            pytest.fail("sanitizer report in %s:\n%s"
                        % (p.log_path, log[start:start + 3000]), pytrace=False)


@pytest.fixture(scope="session")
def _petrel_tmp_root():
    # world-traversable so petreld can run as nobody (user=nobody)
    # (PETREL_TEST_TMPDIR, else $TMPDIR or /tmp)
    base = os.environ.get("PETREL_TEST_TMPDIR") or None
    root = Path(tempfile.mkdtemp(prefix="itest-petrel-", dir=base))
    os.chmod(root, 0o755)
    yield root
    if not os.environ.get("PETREL_KEEP_TMP"):
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def workdir(_petrel_tmp_root, request):
    """workdir - a fresh mode-0755 directory for this test"""
    name = "".join(c if c.isalnum() or c in "-_" else "_"
                   for c in request.node.name)[:80]
    d = Path(tempfile.mkdtemp(prefix=name + "-", dir=_petrel_tmp_root))
    os.chmod(d, 0o755)
    return d


@pytest.fixture(scope="session")
def certs(_petrel_tmp_root):
    return pf.make_certs(_petrel_tmp_root / "certs")


@pytest.fixture
def petrel_factory(workdir, certs):
    """petrel_factory(conf=None, **kw) -> started Petrel (kw: certs, start,
    user); every instance is stopped and its log checked at teardown"""
    made = []

    def make(conf=None, **kw):
        kw.setdefault("certs", certs)
        p = pf.Petrel(workdir / ("petrel%d" % len(made)), conf=conf, **kw)
        made.append(p)
        return p

    yield make
    errors = []
    for p in made:
        try:
            p.stop()
        except AssertionError as e:
            errors.append(str(e))
    for p in made:
        check_sanitizer_log(p)
    if errors:
        pytest.fail("; ".join(errors), pytrace=False)


@pytest.fixture
def petrel(petrel_factory):
    """petrel - a started Petrel with the default test configuration"""
    return petrel_factory()


@pytest.fixture
def unbound_factory(workdir):
    """unbound_factory(records, zones=()) -> running Unbound"""
    made = []

    def make(records=(), **kw):
        u = pf.Unbound(workdir / ("unbound%d" % len(made)), records, **kw)
        made.append(u)
        return u

    yield make
    for u in made:
        u.stop()


@pytest.fixture
def sink_factory():
    """sink_factory(host="127.0.0.2", port=None, reply=None, data_reply=None,
    certs=None) -> running Sink"""
    made = []

    def make(*a, **kw):
        s = pf.Sink(*a, **kw)
        made.append(s)
        return s

    yield make
    for s in made:
        s.stop()
