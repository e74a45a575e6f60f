from __future__ import annotations

import math
from typing import Any

import orjson
import pytest

from detector.codec import (
    Limits,
    decode_event,
    derive_event_id,
    normalise_ip,
    parse_timestamp,
)
from detector.errors import InvalidEvent
from detector.model import SignIn
from tests.conftest import IN_CI


def event(**fields: object) -> bytes:
    base: dict[str, object] = {"user": "alice", "ip": "81.2.69.10", "timestamp": "2024-03-01T10:00:00Z"}
    base.update(fields)
    return orjson.dumps({k: v for k, v in base.items() if v is not ...})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("81.2.69.10", "81.2.69.10"),
        (" 81.2.69.10 ", "81.2.69.10"),
        ("81.2.69.10:5678", "81.2.69.10"),
        ("::ffff:81.2.69.10", "81.2.69.10"),
        ("::FFFF:5102:450a", "81.2.69.10"),
        ("[2001:db8::1]:443", "2001:db8::1"),
        ("[2001:DB8:0:0::1]", "2001:db8::1"),
        ("2a02:c7f:0000::0001", "2a02:c7f::1"),
        ("[::ffff:81.2.69.10]:8080", "81.2.69.10"),
    ],
)
def test_ip_forms_are_normalised(text: str, expected: str) -> None:
    assert normalise_ip(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "1.2.3",
        "1.2.3.4.5",
        "256.1.1.1",
        "01.2.3.4",
        "1.2.3.4:99999",
        "1.2.3.4:",
        "[2001:db8::1",
        "[2001:db8::1]x",
        "gibberish",
        "1.2.3.4:80:80",
        "::ffff:1.2.3.4:80",
    ],
)
def test_bad_ips_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        normalise_ip(text)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024-03-01T10:00:00Z", 1709287200.0),
        ("2024-03-01T10:00:00z", 1709287200.0),
        ("2024-03-01t10:00:00Z", 1709287200.0),
        ("2024-03-01 10:00:00Z", 1709287200.0),
        ("2024-03-01T11:00:00+01:00", 1709287200.0),
        ("2024-03-01T05:00:00-05:00", 1709287200.0),
        ("2024-03-01T15:30:00+0530", 1709287200.0),
        ("2024-03-01T10:00:00.5Z", 1709287200.5),
        ("2024-03-01T10:00:00.1234567Z", 1709287200.123456),  # Entra: seven digits
        (1709287200, 1709287200.0),
        (1709287200.25, 1709287200.25),
        (1709287200000, 1709287200.0),
        (1709287200123, 1709287200.123),
    ],
)
def test_timestamps(value: object, expected: float) -> None:
    assert parse_timestamp(value) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize(
    "value",
    [
        "2024-03-01T10:00:00",
        "2024-03-01",
        "2024-02-30T10:00:00Z",
        "2024-03-01T25:00:00Z",
        "yesterday",
        "2024-03-01T10:00:00+25:00",
        0,
        -5,
        1e300,
        math.inf,
        math.nan,
        True,
        None,
        [],
        {},
        "1709287200",
        "1989-12-31T23:59:59Z",
        "2100-01-01T00:00:00Z",
        "2024-03-01T10:00:00Z" + " " * 70,
    ],
)
def test_bad_timestamps(value: object) -> None:
    with pytest.raises(InvalidEvent) as err:
        parse_timestamp(value)
    assert err.value.reason.startswith("bad timestamp")


def test_minimal_event_gets_defaults_and_a_stable_id() -> None:
    e = decode_event(event())
    assert (e.user, e.ip, e.time, e.success) == ("alice", "81.2.69.10", 1709287200.0, True)
    assert e.event_id == derive_event_id("alice", "81.2.69.10", 1709287200.0, True)
    # The same sign-in written differently is the same event.
    again = decode_event(event(ip="::ffff:81.2.69.10", timestamp="2024-03-01T11:00:00+01:00"))
    assert again.event_id == e.event_id
    # A different sign-in is not.
    assert decode_event(event(outcome="failure")).event_id != e.event_id


def test_other_fields_are_ignored_and_ids_kept() -> None:
    e = decode_event(event(event_id="abc", outcome="FAILURE", app="Teams", extra={"a": [1, 2]}))
    assert e.event_id == "abc" and e.success is False
    assert decode_event(event(event_id=42)).event_id == "42"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"not json", "bad JSON"),
        (b"", "empty"),
        (b"   ", "empty"),
        (b"[1, 2]", "not an object"),
        (b'"text"', "not an object"),
        (b"\xff\xfe{}", "not UTF-8"),
        (b'{"user": "a\xc3", "ip": "1.2.3.4", "timestamp": 1709287200}', "not UTF-8"),
        (event(user=...), "missing field: user"),
        (event(ip=...), "missing field: ip"),
        (event(timestamp=...), "missing field: timestamp"),
        (event(timestamp=None), "missing field: timestamp"),
        (event(user=""), "bad user"),
        (event(user="   "), "bad user"),
        (event(user=5), "bad user"),
        (event(user="x" * 513), "bad user"),
        (event(ip="nope"), "bad ip"),
        (event(ip=1234), "bad ip"),
        (event(outcome="maybe"), "bad outcome"),
        (event(outcome=1), "bad outcome"),
        (event(event_id=""), "bad event_id"),
        (event(event_id=["x"]), "bad event_id"),
        (
            b'{"user":"a","ip":"1.2.3.4","timestamp":1709287200,"x":' + b"[" * 40 + b"]" * 40 + b"}",
            "too deeply nested",
        ),
        (b'{"user":"a","ip":"1.2.3.4","timestamp":1709287200,"x":"' + b"y" * 70000 + b'"}', "too large"),
    ],
)
def test_invalid_events_are_rejected_with_a_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(InvalidEvent) as err:
        decode_event(raw)
    assert err.value.reason.startswith(reason), err.value.reason


def test_many_brackets_inside_strings_are_not_depth() -> None:
    raw = event(note="[" * 100 + "{" * 100)
    assert decode_event(raw).user == "alice"


def test_limits_are_configurable() -> None:
    limits = Limits(max_event_bytes=200, max_depth=3, max_user_chars=5)
    with pytest.raises(InvalidEvent, match="bad user"):
        decode_event(event(user="abcdef"), limits)
    with pytest.raises(InvalidEvent, match="too deeply nested"):
        decode_event(event(x=[[[[1]]]]), limits)
    with pytest.raises(InvalidEvent, match="too large"):
        decode_event(event(x="y" * 200), limits)


# -- the batch decoder is the reference decoder, faster -----------------------------------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from detector.codec import decode_batch  # noqa: E402

timestamps = st.one_of(
    st.datetimes(
        min_value=__import__("datetime").datetime(1985, 1, 1),
        max_value=__import__("datetime").datetime(2105, 1, 1),
    ).map(lambda d: d.strftime("%Y-%m-%dT%H:%M:%S") + st_fraction(d) + "Z"),
    st.tuples(
        st.datetimes(
            min_value=__import__("datetime").datetime(1989, 12, 31),
            max_value=__import__("datetime").datetime(2100, 1, 1),
        ),
        st.sampled_from(
            ["+05:30", "-05:00", "+00:00", "-00:00", "+23:59", "-23:59", "+24:00", "-12:60", "+0530"]
        ),
    ).map(lambda p: p[0].strftime("%Y-%m-%dT%H:%M:%S") + st_fraction(p[0]) + p[1]),
    st.sampled_from(
        [
            "2024-02-30T10:00:00Z",
            "2024-03-01T24:00:00Z",
            "2024-03-01T10:00:60Z",
            "2024-03-01T10:00Z",
            "2024-03-01T10:00:00.Z",
            "2024-03-01t10:00:00Z",
            "2024-03-01T10:00:00.1234567890123Z",
            "+024-03-01T10:00:00Z",
            "2024-03-01T10:00:00+01:00",
            "١٩٩٩-03-01T10:00:00Z",
            "",
        ]
    ),
    st.integers(-10, 5_000_000_000_000),
    st.floats(allow_nan=True),
    st.none(),
    st.booleans(),
)


def st_fraction(d: object) -> str:
    us = getattr(d, "microsecond", 0)
    return "" if us % 3 == 0 else f".{us:06d}"[: 2 + us % 7] + ("9" if us % 5 == 0 else "")


fields = st.fixed_dictionaries(
    {},
    optional={
        "user": st.one_of(
            st.text(max_size=6), st.just(" "), st.just("x" * 513), st.integers(-(2**63), 2**63 - 1)
        ),
        "ip": st.one_of(
            st.sampled_from(
                [
                    "81.2.69.10",
                    "::ffff:81.2.69.10",
                    "81.2.69.10:443",
                    "[2a02:c7f::1]:1",
                    "999.1.1.1",
                    "",
                    " 81.2.69.10",
                    "fe80::1",
                    "81.2.\x0069.10",  # a NUL: inet_pton raises ValueError, not OSError
                    "81.2.69.10\n",
                ]
            ),
            st.text(max_size=16),
            st.integers(0, 2**32),
        ),
        "timestamp": timestamps,
        "event_id": st.one_of(st.none(), st.text(max_size=4), st.integers(-(2**63), 2**63 - 1), st.just(" ")),
        "outcome": st.one_of(st.none(), st.sampled_from(["success", "failure", "SUCCESS", "maybe", ""])),
    },
)


@settings(max_examples=1000)
@given(st.lists(st.one_of(fields.map(orjson.dumps), st.binary(max_size=20)), min_size=1, max_size=12))
def test_batch_decoding_equals_one_by_one(raws: list[bytes]) -> None:
    def one(raw: bytes) -> object:
        try:
            return decode_event(raw)
        except InvalidEvent as exc:
            return ("invalid", exc.reason)

    batch = [r if not isinstance(r, InvalidEvent) else ("invalid", r.reason) for r in decode_batch(raws)]
    assert batch == [one(r) for r in raws]


def assert_batch_equals_one_by_one(raw: bytes) -> None:
    try:
        one: object = decode_event(raw)
    except InvalidEvent as exc:
        one = ("invalid", exc.reason)
    got = decode_batch([raw])[0]
    assert (("invalid", got.reason) if isinstance(got, InvalidEvent) else got) == one


@pytest.mark.parametrize(
    "stamp",
    [
        "2024-03-03T19:00:00-05:00",
        "2024-03-04T05:30:00.123+05:30",
        "2024-03-04T00:00:00.123456789+00:00",
        "2024-03-04T00:00:00-00:00",
        "2024-02-29T23:59:59+23:59",
        "1990-01-01T00:00:00+01:00",  # before 1990 in UTC: refused by both
        "2099-12-31T23:00:00-01:00",  # 2100 in UTC: refused by both
        "2024-03-04T00:00:00+24:00",
        "2024-03-04T00:00:00+05:60",
        "2024-02-30T00:00:00+01:00",
    ],
)
def test_batch_decoding_of_offsets_equals_one_by_one(stamp: str) -> None:
    raw = orjson.dumps({"user": "a", "ip": "81.2.69.10", "timestamp": stamp, "event_id": "e"})
    assert_batch_equals_one_by_one(raw)


@pytest.mark.parametrize(
    "ip", ["81.2.\x0069.10", "81.2.69.10\x00", "81.2.69.10\n", "\x00", "81.2.69.10 ", "::ffff:81.2.69.10"]
)
def test_batch_decoding_of_odd_addresses_equals_one_by_one(ip: str) -> None:
    """The batch checks a dotted quad in place; anything else must meet the same fate as one by one."""
    raw = orjson.dumps({"user": "a", "ip": ip, "timestamp": "2024-03-04T00:00:00Z", "event_id": "e"})
    assert_batch_equals_one_by_one(raw)


# -- the C decoder of the common line (detector/_speedups.c) -----------------------------------------

import detector.codec as codec_module  # noqa: E402

# Pieces of a canonical line: the first of each is plain, the others a small step away from the shape
# the C decoder takes, so that lines fall on both sides of each of its checks, where it must agree with
# the reference decoder.
_PIECES = {
    "user": [
        b'"alice@example.org"',
        b'"Zo\xc3\xab@example.org"',  # UTF-8
        b'"\xe2\x80\x83"',  # all white space, not ASCII
        b'"  "',
        b'"a\\u0062"',  # an escape
        b'"a\tb"',  # a raw control character
        b'"\xff\xfe"',  # not UTF-8
        b'"' + b"x" * 513 + b'"',
        b'""',
        b"null",
        b"7",
    ],
    "ip": [
        b'"81.2.69.10"',
        b'"81.2.69.010"',
        b'"81.2.69.256"',
        b'"81.2.69"',
        b'"255.255.255.255"',
        b'"::ffff:81.2.69.10"',
        b'"81.2.69.10:443"',
        b'"2a02:c7f::1"',
        b'"2001:DB8::1"',
        b'"2001:db8:0:0:0:0:0:1"',
        b'"2001:0db8::1"',
        b'"::1"',
        b'"::"',
        b'"1::"',
        b'"::ffff:1.2.3.4"',
        b'"::ffff:102:304"',
        b'"::1.2.3.4"',
        b'"::102:304"',
        b'"1:0:0:2:0:0:0:3"',
        b'"1:0:0:2::3"',
        b'"1::2:0:0:3"',
        b'"1:0:1:0:1:0:1:0"',
        b'"fe80::1%eth0"',
        b'"[2001:db8::1]:443"',
        b'"2001:db8:::1"',
        b'" 81.2.69.10"',
        b'"\xd9\xa1.2.3.4"',
        b"null",
    ],
    "timestamp": [
        b'"2024-03-15T23:59:35Z"',
        b'"2024-03-15T23:59:35.7Z"',
        b'"2024-03-15T23:59:35.123456Z"',
        b'"2024-03-15T23:59:35.1234567Z"',
        b'"2024-03-15T23:59:35.Z"',
        b'"2024-02-29T12:00:00+05:30"',
        b'"2023-02-29T12:00:00Z"',
        b'"2100-02-29T12:00:00Z"',
        b'"2000-02-29T12:00:00-23:59"',
        b'"1990-01-01T00:30:00+01:00"',
        b'"2099-12-31T23:30:00-01:00"',
        b'"2024-03-15T24:00:00Z"',
        b'"2024-03-15T23:60:00Z"',
        b'"2024-03-15T23:59:60Z"',
        b'"2024-13-15T23:59:35Z"',
        b'"2024-03-15t23:59:35Z"',
        b'"2024-03-15T23:59:35z"',
        b'"2024-03-15T23:59:35+0530"',
        b'"2024-03-15T23:59:35+24:00"',
        b'"2024-03-15 23:59:35Z"',
        b'"2024-03-15T23:59:35-00:00"',
        b'"1989-12-31T23:59:59.999999Z"',
        b'"2099-12-31T23:59:59.999999Z"',
        b'"2024-03-15T23:59:35.000001+14:00"',
        b'"0000-01-01T00:00:00Z"',
        b'"1990-01-01T00:00:00Z"',
        b'"2100-01-01T00:00:00Z"',
        b'"2099-12-31T23:59:59.999999-00:01"',
        b"1710547175",
        b"1710547175.25",
        b"1710547175123",
        b"1710547175123.5",
        b"1.7105471751e9",
        b"17105471751E-1",
        b"1e11",
        b"99999999999",
        b"631152000",
        b"631151999.9999999",
        b"4102444800",
        b"4102444799.999999",
        b"4102444799999.9995",
        b"-1710547175",
        b"0",
        b"-0.0",
        b"01710547175",
        b"1710547175.",
        b"17105471751234567890123456789012",
        b"171054717512345678901234567890123",
        b"1.7e400",
        b"true",
    ],
    "event_id": [b'"e-1"', b'"  "', b'""', b"null", b"12", b'"\xc3\xa9"'],
    "outcome": [b'"success"', b'"failure"', b'"SUCCESS"', b"null", b'""', b"true"],
    "note": [
        b'"x"',
        b'"S\xc3\xa3o Paulo \xf0\x9f\x98\x80 \xef\xbf\xbf"',
        b'"\xed\xa0\x80"',  # a surrogate, in UTF-8's form
        b'"\xc0\xaf"',  # an overlong form
        b'"\xf4\x90\x80\x80"',  # past U+10FFFF
        b'"\xe2\x80"',  # cut short
        b"null",
        b"1.5",
        b'{"a":1}',
        b"[1]",
        b'"\xc3\xa9"',
        b"true",
        b"false",
        b"tru",
        b"truex",
        b"0",
        b"-0",
        b"01",
        b"1.",
        b".5",
        b"-",
        b"+1",
        b"1e",
        b"1E+05",
        b"2.5e-3",
        b"1e400",
        b"-1e-400",
        b"123456789012345",
        b"1234567890123456",
        b"123456789012345678901234567890",
        b"NaN",
        b"Infinity",
        b"{}",
        b"[]",
        b' { "os" : "Windows" , "v" : [ 1 , 2.5e-3 , true , null , { "x" : "y" } , [ ] ] } ',
        b'{"a":"\\u0041"}',
        b'{"a":"\xc3\xa9"}',
        b'{"a":"\xff"}',
        b'{"a":["\xed\xa0\x80"]}',
        b'{"\xc3\xa9":1}',
        b'{"\xc0\xaf":1}',
        b'{"a":1,}',
        b'{"a" 1}',
        b"[1 2]",
        b"[1,]",
        b'{"a":01}',
        b'{"a":tru}',
        b'{"a":[1}',
        b'{"a":"{[{["}',
        b"[" * 16 + b"1" + b"]" * 16,
        b"[" * 17 + b"1" + b"]" * 17,
        b"[" * 31 + b"1" + b"]" * 31,
        b"[" * 32 + b"1" + b"]" * 32,
        b'["' + b"{" * 40 + b'"]',
    ],
}
_PLAIN = {name: pieces[0] for name, pieces in _PIECES.items()}  # every piece's first: the plain line
_SPACE = st.sampled_from([b"", b"", b"", b"", b"", b" ", b"\t", b"\r\n", b"\x0b"])


@st.composite
def canonical_lines(draw: st.DrawFn) -> bytes:
    """A plain line (the first choice of every piece) with, here and there, one piece changed."""
    names = ["user", "ip", "timestamp", "event_id", *draw(st.sampled_from([[], ["outcome"], ["note"]]))]
    if draw(st.integers(0, 5)) == 0:  # a field left out or given twice
        if draw(st.booleans()):
            names.remove(draw(st.sampled_from(names)))
        else:
            names = [*names, draw(st.sampled_from(names))]
    names = draw(st.permutations(names))
    members = []
    for n in names:
        value = draw(st.sampled_from(_PIECES[n])) if draw(st.integers(0, 3)) == 0 else _PLAIN[n]
        members.append(b'"%s"' % n.encode() + draw(_SPACE) + b":" + draw(_SPACE) + value)
    body = (draw(_SPACE) + b"," + draw(_SPACE)).join(members)
    tail = draw(st.sampled_from([b"", b"", b"", b" ", b",", b"x", b"}"]))
    return draw(_SPACE) + b"{" + draw(_SPACE) + body + draw(_SPACE) + b"}" + tail


def _plain_line(without: tuple[str, ...] = (), **changed: bytes) -> bytes:
    fields = {k: v for k, v in (_PLAIN | changed).items() if k not in without}
    return b"{" + b",".join(b'"%s":%s' % (k.encode(), v) for k, v in fields.items()) + b"}"


def _assert_c_decoder_agrees(raws: list[bytes]) -> None:
    batch = [r if not isinstance(r, InvalidEvent) else ("invalid", r.reason) for r in decode_batch(raws)]
    expected = []
    for raw in raws:
        try:
            expected.append(decode_event(raw))
        except InvalidEvent as exc:
            expected.append(("invalid", exc.reason))
    assert batch == expected
    for got, want in zip(batch, expected, strict=True):
        assert type(got) is type(want) and (not isinstance(got, SignIn) or type(got[2]) is float)


needs_c = pytest.mark.skipif(codec_module.SPEEDUPS is None, reason="the C module is not built (make setup)")


@needs_c
def test_the_c_decoder_agrees_on_every_single_change() -> None:
    """Each piece changed on its own (a line of otherwise plain pieces), all at once; and each again in a
    line without an event id (the id is then derived from the other fields)."""
    variants = [
        _plain_line(without, **{name: example})
        for without in ((), ("event_id",))
        for name, pieces in _PIECES.items()
        for example in pieces
    ]
    _assert_c_decoder_agrees(variants)


@needs_c
@settings(max_examples=1000, deadline=None)
@given(st.lists(canonical_lines(), min_size=1, max_size=8))
def test_the_c_decoder_gives_what_the_reference_gives(raws: list[bytes]) -> None:
    _assert_c_decoder_agrees(raws)


@needs_c
@settings(max_examples=500, deadline=None)
@given(st.lists(st.integers(0, 3), min_size=8, max_size=8), st.randoms(use_true_random=False))
def test_the_c_decoder_takes_ipv6_as_normalised_and_agrees_on_any_form(kinds: list[int], rng: Any) -> None:
    """An IPv6 address (hexadecets 0, small or any, so that runs of zeros of every length and place
    occur) written as normalise_ip writes it is taken in C; in any other form (full, upper case, leading
    zeros, another run compressed) it is left to the Python decoder; both give what decode_event gives."""
    import ipaddress

    words = [0 if k == 0 else rng.randrange(1, 16) if k == 1 else rng.randrange(65536) for k in kinds]
    address = ipaddress.IPv6Address(b"".join(w.to_bytes(2, "big") for w in words))
    forms = [str(address), address.exploded, str(address).upper(), ":".join(f"{w:04x}" for w in words)]
    lines = [_plain_line(ip=b'"%s"' % form.encode()) for form in forms]
    _assert_c_decoder_agrees(lines)
    taken = codec_module.SPEEDUPS.decode_canonical(lines, 65536, 512, 1024, 32, SignIn)
    if address.ipv4_mapped is None:
        assert taken[0] == decode_event(lines[0]) and taken[0].ip == str(address)
    assert all(t is None for form, t in zip(forms, taken, strict=True) if form != str(address))


@needs_c
@settings(max_examples=500, deadline=None)
@given(
    st.lists(
        st.lists(
            st.sampled_from(
                [b"a", b"a", b"a", b"Z", b"9", b" ", b'"', b"\\", b"\x1f", b"\x7f", b"\xc3\xa9", b"\xff"]
            ),
            max_size=30,
        ),
        min_size=3,
        max_size=3,
    ),
)
def test_the_c_decoder_agrees_on_any_byte_at_any_place_in_a_string(texts: list[list[bytes]]) -> None:
    """Strings are scanned eight bytes at a time: a quote, a backslash, a control character or a byte
    beyond ASCII at any offset (in a value, and in a field's name) is met as one byte at a time meets it."""
    user, other, name = (b"".join(t) for t in texts)
    line = _plain_line(user=b'"%s"' % user, note=b'"%s"' % other)
    lines = [line, line.replace(b'"note"', b'"x%s"' % name)]
    _assert_c_decoder_agrees(lines)
    plain = {b"a", b"Z", b"9", b" ", b"\x7f"}
    if all(piece in plain for t in texts for piece in t) and user.strip(b" \x7f"):  # then taken in C
        assert None not in codec_module.SPEEDUPS.decode_canonical(lines, 65536, 512, 1024, 32, SignIn)


@needs_c
@settings(max_examples=2000, deadline=None)
@given(
    st.tuples(
        st.lists(
            st.sampled_from(["0", "1", "7", "25", "199", "255", "256", "00", "01", "999", "1000", "", "a"]),
            min_size=3,
            max_size=5,
        ).map(".".join),
        st.sampled_from(["", "", "", ".", "a", " ", "0"]),
    ).map("".join)
)
def test_the_c_decoder_reads_a_dotted_quad_as_inet_pton_does(text: str) -> None:
    """The C decoder's own reading of IPv4 addresses (not glibc's) takes exactly what inet_pton takes:
    four numbers of at most 255, no leading zero, three dots."""
    import socket

    line = _plain_line(ip=b'"%s"' % text.encode())
    _assert_c_decoder_agrees([line])
    try:
        socket.inet_pton(socket.AF_INET, text)
        valid = True
    except OSError:
        valid = False
    taken = codec_module.SPEEDUPS.decode_canonical([line], 65536, 512, 1024, 32, SignIn)[0]
    assert (taken is not None) == valid


def test_the_c_decoder_takes_the_plain_line_and_leaves_the_rest() -> None:
    """What it takes, it decodes as the reference does; what it is not sure of, it leaves (None)."""
    if codec_module.SPEEDUPS is None:
        if IN_CI:
            pytest.fail("`make setup` must build detector/_speedups.c")
        pytest.skip("the C module is not built (make setup)")
    plain = [
        b'{"timestamp":"2024-03-15T23:59:53.735Z","user":"ivan@ministry.example","ip":"176.96.151.155",'
        b'"outcome":"failure","event_id":"8d0d6f60"}',
        b' { "user" : "Zo\xc3\xab" , "ip":"1.2.3.4", "timestamp":"2024-02-29T23:59:59-05:00",'
        b' "event_id":"x", "outcome": null, "device": "laptop", "tenant": null }',
        b'{"user":"a","ip":"1.2.3.4","timestamp":"2024-03-15T23:59:53Z","event_id":"e","n":1,"mfa":true,'
        b'"risk":-0.25,"vpn":false}',
        b'{"user":"a","ip":"1.2.3.4","timestamp":1710547193.735,"event_id":"e"}',  # epoch seconds
        b'{"user":"a","ip":"1.2.3.4","timestamp":1710547193735,"event_id":"e"}',  # epoch milliseconds
        b'{"user":"a","ip":"1.2.3.4","timestamp":"2024-03-15T23:59:53Z","event_id":"e",'
        b'"device":{"os":"Windows","tags":["managed",1]}}',
        b'{"user":"a","ip":"1.2.3.4","timestamp":"2024-03-15T23:59:53Z","event_id":"e","citt\xc3\xa0":"S\xc3\xa3o"}',
    ]
    no_id = [  # taken, the event id left for decode_batch to derive (None)
        b'{"user":"a","ip":"1.2.3.4","timestamp":"2024-03-15T23:59:53Z"}',
        b'{"user":"a","ip":"1.2.3.4","timestamp":"2024-03-15T23:59:53Z","event_id":null,"n":2}',
    ]
    left = [
        b'{"user":"a","ip":"1.2.3.4","timestamp":"2024-03-15T23:59:53Z","event_id":7}',
        b'{"user":"a","ip":"1.2.3.4","timestamp":"2024-03-15T23:59:53Z","event_id":"e","n":["\\u0041"]}',
        b'{"user":"a","ip":"1.2.3.4","timestamp":"2024-03-15T23:59:53Z","event_id":"e","n":1e400}',
        b'{"user":"a","ip":"1.2.3.4","timestamp":99999999999,"event_id":"e"}',  # (out of range: rejected)
        b'{"user":"a","ip":"1.2.3.4","timestamp":"2024-03-15T23:59:53Z","event_id":"e","\xc0\xaf":1}',
        b'{"user":"a","user":"b","ip":"1.2.3.4","timestamp":"2024-03-15T23:59:53Z","event_id":"e"}',
        b'{"user":"a\\u0062","ip":"1.2.3.4","timestamp":"2024-03-15T23:59:53Z","event_id":"e"}',
        b'{"user":"a","ip":"::0001","timestamp":"2024-03-15T23:59:53Z","event_id":"e"}',
        b'{"user":"a","ip":"1.2.3.4","timestamp":"2024-03-15T23:59:53.1234567890123Z","event_id":"e"}',
        b'{"user":"a","ip":"1.2.3.4","timestamp":"2024-03-15T23:59:53.1234567x9Z","event_id":"e"}',
    ]
    # Fractions of up to 12 digits, those past six dropped as fromisoformat drops them (.NET writes 7).
    plain[2:2] = [
        b'{"user":"a","ip":"1.2.3.4","timestamp":"2024-03-15T23:59:53.9999999Z","event_id":"e"}',
        b'{"user":"a","ip":"1.2.3.4","timestamp":"2024-03-15T23:59:53.123456789012+05:30","event_id":"e"}',
    ]
    got = codec_module.SPEEDUPS.decode_canonical(plain + no_id + left, 65536, 512, 1024, 32, SignIn)
    assert got[len(plain) + len(no_id) :] == [None] * len(left)
    assert got[: len(plain)] == [decode_event(raw) for raw in plain]
    assert [type(s) for s in got[: len(plain)]] == [SignIn] * len(plain)
    # A nested value within the depth limit as decode_batch counts it (every bracket of the line: 3).
    nested = plain[-2]
    assert [
        codec_module.SPEEDUPS.decode_canonical([nested], 65536, 512, 1024, d, SignIn)[0] for d in (2, 3)
    ] == [
        None,
        decode_event(nested),
    ]
    for depth in (2, 3):
        shallow = Limits(max_depth=depth)
        results = [decode_batch([nested], shallow)[0]]
        try:
            results.append(decode_event(nested, shallow))
        except InvalidEvent as exc:
            results.append(exc)
        assert (type(results[0]) is SignIn) == (depth == 3) and repr(results[0]) == repr(results[1])
    taken = got[len(plain) : len(plain) + len(no_id)]
    assert [s._replace(event_id=None) for s in map(decode_event, no_id)] == taken
    assert decode_batch(no_id) == [decode_event(raw) for raw in no_id]
    assert got[0].time == 1710547193.735 and got[0].success is False and got[1].time == 1709269199.0


_STAMP = st.builds(
    lambda y, mo, d, h, mi, s, frac, zone: f"{y:04d}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}:{s:02d}{frac}{zone}",
    st.integers(1985, 2105),
    st.integers(0, 13),
    st.integers(0, 32),
    st.integers(0, 24),
    st.integers(0, 60),
    st.integers(0, 60),
    st.one_of(st.just(""), st.text("0123456789", min_size=1, max_size=11).map(lambda f: "." + f)),
    st.one_of(
        st.just("Z"),
        st.builds(
            lambda sign, h, m: f"{sign}{h:02d}:{m:02d}",
            st.sampled_from("+-"),
            st.integers(0, 23),
            st.integers(0, 59),
        ),
    ),
)


@pytest.mark.parametrize("numpy", [False, True], ids=["one at a time", "numpy"])
@settings(max_examples=300, deadline=None)
@given(stamps=st.lists(_STAMP, min_size=1, max_size=8))
def test_the_python_decoders_timestamps_are_parse_timestamps(stamps: list[str], numpy: bool) -> None:
    """``_seconds``, by numpy over the batch (no C decoder) or one at a time (the lines the C one leaves):
    the time ``parse_timestamp`` gives, or None where it refuses the date."""
    with pytest.MonkeyPatch.context() as m:
        if numpy:
            m.setattr(codec_module, "SPEEDUPS", None)
        elif codec_module.SPEEDUPS is None:
            m.setattr(codec_module, "SPEEDUPS", object())
        offsets = [codec_module._plain_stamp(ts) for ts in stamps]
        assert None not in offsets
        cut = [ts[:-1] if ts[-1] == "Z" else ts[:-6] for ts in stamps]
        got = codec_module._seconds(cut, offsets)
    for ts, t in zip(stamps, got, strict=True):
        try:
            expected: float | None = parse_timestamp(ts)
        except InvalidEvent:
            expected = None
        if t is not None and not codec_module.MIN_TIME <= t < codec_module.MAX_TIME:
            t = None  # (the range of years is decode_batch's check, after this)
        assert t == expected, ts


@needs_c
@settings(max_examples=400, deadline=None)
@given(
    st.one_of(
        _STAMP,
        _STAMP.map(lambda ts: ts.lower()),
        _STAMP.map(lambda ts: ts.replace("T", " ")),
        _STAMP.map(lambda ts: ts[:-3] + ts[-2:] if ts[-1] != "Z" else ts),
        st.text(max_size=40),
    )
)
def test_parse_timestamp_in_c_is_parse_timestamp(text: str) -> None:
    """The common shape in C (``plain_stamp``), the rest in Python: the same seconds, or the same reason."""

    def parsed() -> float | str:
        try:
            return parse_timestamp(text)
        except InvalidEvent as exc:
            return exc.reason

    with_c = parsed()
    with pytest.MonkeyPatch.context() as m:
        m.setattr(codec_module, "SPEEDUPS", None)
        alone = parsed()
    assert with_c == alone, text
    taken = codec_module.SPEEDUPS.plain_stamp(text)
    assert taken is None or taken == alone


@needs_c
def test_the_c_takes_the_common_timestamps() -> None:
    plain = codec_module.SPEEDUPS.plain_stamp
    assert plain("2024-03-15T23:59:53Z") == 1710547193.0
    assert plain("2024-03-15T23:59:53.1234567+01:00") == 1710543593.123456
    assert plain("2024-02-30T10:00:00Z") is None  # (no date: Python says why)
    assert plain("2024-03-15t23:59:53z") is None and plain("2024-03-15 23:59:53Z") is None
    assert plain(1710547193) is None  # type: ignore[arg-type]


@needs_c
@settings(max_examples=500)
@given(
    st.lists(st.sampled_from([b"{}", b'{"user":"a"}', b" {}", b"[]", b"", b"{" + b"x" * 40]), max_size=12),
    st.integers(0, 50),
)
def test_objects_in_c_are_the_positions_the_loop_finds(raws: list[bytes], max_bytes: int) -> None:
    """``codec.objects`` in C: the same positions as its loop, as a range where every input is one."""
    positions = codec_module.objects(raws, max_bytes)
    expected = [i for i, raw in enumerate(raws) if raw.startswith(b"{") and len(raw) <= max_bytes]
    assert list(positions) == expected
    assert isinstance(positions, range) == (len(expected) == len(raws))
    # An input that is not bytes: left to the loop.
    assert codec_module.SPEEDUPS.objects([*raws, bytearray(b"{}")], max_bytes) is None


@settings(max_examples=300)
@given(st.lists(st.sampled_from(["signin", "no_id", "none", "tuple"]), max_size=10), st.booleans())
def test_all_signins_in_c_and_in_python(kinds: list[str], c: bool) -> None:
    """``codec.all_signins``: every row a SignIn with its event id (a batch decoded whole), in C and in
    Python alike; a plain tuple of the same fields, a SignIn without its id, or None, is not one."""
    signin = SignIn("alice", "81.2.69.1", 1.7e9, "e1", True, None, False)
    rows: list[object] = [
        {"signin": signin, "no_id": signin._replace(event_id=None), "none": None, "tuple": tuple(signin)}[k]
        for k in kinds
    ]
    expected = all(k == "signin" for k in kinds)
    if c and codec_module.SPEEDUPS is None:
        return
    with pytest.MonkeyPatch.context() as m:
        if not c:
            m.setattr(codec_module, "SPEEDUPS", None)
        assert codec_module.all_signins(rows) is expected
        assert codec_module.all_signins(tuple(rows)) is expected  # (not a list: the loop's, either way)
