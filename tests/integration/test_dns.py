"""test_dns - the dns module (src/dns.c) against a real unbound on loopback,
driven through tests/unit/dns_probe: MX order and shuffle, implicit MX,
null MX, NXDOMAIN, REFUSED/timeout -> TEMPFAIL, IPv6, TXT joining, limits,
cancellation. No petreld involved.
"""

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import petrel_fixtures as pf  # noqa: E402

SANITIZER_MARKS = ("AddressSanitizer", "runtime error", "LeakSanitizer")

LONG_TXT = "v=DKIM1; k=rsa; p=" + "A" * 400    # > 255: several strings

RECORDS = [
    # preference order, two hosts sharing a preference
    ("example.test.", "MX", "20 mx2a.example.test."),
    ("example.test.", "MX", "10 mx1.example.test."),
    ("example.test.", "MX", "20 mx2b.example.test."),
    ("example.test.", "MX", "30 mx3.example.test."),
    ("mx1.example.test.", "A", "127.0.0.11"),
    ("mx1.example.test.", "AAAA", "2001:db8::11"),
    ("mx2a.example.test.", "A", "127.0.0.21"),
    ("mx2b.example.test.", "A", "127.0.0.22"),
    ("mx3.example.test.", "AAAA", "2001:db8::3"),
    # TTLs: the MX 300 s, one host's A 7 s, the other's 40 s
    ("ttlmix.test.", "MX", "10 mxa.ttlmix.test.", 300),
    ("ttlmix.test.", "MX", "20 mxb.ttlmix.test.", 300),
    ("mxa.ttlmix.test.", "A", "127.0.0.31", 40),
    ("mxb.ttlmix.test.", "A", "127.0.0.32", 7),
    # implicit MX
    ("aonly.test.", "A", "127.0.0.5"),
    ("v6only.test.", "AAAA", "2001:db8::6"),
    ("txtonly.test.", "TXT", "no mail here"),
    # RFC 7505 null MX, and a null MX mixed with a real host
    ("nullmx.test.", "MX", "0 ."),
    ("mixednull.test.", "MX", "0 ."),
    ("mixednull.test.", "MX", "10 mx1.example.test."),
    # hosts without addresses, or temporarily failing
    ("someok.test.", "MX", "10 missing.example.test."),
    ("someok.test.", "MX", "20 mx1.example.test."),
    ("nonehost.test.", "MX", "10 missing.example.test."),
    ("nonehost.test.", "MX", "20 alsomissing.example.test."),
    ("halfbroken.test.", "MX", "10 mx.broken.test."),
    ("halfbroken.test.", "MX", "20 mx2a.example.test."),
    ("allbroken.test.", "MX", "10 mx.broken.test."),
    ("allbroken.test.", "MX", "20 mx2.broken.test."),
    ("slowhost.test.", "MX", "10 mx.slow.test."),
    ("slowhost.test.", "MX", "20 mx2b.example.test."),
    # an MX target written as an IP address is not an address literal
    ("iplit.test.", "MX", "10 127.0.0.9."),
    ("iplit2.test.", "MX", "10 127.0.0.9."),
    ("iplit2.test.", "MX", "20 mx1.example.test."),
    # the same host twice: listed once, at its lowest preference
    ("dup.test.", "MX", "30 mx1.example.test."),
    ("dup.test.", "MX", "5 mx1.example.test."),
    # CNAMEs followed by the resolver
    ("alias.test.", "CNAME", "example.test."),
    ("cnamehost.test.", "MX", "10 mxalias.example.test."),
    ("mxalias.example.test.", "CNAME", "mx2a.example.test."),
    # TXT: several strings in one record are joined; records stay apart
    ("txt.test.", "TXT", '"v=spf1 " "ip4:192.0.2.0/24 " "-all"'),
    ("txt.test.", "TXT", '"second record"'),
    ("long.test.", "TXT", LONG_TXT),
    ("_dmarc.under.test.", "TXT", "v=DMARC1; p=none"),
]

# limits: more hosts and addresses than DNS_MX_HOSTS_MAX (16) and
# DNS_HOST_ADDRS_MAX (16)
for _i in range(20):
    RECORDS.append(("many.test.", "MX", "%d h%02d.many.test." % (_i, _i)))
    RECORDS.append(("h%02d.many.test." % _i, "A", "127.0.1.%d" % (_i + 1)))
    RECORDS.append(("bighost.test.", "A", "127.0.2.%d" % (_i + 1)))
for _i in range(3):
    RECORDS.append(("bighost.test.", "AAAA", "2001:db8::%x" % (0x100 + _i)))


class RefusingUnbound(pf.Unbound):
    """RefusingUnbound - the fixture's unbound, plus zones answered with
    REFUSED (a server that will not help us: defer, never bounce) and
    slow.test forwarded to a server that never answers (hole_port)"""

    REFUSE = ("broken.test.",)

    def __init__(self, workdir, records, hole_port):
        self.hole_port = hole_port
        super().__init__(workdir, records)

    def _write_conf(self):
        super()._write_conf()
        text = self.conf_path.read_text()
        extra = "".join('  local-zone: "%s" always_refuse\n' % z
                        for z in self.REFUSE)
        extra += '  local-zone: "slow.test." transparent\n'
        text = text.replace("server:\n", "server:\n" + extra, 1)
        text += ("forward-zone:\n  name: \"slow.test.\"\n"
                 "  forward-addr: 127.0.0.1@%d\n" % self.hole_port)
        self.conf_path.write_text(text)


@pytest.fixture(scope="module")
def probe_path():
    p = pf.build_dir() / "tests" / "unit" / "dns_probe"
    if not p.exists():
        # a check program: built by "make check", or on demand here
        subprocess.run(["make", "-C", str(pf.build_dir()), "-s",
                        "tests/unit/dns_probe"], capture_output=True)
    assert p.exists(), "%s missing (make check builds it)" % p
    return str(p)


@pytest.fixture(scope="module")
def ub():
    d = Path(tempfile.mkdtemp(prefix="petrel-dns-"))
    # a UDP socket nobody reads: queries to it are never answered
    hole = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    hole.bind(("127.0.0.1", 0))
    u = RefusingUnbound(d, RECORDS, hole.getsockname()[1])
    yield u
    u.stop()
    hole.close()
    shutil.rmtree(d, ignore_errors=True)


def run_probe(probe, resolver, *args, timeout_ms=None, expect_rc=0):
    """run_probe - dns_probe's stdout; fails on sanitizer reports"""
    cmd = [probe]
    if timeout_ms is not None:
        cmd += ["-t", str(timeout_ms)]
    cmd += [resolver] + list(args)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    for mark in SANITIZER_MARKS:
        assert mark not in r.stderr, r.stderr
    assert r.returncode == expect_rc, (cmd, r.returncode, r.stdout, r.stderr)
    return r.stdout


def parse(out):
    """parse - dns_probe output -> (status, error, implicit, hosts, txts)
    with hosts as [(pref, name, [addr...], tempfail)]"""
    status = error = None
    implicit = False
    hosts, txts = [], []
    for line in out.splitlines():
        if line.startswith("status "):
            status = line.split(" ", 1)[1]
        elif line.startswith("error "):
            error = line.split(" ", 1)[1]
        elif line == "implicit":
            implicit = True
        elif line.startswith("ttl "):
            pass                    # see test_mx_ttl_is_the_smallest
        elif line.startswith("txt "):
            txts.append(line[4:])
        elif line.strip():
            f = line.split()
            addrs = [] if f[2] == "-" else f[2].split(",")
            hosts.append((int(f[0]), f[1], addrs, "tempfail" in f[3:]))
    return status, error, implicit, hosts, txts


def mx(probe, ub, domain, **kw):
    return parse(run_probe(probe, ub.addr, "mx", domain, **kw))


def test_mx_preference_order(probe_path, ub):
    st, err, implicit, hosts, _ = mx(probe_path, ub, "example.test")
    assert st == "OK" and err is None and not implicit
    assert [h[0] for h in hosts] == [10, 20, 20, 30]
    assert hosts[0][1] == "mx1.example.test"
    assert {hosts[1][1], hosts[2][1]} == {"mx2a.example.test",
                                          "mx2b.example.test"}
    assert hosts[3][1] == "mx3.example.test"
    # IPv4 first, then IPv6; port-less text
    assert hosts[0][2] == ["127.0.0.11", "2001:db8::11"]
    assert hosts[3][2] == ["2001:db8::3"]
    assert not any(h[3] for h in hosts)


def test_mx_equal_preferences_random(probe_path, ub):
    seen = set()
    for _ in range(40):
        _, _, _, hosts, _ = mx(probe_path, ub, "example.test")
        # the order among preference 20 varies; the rest never does
        assert hosts[0][1] == "mx1.example.test"
        assert hosts[3][1] == "mx3.example.test"
        seen.add((hosts[1][1], hosts[2][1]))
        if len(seen) == 2:
            break
    assert seen == {("mx2a.example.test", "mx2b.example.test"),
                    ("mx2b.example.test", "mx2a.example.test")}


def test_mx_ttl_is_the_smallest(probe_path, ub):
    """the result may be kept as long as its shortest-lived record"""
    out = run_probe(probe_path, ub.addr, "mx", "ttlmix.test")
    assert parse(out)[0] == "OK"
    assert "\nttl 7\n" in out, out
    out = run_probe(probe_path, ub.addr, "mx", "aonly.test")     # implicit
    assert "\nttl 60\n" in out, out


def test_mx_case_and_trailing_dot(probe_path, ub):
    st, _, _, hosts, _ = mx(probe_path, ub, "EXAMPLE.Test.")
    assert st == "OK"
    assert hosts[0][1] == "mx1.example.test"


@pytest.mark.parametrize("domain,addrs", [
    ("aonly.test", ["127.0.0.5"]),
    ("v6only.test", ["2001:db8::6"]),
])
def test_implicit_mx(probe_path, ub, domain, addrs):
    st, err, implicit, hosts, _ = mx(probe_path, ub, domain)
    assert st == "OK" and implicit
    assert hosts == [(0, domain, addrs, False)]


def test_no_mx_no_address_is_nodata(probe_path, ub):
    st, err, implicit, hosts, _ = mx(probe_path, ub, "txtonly.test")
    assert st == "NODATA" and hosts == []
    assert "no MX" in err


def test_null_mx(probe_path, ub):
    st, err, _, hosts, _ = mx(probe_path, ub, "nullmx.test")
    assert st == "NULLMX" and hosts == []
    assert "null MX" in err


def test_null_mx_mixed_with_hosts_is_ignored(probe_path, ub):
    st, _, _, hosts, _ = mx(probe_path, ub, "mixednull.test")
    assert st == "OK"
    assert [(h[0], h[1]) for h in hosts] == [(10, "mx1.example.test")]


def test_nxdomain(probe_path, ub):
    st, err, _, hosts, _ = mx(probe_path, ub, "nosuchdomain.test")
    assert st == "NXDOMAIN" and hosts == []


def test_invalid_domain_name(probe_path, ub):
    st, err, _, _, _ = mx(probe_path, ub, "bad name..test")
    assert st == "NXDOMAIN" and err == "invalid domain name"


def test_refused_is_tempfail(probe_path, ub):
    for name in ("broken.test", "sub.broken.test"):
        st, err, _, hosts, _ = mx(probe_path, ub, name, timeout_ms=10000)
        assert st == "TEMPFAIL", (name, err)
        assert hosts == []


def test_host_without_address_is_skipped(probe_path, ub):
    st, _, _, hosts, _ = mx(probe_path, ub, "someok.test")
    assert st == "OK"
    assert [(h[0], h[1]) for h in hosts] == [(20, "mx1.example.test")]


def test_no_usable_mx_host(probe_path, ub):
    st, err, _, hosts, _ = mx(probe_path, ub, "nonehost.test")
    assert st == "NODATA" and err == "no usable MX host" and hosts == []


def test_host_tempfail_is_kept(probe_path, ub):
    st, _, _, hosts, _ = mx(probe_path, ub, "halfbroken.test",
                            timeout_ms=10000)
    assert st == "OK"
    assert hosts[0] == (10, "mx.broken.test", [], True)
    assert hosts[1] == (20, "mx2a.example.test", ["127.0.0.21"], False)


def test_host_timeout_keeps_answered_hosts(probe_path, ub):
    """the deadline passes while one host's lookups hang: the hosts
    resolved so far are delivered, the hanging one marked tempfail"""
    t0 = time.monotonic()
    st, _, _, hosts, _ = mx(probe_path, ub, "slowhost.test",
                            timeout_ms=1000)
    assert time.monotonic() - t0 < 10
    assert st == "OK"
    assert hosts == [(10, "mx.slow.test", [], True),
                     (20, "mx2b.example.test", ["127.0.0.22"], False)]
    st, err, _, hosts, _ = parse(run_probe(probe_path, ub.addr, "a",
                                           "mx.slow.test", timeout_ms=500))
    assert st == "TEMPFAIL" and hosts == []


def test_all_hosts_tempfail(probe_path, ub):
    st, err, _, hosts, _ = mx(probe_path, ub, "allbroken.test",
                              timeout_ms=10000)
    assert st == "TEMPFAIL" and hosts == []


def test_mx_ip_literal_target(probe_path, ub):
    st, err, _, hosts, _ = mx(probe_path, ub, "iplit.test")
    assert st == "NODATA" and err == "no usable MX host"
    st, _, _, hosts, _ = mx(probe_path, ub, "iplit2.test")
    assert st == "OK"
    assert [(h[0], h[1]) for h in hosts] == [(20, "mx1.example.test")]


def test_duplicate_mx_host(probe_path, ub):
    st, _, _, hosts, _ = mx(probe_path, ub, "dup.test")
    assert st == "OK"
    assert [(h[0], h[1]) for h in hosts] == [(5, "mx1.example.test")]


def test_cname_followed(probe_path, ub):
    # the domain is an alias: its target's MX set
    st, _, _, hosts, _ = mx(probe_path, ub, "alias.test")
    assert st == "OK"
    assert [h[0] for h in hosts] == [10, 20, 20, 30]
    # an MX host that is an alias: its target's addresses
    st, _, _, hosts, _ = mx(probe_path, ub, "cnamehost.test")
    assert st == "OK"
    assert hosts == [(10, "mxalias.example.test", ["127.0.0.21"], False)]


def test_limits(probe_path, ub):
    st, _, _, hosts, _ = mx(probe_path, ub, "many.test")
    assert st == "OK"
    assert [h[0] for h in hosts] == list(range(16))
    assert [h[1] for h in hosts] == ["h%02d.many.test" % i for i in range(16)]
    out = run_probe(probe_path, ub.addr, "a", "bighost.test")
    st, _, _, hosts, _ = parse(out)
    assert st == "OK" and len(hosts) == 1
    addrs = hosts[0][2]
    # 16 at most, and the 3 IPv6 addresses keep their place
    assert len(addrs) == 16
    assert sum(1 for a in addrs if ":" in a) == 3
    assert len(set(addrs)) == 16


def test_a_lookup(probe_path, ub):
    st, _, _, hosts, _ = parse(run_probe(probe_path, ub.addr, "a",
                                         "mx1.example.test"))
    assert st == "OK"
    assert hosts == [(0, "mx1.example.test", ["127.0.0.11", "2001:db8::11"],
                      False)]
    st, _, _, hosts, _ = parse(run_probe(probe_path, ub.addr, "a",
                                         "missing.example.test"))
    assert st == "NXDOMAIN" and hosts == []
    st, _, _, hosts, _ = parse(run_probe(probe_path, ub.addr, "a",
                                         "txtonly.test"))
    assert st == "NODATA"


def test_txt_joined(probe_path, ub):
    st, err, _, _, txts = parse(run_probe(probe_path, ub.addr, "txt",
                                          "txt.test"))
    assert st == "OK" and err is None
    assert sorted(txts) == sorted(['"v=spf1 ip4:192.0.2.0/24 -all"',
                                   '"second record"'])
    st, _, _, _, txts = parse(run_probe(probe_path, ub.addr, "txt",
                                        "long.test"))
    assert st == "OK"
    assert txts == ['"%s"' % LONG_TXT]
    st, _, _, _, txts = parse(run_probe(probe_path, ub.addr, "txt",
                                        "_dmarc.under.test"))
    assert st == "OK" and txts == ['"v=DMARC1; p=none"']


def test_txt_statuses(probe_path, ub):
    assert parse(run_probe(probe_path, ub.addr, "txt",
                           "nosuch.test"))[0] == "NXDOMAIN"
    assert parse(run_probe(probe_path, ub.addr, "txt",
                           "aonly.test"))[0] == "NODATA"
    assert parse(run_probe(probe_path, ub.addr, "txt", "broken.test",
                           timeout_ms=10000))[0] == "TEMPFAIL"


def test_test_tld_resolves(probe_path, ub):
    # libunbound's built-in empty zone for .test would say NXDOMAIN
    # without asking: the resolver must be asked
    st, _, _, hosts, _ = parse(run_probe(probe_path, ub.addr, "a",
                                         "aonly.test"))
    assert st == "OK" and hosts[0][2] == ["127.0.0.5"]


def test_timeout_is_tempfail(probe_path):
    """a resolver that never answers: TEMPFAIL after the deadline"""
    probe = probe_path
    hole = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    hole.bind(("127.0.0.1", 0))
    try:
        addr = "127.0.0.1:%d" % hole.getsockname()[1]
        t0 = time.monotonic()
        st, err, _, hosts, _ = parse(run_probe(probe, addr, "mx",
                                               "example.test",
                                               timeout_ms=800))
        elapsed = time.monotonic() - t0
        assert st == "TEMPFAIL" and err == "timeout" and hosts == []
        assert 0.7 < elapsed < 10, elapsed
        st, err, _, _, _ = parse(run_probe(probe, addr, "txt", "x.test",
                                           timeout_ms=500))
        assert st == "TEMPFAIL" and err == "timeout"
    finally:
        hole.close()


def test_closed_port_is_tempfail(probe_path):
    addr = "127.0.0.1:%d" % pf.free_port()
    st, _, _, hosts, _ = parse(run_probe(probe_path, addr, "mx",
                                         "example.test", timeout_ms=3000))
    assert st == "TEMPFAIL" and hosts == []


def test_cancel(probe_path, ub):
    out = run_probe(probe_path, ub.addr, "cancel", "example.test")
    assert "FAIL" not in out
    assert "status OK" in out
    assert "cancel OK" in out


def test_free_with_pending_requests(probe_path, ub):
    assert run_probe(probe_path, ub.addr, "free",
                     "example.test").strip() == "free OK"


def test_system_resolver_mode(probe_path):
    """no resolver given: resolv.conf + hosts; localhost is answered
    locally (hosts file / built-in zone), nothing leaves the host"""
    st, _, _, hosts, _ = parse(run_probe(probe_path, "-", "a", "localhost",
                                         timeout_ms=5000))
    assert st == "OK"
    assert "127.0.0.1" in hosts[0][2]


def test_bad_resolver_argument(probe_path):
    for bad in ("not-an-ip", "127.0.0.1:0", "127.0.0.1:99999", "[::1"):
        r = subprocess.run([probe_path, bad, "mx", "example.test"],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 2, (bad, r.stdout, r.stderr)
        assert "resolver" in r.stderr


def _wire(*labels):
    out = b""
    for lab in labels:
        out += bytes([len(lab)]) + lab
    return out + b"\0"


MX_VECTORS = [
    (b"\x00\x0a" + _wire(b"mx1", b"Example", b"COM"), "mx 10 mx1.example.com"),
    (b"\xff\xff" + _wire(b"a_b-c"), "mx 65535 a_b-c"),
    (b"\x00\x00\x00", "mx 0 ."),
    (b"\x00\x0a\x03mx1\xc0\x0c", "malformed"),          # compression
    (b"\x00\x0a\x05ab\x00", "malformed"),                # label past end
    (b"\x00\x0a\x03abc", "malformed"),                   # no terminator
    (b"\x00\x0a\x00\xff", "malformed"),                  # trailing bytes
    (b"\x00\x00", "malformed"),                          # no name
    (b"", "malformed"),
    (b"\x00\x0a" + _wire(b"a.b"), "malformed"),          # dot in a label
    (b"\x00\x0a" + _wire(b"a b"), "malformed"),          # space
    (b"\x00\x0a" + _wire(b"a" * 64), "malformed"),       # label > 63
    (b"\x00\x01" + _wire(b"a" * 63), "mx 1 " + "a" * 63),
    (b"\x00\x01" + _wire(*[b"b" * 63] * 4), "malformed"),  # wire > 255
    (b"\x00\x01" + _wire(*([b"c" * 63] * 3 + [b"d" * 61])),
     "mx 1 " + ".".join(["c" * 63] * 3 + ["d" * 61])),    # exactly 255
]

TXT_VECTORS = [
    (b"\x05hello\x03abc", 'txt "helloabc"'),
    (b"\x00", 'txt ""'),
    (b"\x03a\x00b", 'txt "a\\000b"'),
    (b"", "malformed"),
    (b"\x05abc", "malformed"),
    (b"\x01a\xff", "malformed"),
    (b"\xff" + b"x" * 255 + b"\x02yz", 'txt "%s"' % ("x" * 255 + "yz")),
]


@pytest.mark.parametrize("rdata,want", MX_VECTORS)
def test_parse_mx_rdata(probe_path, rdata, want):
    assert run_probe(probe_path, "-", "parse-mx",
                     rdata.hex()).strip() == want


@pytest.mark.parametrize("rdata,want", TXT_VECTORS)
def test_parse_txt_rdata(probe_path, rdata, want):
    assert run_probe(probe_path, "-", "parse-txt",
                     rdata.hex()).strip() == want
