"""test_petrelctl - the administration tool: every command, its --json
shapes, its errors (exit status 1 or 2, "petrelctl: ..." on stderr), IDN
domains, the tenant delete cascade, secrets never printed, and changes
seen by a running petreld without a restart.

Most tests need no daemon: Petrel(workdir, start=False) writes a config
and runs petrelctl against its data_dir.
"""

import json
import re
import smtplib
import ssl
import subprocess

import pytest

import petrel_fixtures as pf

COMMANDS = [
    ("tenant", "add"), ("tenant", "list"), ("tenant", "del"),
    ("user", "add"), ("user", "del"), ("user", "list"),
    ("domain", "add"), ("domain", "add-managed"), ("domain", "list"),
    ("domain", "show"), ("domain", "set-verified"), ("domain", "del"),
    ("network", "add"), ("network", "list"), ("network", "del"),
    ("sender", "add"), ("sender", "list"), ("sender", "del"),
    ("queue", "list"), ("message", "show"),
]

DOMAIN_KEYS = ["domain", "tenant", "kind", "status", "records"]
RECORD_KEYS = {"type", "name", "value", "purpose", "status"}


@pytest.fixture
def p(workdir):
    """p - a config and data_dir, no daemon"""
    return pf.Petrel(workdir, start=False)


def run(args, input=None, cwd=None):
    """run - petrelctl with exactly these arguments (no implicit -c)"""
    r = subprocess.run([pf.petrelctl_path()] + [str(a) for a in args],
                       input=input, capture_output=True, text=True,
                       timeout=60, cwd=cwd)
    assert "Sanitizer" not in r.stderr, r.stderr
    assert "runtime error" not in r.stderr, r.stderr
    return r


def fails(p, *args, input=None, status=1, msg=None):
    """fails - run petrelctl, expect exit status and a message on stderr"""
    r = p.ctl(*args, input=input, check=False)
    assert r.returncode == status, (args, r.returncode, r.stdout, r.stderr)
    assert r.stderr.startswith("petrelctl: "), r.stderr
    assert "Sanitizer" not in r.stderr, r.stderr
    if msg is not None:
        assert re.search(msg, r.stderr, re.I), (msg, r.stderr)
    if status == 2:
        assert "usage: petrelctl" in r.stderr, r.stderr
    return r


def ok(p, *args, input=None):
    r = p.ctl(*args, input=input)
    assert "Sanitizer" not in r.stderr, r.stderr
    return r


def add_managed(p, tenant):
    """add_managed - domain add-managed; the name from the first line"""
    r = ok(p, "domain", "add-managed", tenant)
    first = r.stdout.splitlines()[0]
    m = re.match(r"domain ([a-z0-9]+\.petrel\.test) verified \(managed\)",
                 first)
    assert m, first
    return m.group(1), r


def no_secrets(text, *secrets):
    low = text.lower()
    assert "private" not in low, text[:2000]
    assert "begin" not in low, text[:2000]
    assert "$scrypt$" not in text, text[:2000]
    for s in secrets:
        assert s not in text


# ------------------------------------------------------------- usage

def test_help_lists_every_command(p):
    r = run(["-h"])
    assert r.returncode == 0, r.stderr
    for noun, verb in COMMANDS:
        assert re.search(r"^\s*%s %s\b" % (noun, verb), r.stdout, re.M), \
            (noun, verb, r.stdout)
    r = run(["--help"])
    assert r.returncode == 0 and "domain add-managed" in r.stdout
    # help for one noun and one command, with -c present
    r = p.ctl("domain", "-h")
    assert "usage: petrelctl [-c conf] domain show DOMAIN" in r.stdout
    assert "tenant add" not in r.stdout
    r = p.ctl("user", "add", "--help")
    assert r.stdout.startswith("usage: petrelctl [-c conf] user add TENANT "
                               "USERNAME")


def test_man_page_lists_every_command():
    from pathlib import Path
    man = (Path(__file__).resolve().parents[2] / "doc" / "petrelctl.8") \
        .read_text()
    flat = re.sub(r"\\f[BIRP]|\\-|\"", "", man).replace("\\", "")
    for noun, verb in COMMANDS:
        assert re.search(r"^\.B[IR]* *%s %s\b" % (noun, verb.replace(
            "-", "-?")), flat, re.M), (noun, verb)


def test_usage_errors(p):
    r = run([])
    assert r.returncode == 2 and "usage: petrelctl" in r.stderr
    assert r.stdout == ""
    fails(p, status=2, msg="missing command")
    fails(p, "tenant", status=2, msg="missing command")
    fails(p, "tenant", "frobnicate", "x", status=2, msg="unknown command")
    fails(p, "bogus", "list", status=2, msg="unknown command")
    fails(p, "tenant", "add", status=2, msg="missing arguments")
    fails(p, "tenant", "add", "a", "b", status=2, msg="too many arguments")
    fails(p, "user", "add", "acme", status=2)
    fails(p, "domain", "list", "a", "b", status=2)
    fails(p, "tenant", "add", "acme", "--json", status=2, msg="--json")
    fails(p, "tenant", "list", "--frob", status=2, msg="unknown option")
    fails(p, "domain", "add", "acme", "-x.example", status=2,
          msg="unknown option")
    r = run(["tenant", "list", "-c"])
    assert r.returncode == 2 and r.stderr.startswith("petrelctl: ")
    # nothing was created by any of these
    assert p.ctl_json("tenant", "list") == []


def test_config_option_anywhere_and_errors(p, workdir):
    ok(p, "tenant", "add", "acme")
    conf = str(p.conf_path)
    for args in (["-c", conf, "tenant", "list", "--json"],
                 ["tenant", "-c", conf, "list", "--json"],
                 ["tenant", "list", "--json", "-c", conf],
                 ["--json", "tenant", "list", "--config=" + conf]):
        r = run(args)
        assert r.returncode == 0, (args, r.stderr)
        assert [t["name"] for t in json.loads(r.stdout)] == ["acme"], args
    r = run(["-c", str(workdir / "missing.conf"), "tenant", "list"])
    assert r.returncode == 1
    assert r.stderr.startswith("petrelctl: ") and "missing.conf" in r.stderr
    bad = workdir / "bad.conf"
    bad.write_text("data_dir = %s\nno_such_key = 1\n" % p.data_dir)
    r = run(["-c", str(bad), "tenant", "list"])
    assert r.returncode == 1
    assert r.stderr.startswith("petrelctl: ") and "no_such_key" in r.stderr
    assert r.stdout == ""


# ------------------------------------------------------------- tenants

def test_tenant_add_list_del(p):
    r = ok(p, "tenant", "add", "acme")
    assert "acme" in r.stdout
    ok(p, "tenant", "add", "beta-2")
    fails(p, "tenant", "add", "acme", msg="exists")
    fails(p, "tenant", "add", "Bad Name", msg="tenant")
    fails(p, "tenant", "add", "x" * 65, msg="tenant")
    tenants = p.ctl_json("tenant", "list")
    assert sorted(t["name"] for t in tenants) == ["acme", "beta-2"]
    assert all(isinstance(t.get("created"), int) for t in tenants)
    r = ok(p, "tenant", "list")
    assert re.search(r"^acme\s", r.stdout, re.M)
    assert re.search(r"^beta-2\s", r.stdout, re.M)
    ok(p, "tenant", "del", "beta-2")
    assert [t["name"] for t in p.ctl_json("tenant", "list")] == ["acme"]
    fails(p, "tenant", "del", "beta-2", msg="unknown tenant")


# ------------------------------------------------------------- users

def test_user_add_list_del(p, workdir):
    pw = "correct-horse-9f3Kq"
    ok(p, "tenant", "add", "acme")
    r = ok(p, "user", "add", "acme", "app", input=pw + "\n")
    no_secrets(r.stdout + r.stderr, pw)
    assert "app" in r.stdout
    r = ok(p, "user", "add", "acme", "app2", input=pw + "x\r\n")
    no_secrets(r.stdout + r.stderr, pw)
    users = p.ctl_json("user", "list", "acme")
    assert sorted(u["user"] for u in users) == ["app", "app2"]
    for u in users:
        assert u["tenant"] == "acme"
        assert "hash" not in u
    r = ok(p, "user", "list", "acme")
    assert re.search(r"^app\s", r.stdout, re.M)
    r2 = ok(p, "user", "list", "acme", "--json")
    no_secrets(r.stdout + r2.stdout, pw)
    # the password is not in the store in clear
    for f in p.data_dir.iterdir():
        assert pw.encode() not in f.read_bytes(), f
    # duplicates (usernames are unique across tenants)
    fails(p, "user", "add", "acme", "app", input="other-pw\n",
          msg="exists")
    ok(p, "tenant", "add", "beta")
    fails(p, "user", "add", "beta", "app", input="other-pw\n", msg="exists")
    fails(p, "user", "add", "nosuch", "u", input="pw123456\n",
          msg="unknown tenant")
    fails(p, "user", "list", "nosuch", "--json", msg="unknown tenant")
    ok(p, "user", "del", "acme", "app2")
    assert [u["user"] for u in p.ctl_json("user", "list", "acme")] == ["app"]
    fails(p, "user", "del", "acme", "app2")
    fails(p, "user", "del", "beta", "app")   # another tenant's user
    assert [u["user"] for u in p.ctl_json("user", "list", "acme")] == ["app"]


def test_user_password_rules(p):
    ok(p, "tenant", "add", "acme")
    fails(p, "user", "add", "acme", "u1", input="", msg="empty")
    fails(p, "user", "add", "acme", "u1", input="\n", msg="empty")
    fails(p, "user", "add", "acme", "u1", input="\r\n", msg="empty")
    long_pw = "p" * 1025
    r = fails(p, "user", "add", "acme", "u1", input=long_pw + "\n",
              msg="too long")
    assert long_pw not in r.stderr + r.stdout
    fails(p, "user", "add", "acme", "u1", input="ab\rcd\n", msg="CR")
    assert p.ctl_json("user", "list", "acme") == []
    # exactly the limit is fine, with or without a line ending
    ok(p, "user", "add", "acme", "u1", input="q" * 1024 + "\r\n")
    ok(p, "user", "add", "acme", "u2", input="no-newline-pw")
    users = sorted(u["user"] for u in p.ctl_json("user", "list", "acme"))
    assert users == ["u1", "u2"]


def test_user_add_tty_no_echo(p):
    """on a terminal the password is read with echo off"""
    import os
    import pty
    import select
    import time
    ok(p, "tenant", "add", "acme")
    pw = b"Tty-Secret-77"
    pid, fd = pty.fork()
    if pid == 0:
        os.execv(pf.petrelctl_path(), ["petrelctl", "-c", str(p.conf_path),
                                       "user", "add", "acme", "ttyuser"])
    out = b""

    def read_until(pred, timeout=10):
        nonlocal out
        end = time.time() + timeout
        while time.time() < end and not pred():
            r, _, _ = select.select([fd], [], [], 0.1)
            if r:
                try:
                    d = os.read(fd, 4096)
                except OSError:
                    return
                if not d:
                    return
                out += d

    read_until(lambda: b"password:" in out)
    assert b"password:" in out, out
    os.write(fd, pw + b"\n")
    read_until(lambda: b"added" in out)
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    assert os.WEXITSTATUS(status) == 0, out
    assert pw not in out, out
    assert [u["user"] for u in p.ctl_json("user", "list", "acme")] == \
        ["ttyuser"]


# ------------------------------------------------------------- domains

def test_domain_add_prints_records_and_show_json(p):
    ok(p, "tenant", "add", "acme")
    r = ok(p, "domain", "add", "acme", "Example.COM")
    no_secrets(r.stdout + r.stderr)
    for needle in ("_petrel.example.com", "_domainkey.example.com",
                   "_dmarc.example.com", "v=spf1", "v=DKIM1", "v=DMARC1"):
        assert needle in r.stdout, needle

    d = p.ctl_json("domain", "show", "example.com")
    assert list(d)[:5] == DOMAIN_KEYS
    assert d["domain"] == "example.com"
    assert d["tenant"] == "acme"
    assert d["kind"] == "custom"
    assert d["status"] == "pending"
    assert {r["purpose"] for r in d["records"]} == \
        {"ownership", "spf", "dkim", "dmarc"}
    for rec in d["records"]:
        assert set(rec) == RECORD_KEYS, rec
        assert rec["type"] == "TXT"
        assert rec["status"] == "pending"
        assert rec["name"] == "example.com" or \
            rec["name"].endswith(".example.com")
        assert rec["value"] in r.stdout   # the add output showed it
    dkim = [x for x in d["records"] if x["purpose"] == "dkim"]
    assert {("k=rsa" in x["value"], "k=ed25519" in x["value"])
            for x in dkim} == {(True, False), (False, True)}
    for args in (("domain", "show", "example.com", "--json"),
                 ("domain", "show", "example.com"),
                 ("domain", "list", "--json"),
                 ("domain", "list", "acme", "--json"),
                 ("domain", "list")):
        out = ok(p, *args)
        no_secrets(out.stdout + out.stderr)
    human = ok(p, "domain", "show", "example.com").stdout
    assert "pending" in human and "_dmarc.example.com" in human

    lst = p.ctl_json("domain", "list")
    assert [x["domain"] for x in lst] == ["example.com"]
    assert list(lst[0])[:5] == DOMAIN_KEYS


def test_domain_errors_leave_nothing_behind(p):
    ok(p, "tenant", "add", "acme")
    ok(p, "tenant", "add", "beta")
    fails(p, "domain", "add", "nosuch", "example.org", msg="unknown tenant")
    for bad in ("bad..example", "-x.example", "nodot", "exa mple.com",
                "a" * 64 + ".example", ("b" * 60 + ".") * 5 + "com",
                "under_score.example", ".example", ""):
        # "--" ends the options, so "-x.example" is an argument
        fails(p, "domain", "add", "acme", "--", bad, msg="invalid domain")
    assert p.ctl_json("domain", "list") == []

    ok(p, "domain", "add", "acme", "example.org")
    before = p.ctl_json("domain", "show", "example.org")
    fails(p, "domain", "add", "acme", "example.org", msg="already exists")
    fails(p, "domain", "add", "beta", "EXAMPLE.org", msg="already exists")
    after = p.ctl_json("domain", "show", "example.org")
    assert after == before
    assert [d["domain"] for d in p.ctl_json("domain", "list")] == \
        ["example.org"]
    fails(p, "domain", "show", "example.net", msg="unknown domain")
    fails(p, "domain", "show", "bad..name", msg="invalid domain")
    fails(p, "domain", "del", "example.net", msg="unknown domain")
    fails(p, "domain", "set-verified", "example.net", msg="unknown domain")
    fails(p, "domain", "list", "nosuch", msg="unknown tenant")


def test_domain_idn(p):
    ok(p, "tenant", "add", "acme")
    r = ok(p, "domain", "add", "acme", "bücher.example")
    assert "xn--bcher-kva.example" in r.stdout
    assert re.search(r"punycode|A-label", r.stdout + r.stderr, re.I)
    d = p.ctl_json("domain", "show", "bücher.example")
    assert d["domain"] == "xn--bcher-kva.example"
    assert d == p.ctl_json("domain", "show", "xn--bcher-kva.example")
    assert [x["domain"] for x in p.ctl_json("domain", "list")] == \
        ["xn--bcher-kva.example"]
    fails(p, "domain", "add", "acme", "BÜCHER.example", msg="already exists")
    ok(p, "domain", "del", "Bücher.Example")
    assert p.ctl_json("domain", "list") == []


def test_domain_add_managed(p):
    ok(p, "tenant", "add", "acme")
    name, r = add_managed(p, "acme")
    no_secrets(r.stdout + r.stderr)
    assert "_domainkey." + name in r.stdout
    d = p.ctl_json("domain", "show", name)
    assert list(d)[:5] == DOMAIN_KEYS
    assert (d["tenant"], d["kind"], d["status"]) == \
        ("acme", "managed", "verified")
    assert d["records"] and all(x["status"] == "verified"
                                for x in d["records"])
    name2, _ = add_managed(p, "acme")
    assert name2 != name
    # the fixture's own parser finds the same kind of name
    info = p.setup_tenant("beta", user=None)
    assert info["domain"].endswith(".petrel.test")
    assert p.ctl_json("domain", "show", info["domain"])["tenant"] == "beta"
    fails(p, "domain", "add-managed", "nosuch", msg="unknown tenant")
    assert len(p.ctl_json("domain", "list")) == 3


def test_domain_set_verified_and_del(p):
    ok(p, "tenant", "add", "acme")
    ok(p, "domain", "add", "acme", "example.com")
    ok(p, "domain", "add", "acme", "example.net")
    assert p.ctl_json("domain", "show", "example.com")["status"] == "pending"
    r = ok(p, "domain", "set-verified", "example.com")
    assert "example.com" in r.stdout
    d = p.ctl_json("domain", "show", "example.com")
    assert d["status"] == "verified"
    assert all(x["status"] == "verified" for x in d["records"])
    assert p.ctl_json("domain", "show", "example.net")["status"] == "pending"
    fails(p, "domain", "set-verified", "example.com", "--json", status=2)

    ok(p, "domain", "del", "example.com")
    fails(p, "domain", "show", "example.com", msg="unknown domain")
    fails(p, "domain", "del", "example.com", msg="unknown domain")
    assert [x["domain"] for x in p.ctl_json("domain", "list")] == \
        ["example.net"]
    # the name is free again
    ok(p, "domain", "add", "acme", "example.com")


def test_domain_list_by_tenant(p):
    ok(p, "tenant", "add", "acme")
    ok(p, "tenant", "add", "beta")
    ok(p, "domain", "add", "acme", "a.example")
    ok(p, "domain", "add", "beta", "b.example")
    assert [d["domain"] for d in p.ctl_json("domain", "list", "acme")] == \
        ["a.example"]
    assert [d["domain"] for d in p.ctl_json("domain", "list", "beta")] == \
        ["b.example"]
    assert sorted(d["domain"] for d in p.ctl_json("domain", "list")) == \
        ["a.example", "b.example"]
    human = ok(p, "domain", "list", "acme").stdout
    assert re.search(r"^a\.example\s+acme\s+custom\s+pending", human, re.M)
    assert "b.example" not in human


# ------------------------------------------------------------- networks

def test_network_add_list_del(p):
    ok(p, "tenant", "add", "acme")
    ok(p, "tenant", "add", "beta")
    ok(p, "network", "add", "acme", "10.1.0.0/16")
    r = ok(p, "network", "add", "acme", "127.0.0.5")
    assert "127.0.0.5/32" in r.stdout
    ok(p, "network", "add", "beta", "2001:DB8:0::/32")
    nets = p.ctl_json("network", "list")
    assert sorted((n["cidr"], n["tenant"]) for n in nets) == [
        ("10.1.0.0/16", "acme"), ("127.0.0.5/32", "acme"),
        ("2001:db8::/32", "beta")]
    human = ok(p, "network", "list").stdout
    assert re.search(r"^2001:db8::/32\s+beta$", human, re.M)

    fails(p, "network", "add", "acme", "10.1.0.1/16", msg="host bits")
    for bad in ("10.0.0.0/33", "garbage", "10.0.0/8", "1.2.3.4/-1",
                "::1/129", ""):
        fails(p, "network", "add", "acme", bad, msg="invalid network")
    fails(p, "network", "add", "nosuch", "10.9.0.0/16", msg="unknown tenant")
    fails(p, "network", "add", "beta", "10.1.0.0/16", msg="exists")
    assert len(p.ctl_json("network", "list")) == 3

    ok(p, "network", "del", "2001:db8::/32")
    fails(p, "network", "del", "2001:db8::/32")
    fails(p, "network", "del", "nonsense", msg="invalid network")
    assert sorted(n["cidr"] for n in p.ctl_json("network", "list")) == \
        ["10.1.0.0/16", "127.0.0.5/32"]


# ------------------------------------------------------------- senders

def test_sender_add_list_del(p):
    ok(p, "tenant", "add", "acme")
    ok(p, "domain", "add", "acme", "example.com")
    assert p.ctl_json("sender", "list", "example.com") == []
    assert "any" in ok(p, "sender", "list", "example.com").stdout
    ok(p, "sender", "add", "example.com", "info")
    ok(p, "sender", "add", "EXAMPLE.com", "no-reply")
    assert sorted(p.ctl_json("sender", "list", "example.com")) == \
        ["info", "no-reply"]
    assert sorted(p.ctl_json("domain", "show", "example.com")["senders"]) \
        == ["info", "no-reply"]
    human = ok(p, "sender", "list", "example.com").stdout
    assert "info@example.com" in human
    for bad in ("a b", ".x", "x.", "a..b", "x" * 65, "a@b", "a\"b"):
        fails(p, "sender", "add", "example.com", bad, msg="local part")
    fails(p, "sender", "add", "example.org", "info", msg="unknown domain")
    fails(p, "sender", "list", "example.org", msg="unknown domain")
    ok(p, "sender", "del", "example.com", "info")
    fails(p, "sender", "del", "example.com", "info")
    assert p.ctl_json("sender", "list", "example.com") == ["no-reply"]


# ------------------------------------------------------------- cascade

def test_tenant_del_cascade(p):
    acme = p.setup_tenant("acme", user="app", password="pw-acme-1")
    ok(p, "domain", "add", "acme", "acme.example")
    ok(p, "sender", "add", "acme.example", "info")
    ok(p, "network", "add", "acme", "10.1.0.0/16")
    p.setup_tenant("beta", user="bapp", password="pw-beta-1")
    ok(p, "domain", "add", "beta", "beta.example")
    ok(p, "network", "add", "beta", "10.2.0.0/16")

    for t in ("acme", "beta"):
        ok(p, "apikey", "add", t, "k1")
        ok(p, "suppression", "add", t, "old@example.test")
        ok(p, "webhook", "add", t, "http://127.0.0.1:9/" + t)

    r = ok(p, "tenant", "del", "acme")
    assert "acme" in r.stdout
    assert [t["name"] for t in p.ctl_json("tenant", "list")] == ["beta"]
    doms = p.ctl_json("domain", "list")
    assert all(d["tenant"] == "beta" for d in doms) and len(doms) == 2
    fails(p, "domain", "show", acme["domain"], msg="unknown domain")
    fails(p, "domain", "show", "acme.example", msg="unknown domain")
    assert [(n["cidr"], n["tenant"]) for n in p.ctl_json("network", "list")] \
        == [("10.2.0.0/16", "beta")]
    fails(p, "user", "list", "acme", msg="unknown tenant")
    assert [u["user"] for u in p.ctl_json("user", "list", "beta")] == ["bapp"]

    # a re-created tenant starts empty, and the freed names can be reused
    ok(p, "tenant", "add", "acme")
    for noun in ("user", "domain", "apikey", "suppression", "webhook"):
        assert p.ctl_json(noun, "list", "acme") == [], noun
    # the other tenant keeps its own
    for noun in ("apikey", "suppression", "webhook"):
        assert len(p.ctl_json(noun, "list", "beta")) == 1, noun
    ok(p, "user", "add", "beta", "app", input="another-pw\n")
    ok(p, "domain", "add", "beta", "acme.example")
    ok(p, "network", "add", "beta", "10.1.0.0/16")
    assert p.ctl_json("sender", "list", "acme.example") == []


# ------------------------------------------------------------- queue

def test_queue_empty_and_unknown_message(p):
    ok(p, "tenant", "add", "acme")
    assert p.ctl_json("queue", "list") == []
    human = ok(p, "queue", "list").stdout
    assert re.search(r"^ID\s+TENANT\s+SENDER\s+RCPTS\s+SIZE\s+AGE\s+NEXT",
                     human, re.M)
    fails(p, "message", "show", "AAAAAAAAAAAAAA", msg="no such message")
    fails(p, "message", "show", "AAAAAAAAAAAAAA", "--json",
          msg="no such message")
    fails(p, "message", "show", "short", msg="invalid queue id")
    fails(p, "message", "show", "AAAAAAAAAAAA/1", msg="invalid queue id")
    fails(p, "message", "show", "0000000000000Z", msg="no such message")
    fails(p, "message", "show", status=2)


# ------------------------------------------------------------- live daemon

def _petreld_ready():
    """_petreld_ready - the placeholder petreld exits 0 on anything; the
    real one refuses a missing configuration"""
    try:
        r = subprocess.run([pf.petreld_path(), "-c", "/nonexistent/p.conf"],
                           capture_output=True, timeout=10)
    except OSError:
        return False
    return r.returncode != 0


needs_petreld = pytest.mark.skipif(not _petreld_ready(),
                                   reason="petreld not implemented yet")


def _login(p, user, password):
    """_login - AUTH on the implicit-TLS submission port; True on 235"""
    ctx = ssl.create_default_context(cafile=p.certs["ca"])
    with smtplib.SMTP_SSL("127.0.0.1", p.ports["submissions"], context=ctx,
                          timeout=10) as s:
        s.ehlo("client.test")
        try:
            s.login(user, password)
            return True
        except smtplib.SMTPAuthenticationError:
            return False


@needs_petreld
def test_running_daemon_sees_changes(petrel):
    # made while petreld runs; no restart, no SIGHUP
    info = petrel.setup_tenant("acme", user="app", password="live-pw-1")
    assert _login(petrel, "app", "live-pw-1")
    assert not _login(petrel, "app", "wrong-pw")
    petrel.ctl("user", "add", "acme", "app2", input="live-pw-2\r\n")
    assert _login(petrel, "app2", "live-pw-2")   # CRLF was stripped
    petrel.ctl("user", "del", "acme", "app")
    assert not _login(petrel, "app", "live-pw-1")

    # a domain added now is usable at once; deleting it refuses it again
    ctx = ssl.create_default_context(cafile=petrel.certs["ca"])
    with smtplib.SMTP_SSL("127.0.0.1", petrel.ports["submissions"],
                          context=ctx, timeout=10) as s:
        s.login("app2", "live-pw-2")
        code, _ = s.mail("someone@" + info["domain"])
        assert code == 250
        s.rset()
        petrel.ctl("domain", "del", info["domain"])
        code, _ = s.mail("someone@" + info["domain"])
        assert 500 <= code < 600


@needs_petreld
def test_queue_list_and_message_show_live(petrel_factory):
    # a resolver nobody answers on: the message stays in the queue
    p = petrel_factory({"resolver": "127.0.0.1:%d" % pf.free_port()})
    info = p.setup_tenant("acme", user="app", password="live-pw-1")
    sender = "alice@" + info["domain"]
    ctx = ssl.create_default_context(cafile=p.certs["ca"])
    with smtplib.SMTP_SSL("127.0.0.1", p.ports["submissions"], context=ctx,
                          timeout=10) as s:
        s.login("app", "live-pw-1")
        s.sendmail(sender, ["bob@example.net", "carol@example.org"],
                   "From: %s\r\nTo: bob@example.net\r\nSubject: q\r\n"
                   "Message-ID: <q1@test>\r\n\r\nhello\r\n" % sender)
    lst = p.ctl_json("queue", "list")
    mine = [m for m in lst if m["mail_from"] == sender]
    assert len(mine) == 1, lst
    m = mine[0]
    assert m["tenant"] == "acme" and m["nrcpts"] == 2 and m["size"] > 0
    assert re.fullmatch(r"[0-9A-Z]{14}", m["id"])
    human = p.ctl("queue", "list").stdout
    assert re.search(r"^%s\s+acme\s+%s\s+2\s" % (m["id"], re.escape(sender)),
                     human, re.M), human
    shown = p.ctl_json("message", "show", m["id"])
    assert shown["id"] == m["id"]
    assert sorted(r["address"] for r in shown["recipients"]) == \
        ["bob@example.net", "carol@example.org"]
    human = p.ctl("message", "show", m["id"].lower()).stdout
    assert "bob@example.net" in human and "carol@example.org" in human
