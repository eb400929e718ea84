"""Every malformed samples message is refused with a reason; nothing else ever escapes."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from beatwise.protocol import (
    MAX_SAMPLES,
    REASONS,
    ProtocolError,
    decode_samples,
    encode_json,
    encode_samples,
)


def good(**header) -> list[bytes]:
    h, p = encode_samples(
        {"type": "samples", "bed": "b1", "fs": 360, "first_sample": 0, "seq": 0, **header},
        np.zeros(36, np.float32),
    )
    return [b"ecg.b1", h, p]


def with_header(**changes) -> list[bytes]:
    frames = good()
    h = json.loads(frames[1])
    for k, v in changes.items():
        if v is _DROP:
            h.pop(k)
        else:
            h[k] = v
    return [frames[0], json.dumps(h).encode(), frames[2]]


_DROP = object()

CASES = {
    "frames": [good()[:2], [*good(), b""], [b"ecg.b1"]],
    "json": [[b"ecg.b1", b"{not json", good()[2]], [b"ecg.b1", b"[1, 2]", good()[2]]],
    "version": [with_header(v=2), with_header(v="1")],
    "header": [
        with_header(seq=-1),
        with_header(seq=1.5),
        with_header(seq=True),
        with_header(seq="3"),
        with_header(seq=_DROP),
        with_header(first_sample=_DROP),
        with_header(type="bogus"),
        with_header(stream=7),
        # optional fields the consumer reads: refused here, never a crash there
        with_header(record=["mitdb/100"]),
        with_header(record_offset=None),
        with_header(record_offset="x"),
        with_header(record_offset=-1),
        with_header(loop_samples=0),
        with_header(loop_samples=2.5),
        with_header(sent_at="now"),
        with_header(sent_at=-1.0),
        with_header(speed=[1]),
        with_header(speed=True),
    ],
    "bed": [
        [b"ecg.b2", *good()[1:]],
        [b"ecg.", *good()[1:]],
        [b"ecg.a b", *with_header(bed="a b")[1:]],
        [b"ecg.x.y", *with_header(bed="x.y")[1:]],
        [b"ecg." + b"b" * 65, *with_header(bed="b" * 65)[1:]],
        [b"ecg.\xff\xfe", *good()[1:]],
        with_header(bed=_DROP),
    ],
    "fs": [with_header(fs=0), with_header(fs=-360), with_header(fs=1e9), with_header(fs="360")],
    "size": [
        [*good()[:2], good()[2][:-1]],
        [*good()[:2], good()[2][:-4]],
        [*good()[:2], b""],
        with_header(n=37),
        [
            b"ecg.b1",
            *encode_samples(
                {"type": "samples", "bed": "b1", "fs": 360, "first_sample": 0, "seq": 0},
                np.zeros(MAX_SAMPLES + 1, np.float32),
            ),
        ],
        [
            b"ecg.b1",
            encode_json({"v": 1, "type": "end", "bed": "b1", "seq": 0, "total_samples": 0}),
            b"\0\0\0\0",
        ],
    ],
}


@pytest.mark.parametrize("reason", sorted(CASES))
def test_each_malformed_message_is_refused_with_its_reason(reason):
    assert reason in REASONS
    for frames in CASES[reason]:
        with pytest.raises(ProtocolError) as info:
            decode_samples(frames)
        assert info.value.reason == reason, (frames, info.value)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_samples_are_refused(bad):
    x = np.zeros(36, np.float32)
    x[7] = bad
    h, p = encode_samples(
        {"type": "samples", "bed": "b1", "fs": 360, "first_sample": 0, "seq": 0}, x
    )
    with pytest.raises(ProtocolError, match="NaN/Inf") as info:
        decode_samples([b"ecg.b1", h, p])
    assert info.value.reason == "non_finite"


def test_a_good_message_round_trips():
    header, x = decode_samples(good(seq=4, first_sample=144))
    assert header["seq"] == 4 and header["n"] == 36 and x.dtype == np.dtype("<f4")


@settings(max_examples=300, deadline=None)
@given(
    topic=st.one_of(st.just(b"ecg.b1"), st.binary(max_size=80)),
    header=st.one_of(
        st.binary(max_size=200),
        st.dictionaries(
            st.sampled_from(
                [
                    *("v", "type", "bed", "seq", "first_sample", "fs", "n", "stream"),
                    *("total_samples", "record", "record_offset", "sent_at", "speed"),
                    "loop_samples",
                ]
            ),
            st.one_of(
                st.none(),
                st.booleans(),
                st.integers(-5, 10**18),
                st.floats(),
                st.text(max_size=8),
                st.lists(st.integers(), max_size=3),
            ),
        ).map(lambda d: json.dumps(d).encode()),
    ),
    payload=st.binary(max_size=400),
    extra=st.lists(st.binary(max_size=8), max_size=2),
)
def test_fuzzed_frames_only_ever_raise_protocol_errors(topic, header, payload, extra):
    try:
        h, x = decode_samples([topic, header, payload, *extra])
    except ProtocolError as exc:
        assert exc.reason in REASONS
        return
    # whatever got through is a well-formed message
    assert not extra and topic == f"ecg.{h['bed']}".encode()
    assert isinstance(h["seq"], int) and h["seq"] >= 0
    # the optional fields a consumer reads are of their types
    assert isinstance(h.get("record", ""), str) and int(h.get("record_offset", 0)) >= 0
    assert h.get("loop_samples", 1) >= 1 and isinstance(h.get("loop_samples", 1), int)
    assert float(h.get("sent_at") or 0) >= 0 and float(h.get("speed") or 0) >= 0
    assert np.isfinite(x).all() and (h.get("type", "samples") == "end" or len(x) == h["n"])
