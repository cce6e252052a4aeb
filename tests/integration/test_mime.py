"""test_mime - the MIME builder (src/mime.c) driven through
tests/unit/mime_probe: ACS EmailMessage JSON in, message out, parsed back
with Python's email package (policy.default): subjects and display names
(non-ASCII), plain and html bodies, attachment bytes, inline images by
cid:, Bcc kept out of the header but in the recipients, RFC 2231 file
names, line rules (CRLF, <= 998 octets), and the validation errors with
their JSON targets. No petreld involved.
"""

import base64
import email
import email.policy
import json
import os
import random
import re
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import petrel_fixtures as pf  # noqa: E402

SANITIZER_MARKS = ("AddressSanitizer", "runtime error", "LeakSanitizer")
SENDER = "DoNotReply@Example.COM"


@pytest.fixture(scope="module")
def probe():
    p = pf.build_dir() / "tests" / "unit" / "mime_probe"
    if not p.exists():
        # a check program: built by "make check", or on demand here
        subprocess.run(["make", "-C", str(pf.build_dir()), "-s",
                        "tests/unit/mime_probe"], capture_output=True)
    assert p.exists(), "%s missing (make check builds it)" % p
    return str(p)


def run(probe, msg, *args):
    """run - (rc, stdout bytes, stderr JSON or None); fails on sanitizer
    reports"""
    data = msg if isinstance(msg, bytes) else json.dumps(msg).encode()
    r = subprocess.run([probe] + list(args), input=data, capture_output=True,
                       timeout=120)
    err = r.stderr.decode("utf-8", "replace")
    for mark in SANITIZER_MARKS:
        assert mark not in err, err
    info = json.loads(err.strip().splitlines()[-1]) if err.strip() else None
    return r.returncode, r.stdout, info


def build(probe, msg, *args):
    """build - the parsed message and the info JSON of a valid request"""
    rc, out, info = run(probe, msg, *args)
    assert rc == 0, info
    check_lines(out)
    assert info["info"]["size"] == len(out)
    m = email.message_from_bytes(out, policy=email.policy.default)
    for part in m.walk():
        assert not part.defects, (part.get_content_type(), part.defects)
    return m, out, info["info"]


def build_error(probe, msg, *args):
    rc, out, info = run(probe, msg, *args)
    assert rc == 1, (rc, out[:200])
    assert out == b""
    return info


def check_lines(raw):
    """check_lines - CRLF line ends only, every line <= 998 octets, no NUL,
    header lines holding encoded words <= 76"""
    assert raw.endswith(b"\r\n")
    assert b"\0" not in raw
    lines = raw.split(b"\r\n")
    for ln in lines[:-1]:
        assert b"\r" not in ln and b"\n" not in ln, ln[:80]
        assert len(ln) <= 998, len(ln)
    head = raw.split(b"\r\n\r\n", 1)[0]
    for ln in head.split(b"\r\n"):
        if b"=?" in ln:
            assert len(ln) <= 76, ln
        assert max(head) < 0x80        # the header section is ASCII


def base_msg(**kw):
    m = {
        "senderAddress": SENDER,
        "content": {"subject": "Hello", "plainText": "plain body"},
        "recipients": {"to": [{"address": "to@example.org"}]},
    }
    m.update(kw)
    return m


def text_of(part):
    """text_of - decoded text of a part, line ends as LF"""
    return part.get_content().replace("\r\n", "\n")


def test_full_roundtrip(probe):
    """every feature at once: the sink's view of an SDK message"""
    rnd = random.Random(7)
    blob = bytes(rnd.getrandbits(8) for _ in range(100 * 1024))
    png = bytes(rnd.getrandbits(8) for _ in range(3000))
    subject = ("Réunion d'équipe — 会議のお知らせ 🚀 with a long tail of "
               "words to make the encoded words fold over several lines")
    plain = ("Bonjour à tous,\n\nLigne avec espace final \n"
             "= signe égal, et une très longue ligne " + "x" * 300 + "\n"
             "From the start of a line\n.\n")
    html = ("<html><body><p>Héllo <b>wörld</b></p>"
            "<img src=\"cid:logo-1@petrel\"></body></html>")
    msg = base_msg(
        content={"subject": subject, "plainText": plain, "html": html},
        recipients={
            "to": [{"address": "alice@example.org",
                    "displayName": "Alice Müller"},
                   {"address": "bob@bücher.example",
                    "displayName": "Smith, Bob \"The Builder\""}],
            "cc": [{"address": "carol@example.org",
                    "displayName": "キャロル"}],
            "bcc": [{"address": "secret@example.net",
                     "displayName": "Hidden Person"},
                    {"address": "ALICE@example.org"}],
        },
        replyTo=[{"address": "support@example.com",
                  "displayName": "Support Desk"}],
        attachments=[
            {"name": "données 2024 ✓.bin",
             "contentType": "application/octet-stream",
             "contentInBase64": base64.b64encode(blob).decode()},
            {"name": "logo.png", "contentType": "image/png",
             "contentInBase64": base64.b64encode(png).decode(),
             "contentId": "logo-1@petrel"},
        ],
        headers={"X-Campaign": "printemps été", "X-Plain": "v1"},
        userEngagementTrackingDisabled=True,
    )
    m, raw, info = build(probe, msg, "-h", "mta.example.net")

    assert m["subject"] == subject
    assert m["from"].addresses[0].addr_spec == "DoNotReply@example.com"
    to = m["to"].addresses
    assert [(a.display_name, a.addr_spec) for a in to] == [
        ("Alice Müller", "alice@example.org"),
        ("Smith, Bob \"The Builder\"", "bob@xn--bcher-kva.example")]
    assert m["cc"].addresses[0].display_name == "キャロル"
    assert m["reply-to"].addresses[0].display_name == "Support Desk"
    assert m["x-campaign"] == "printemps été"
    assert m["x-plain"] == "v1"
    assert m["mime-version"] == "1.0"
    assert m["date"].datetime is not None
    assert re.fullmatch(r"<[a-z2-7]+@mta\.example\.net>", m["message-id"])
    assert m["message-id"] == info["message_id"]

    # Bcc: in the envelope, never in the message
    assert "bcc" not in m
    assert b"secret" not in raw and b"Hidden" not in raw
    assert info["recipients"] == ["alice@example.org",
                                  "bob@xn--bcher-kva.example",
                                  "carol@example.org",
                                  "secret@example.net"]
    assert info["sender"] == "DoNotReply@example.com"
    assert info["sender_domain"] == "example.com"
    assert info["header_from"] == "DoNotReply@example.com"
    assert info["tracking_disabled"] is True

    # structure: mixed(related(alternative(plain, html), png), bin)
    assert m.get_content_type() == "multipart/mixed"
    top = list(m.iter_parts())
    assert [p.get_content_type() for p in top] == [
        "multipart/related", "application/octet-stream"]
    rel = list(top[0].iter_parts())
    assert [p.get_content_type() for p in rel] == [
        "multipart/alternative", "image/png"]
    assert [p.get_content_type() for p in rel[0].iter_parts()] == [
        "text/plain", "text/html"]

    assert text_of(m.get_body(("plain",))) == plain
    assert text_of(m.get_body(("html",))) == html

    att = top[1]
    assert att.get_content_disposition() == "attachment"
    assert att.get_filename() == "données 2024 ✓.bin"
    assert att.get_param("name") == "données 2024 ✓.bin"
    assert att.get_content() == blob

    img = rel[1]
    assert img.get_content_disposition() == "inline"
    assert img["content-id"] == "<logo-1@petrel>"
    assert img.get_content() == png
    # the html references the inline part by its Content-ID
    cid = img["content-id"].strip("<>")
    assert ("cid:" + cid) in text_of(m.get_body(("html",)))
    assert rel[0] is not None and top[0].get_param("type") == \
        "multipart/alternative"


@pytest.mark.parametrize("content,atts,shape", [
    ({"plainText": "p"}, [], "text/plain"),
    ({"html": "<i>h</i>"}, [], "text/html"),
    ({"plainText": "p", "html": "<i>h</i>"}, [],
     "multipart/alternative(text/plain,text/html)"),
    ({"html": "<img src=cid:a>"}, ["inline"],
     "multipart/related(text/html,image/gif)"),
    ({"plainText": "p"}, ["file"],
     "multipart/mixed(text/plain,application/pdf)"),
    ({"plainText": "p", "html": "h"}, ["file", "file"],
     "multipart/mixed(multipart/alternative(text/plain,text/html),"
     "application/pdf,application/pdf)"),
    ({"plainText": "p", "html": "<img src=cid:a>"}, ["inline", "file"],
     "multipart/mixed(multipart/related(multipart/alternative(text/plain,"
     "text/html),image/gif),application/pdf)"),
])
def test_shapes(probe, content, atts, shape):
    gif = b"GIF89a\x01\x00\x01\x00\x00\x00\x00;"
    att = []
    for i, kind in enumerate(atts):
        a = {"name": "f%d" % i, "contentType": "application/pdf",
             "contentInBase64": base64.b64encode(b"%%PDF-1.4 %d" % i)
             .decode()}
        if kind == "inline":
            a.update(contentType="image/gif", contentId="a",
                     contentInBase64=base64.b64encode(gif).decode())
        att.append(a)
    c = {"subject": "s"}
    c.update(content)
    m, _, _ = build(probe, base_msg(content=c, attachments=att))

    def tree(p):
        if p.is_multipart():
            return "%s(%s)" % (p.get_content_type(),
                               ",".join(tree(x) for x in p.iter_parts()))
        return p.get_content_type()
    assert tree(m) == shape
    if "plainText" in content:
        assert text_of(m.get_body(("plain",))).rstrip("\n") == \
            content["plainText"]
    if "html" in content:
        assert text_of(m.get_body(("html",))).rstrip("\n") == \
            content["html"]


def test_random_names_roundtrip(probe):
    """random subjects and display names mixing scripts, specials and
    encoded-word look-alikes come back unchanged"""
    rnd = random.Random(2024)
    alphabet = (list("abcXYZ019 ,.;:<>@\"\\()[]=?_-'!#") +
                list("éüßøœ€—“”") + list("日本語中文한국어") +
                ["🚀", "👍🏽", "=?", "?="])
    for _ in range(25):
        def rs(n):
            s = "".join(rnd.choice(alphabet) for _ in range(n))
            return " ".join(s.split())      # no double/edge spaces
        subject = rs(rnd.randint(1, 200)) or "x"
        # a display name whose non-ASCII run needs several encoded words
        # reads back with extra spaces in Python's address parser (it
        # keeps the white space between adjacent encoded words, which RFC
        # 2047 6.2 says to drop): stay within one word's 45 bytes
        names = []
        while len(names) < 3:
            n = rs(rnd.randint(1, 40))
            if n and len(n.encode()) <= 45:
                names.append(n)
        msg = base_msg(
            content={"subject": subject, "plainText": rs(300)},
            recipients={"to": [{"address": "u%d@example.org" % i,
                                "displayName": n}
                               for i, n in enumerate(names)]})
        m, _, _ = build(probe, msg)
        assert m["subject"] == subject
        got = [a.display_name for a in m["to"].addresses]
        assert got == names
        assert [a.addr_spec for a in m["to"].addresses] == \
            ["u%d@example.org" % i for i in range(3)]


def test_long_lines_and_qp(probe):
    """a 5000-character line without spaces, lines of dots and boundary
    look-alikes: still <= 998 octets and identical after decoding"""
    plain = "A" * 5000 + "\n--=_x\n.\n..\n" + "é" * 2000
    html = "<p>" + "word " * 2000 + "</p>"
    m, raw, _ = build(probe, base_msg(
        content={"subject": "long", "plainText": plain, "html": html}))
    assert text_of(m.get_body(("plain",))) == plain
    assert text_of(m.get_body(("html",))) == html
    assert b"quoted-printable" in raw


def test_seven_bit_text_stays_readable(probe):
    m, raw, _ = build(probe, base_msg(
        content={"subject": "s", "plainText": "short ascii\nlines\n"}))
    assert b"Content-Transfer-Encoding: 7bit\r\n\r\nshort ascii\r\nlines" \
        in raw
    assert m.get_content_type() == "text/plain"
    assert m.get_content_charset() == "utf-8"


def test_long_filename_rfc2231(probe):
    name = "Quarterly report — Überblick über alle Geschäftsbereiche " \
           "und Tochtergesellschaften (vertraulich) 日本語.pdf"
    m, raw, _ = build(probe, base_msg(attachments=[{
        "name": name, "contentType": "application/pdf",
        "contentInBase64": base64.b64encode(b"%PDF").decode()}]))
    att = [p for p in m.walk() if p.get_content_disposition()][0]
    assert att.get_filename() == name
    assert b"filename*0*=utf-8''" in raw
    assert b"filename*1*=" in raw


def test_empty_attachment_and_header_folding(probe):
    """a zero-byte attachment, and a custom header long enough to fold"""
    value = " ".join("token%d" % i for i in range(100))
    m, raw, _ = build(probe, base_msg(
        headers={"X-Long": value},
        attachments=[{"name": "empty.txt", "contentType": "text/plain",
                      "contentInBase64": ""}]))
    assert m["x-long"] == value
    assert b"\r\n token" in raw.split(b"\r\n\r\n")[0]
    att = [p for p in m.walk() if p.get_content_disposition()][0]
    assert att.get_content() in ("", b"")


def test_recipient_limit(probe):
    def rc(n):
        return base_msg(recipients={
            "to": [{"address": "t%d@example.org" % i} for i in range(n)]})
    _, _, info = build(probe, rc(50))
    assert len(info["recipients"]) == 50
    err = build_error(probe, rc(51))
    assert err["error"]["code"] == "BadRequest"
    assert err["error"]["target"] == "recipients.to"
    # the limit counts to + cc + bcc together
    msg = rc(30)
    msg["recipients"]["cc"] = [{"address": "c%d@example.org" % i}
                               for i in range(20)]
    build(probe, msg)
    msg["recipients"]["bcc"] = [{"address": "b@example.org"}]
    err = build_error(probe, msg)
    assert err["error"]["target"] == "recipients"


def test_long_latin_display_name(probe):
    """long names split into encoded runs and plain atoms read back
    exactly"""
    names = ["Dr. José María García-López de la Fuente y "
             "Hernández-Ramírez", "Ævar Arnfjörð Bjarmason",
             "Zoë \"Zee\" O'Brien", "Ångström, Anders"]
    m, _, _ = build(probe, base_msg(recipients={"to": [
        {"address": "n%d@example.org" % i, "displayName": n}
        for i, n in enumerate(names)]}))
    assert [a.display_name for a in m["to"].addresses] == names


def test_attachment_limit(probe):
    data = base64.b64encode(b"x" * 1000).decode()
    msg = base_msg(attachments=[{"name": "a", "contentType": "text/plain",
                                 "contentInBase64": data}])
    build(probe, msg, "-a", "1000")
    err = build_error(probe, msg, "-a", "999")
    assert err["rc"] == -2
    assert err["error"]["code"] == "RequestEntityTooLarge"
    assert err["error"]["target"] == "attachments[0].contentInBase64"


@pytest.mark.parametrize("patch,target", [
    ({"senderAddress": None}, "senderAddress"),
    ({"senderAddress": ["x"]}, "senderAddress"),
    ({"senderAddress": "no-at-sign"}, "senderAddress"),
    ({"content": {"subject": "s"}}, "content"),
    ({"content": {"plainText": "p"}}, "content.subject"),
    ({"content": {"subject": "s\r\nBcc: x@example.com", "plainText": "p"}},
     "content.subject"),
    ({"content": {"subject": "s", "plainText": 42}}, "content.plainText"),
    ({"recipients": {}}, "recipients"),
    ({"recipients": {"to": [{"address": "a@example.org"},
                            {"address": "bad@"}]}},
     "recipients.to[1].address"),
    ({"recipients": {"bcc": [{"address": "a@example.org",
                              "displayName": 1}]}},
     "recipients.bcc[0].displayName"),
    ({"replyTo": [{"displayName": "x"}]}, "replyTo[0].address"),
    ({"headers": {"X-Foo": "a\nX-Injected: 1"}}, "headers.X-Foo"),
    ({"headers": {"From": "evil@example.com"}}, "headers.From"),
    ({"headers": {"message-ID": "<x@y>"}}, "headers.message-ID"),
    ({"headers": {"X Space": "v"}}, "headers.X Space"),
    ({"headers": {"X-Num": 1}}, "headers.X-Num"),
    ({"attachments": [{"name": "a", "contentType": "text/plain",
                       "contentInBase64": "not base64!"}]},
     "attachments[0].contentInBase64"),
    ({"attachments": [{"name": "a", "contentType": "bogus",
                       "contentInBase64": ""}]},
     "attachments[0].contentType"),
    ({"userEngagementTrackingDisabled": "true"},
     "userEngagementTrackingDisabled"),
])
def test_errors(probe, patch, target):
    err = build_error(probe, base_msg(**patch))
    assert err["rc"] == -1
    assert err["error"]["code"] == "BadRequest"
    assert err["error"]["target"] == target
    assert err["error"]["message"]


def test_not_an_object(probe):
    err = build_error(probe, b"[1, 2]")
    assert err["error"]["target"] is None
