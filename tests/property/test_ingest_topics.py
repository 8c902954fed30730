"""Properties of the MQTT topic names (``vigie/topics.py``)."""

from __future__ import annotations

from hypothesis import example, given
from hypothesis import strategies as st

from tests.property.common import fast
from vigie import topics

DEVICE_IDS = st.from_regex(r"\A[A-Za-z0-9_-]{3,64}\Z")
SUFFIXES = st.sampled_from(topics.UPLINKS)
# Topic-ish text: the prefix, slashes and suffixes are likely, so parse's branches are reached.
TOPIC_TEXT = (
    st.lists(
        st.sampled_from([topics.PREFIX, "/", "alert", "cmd", "hb", "+", "#", "", "x"])
        | st.text(max_size=6),
        max_size=6,
    ).map("".join)
    | st.text()
)


@fast(120)
@given(TOPIC_TEXT)
@example("vigie/v1/dev//alert")
@example("vigie/v1/dev/a/b/alert")
@example("vigie/v1/dev/dev-1/cmd")
def test_parse_is_total_and_inverse_of_uplink(topic: str) -> None:
    """``parse`` never raises; whenever it answers ``(device_id, suffix)``, that pair names
    exactly the topic it was given, with a non-empty device id and an uplink suffix."""
    got = topics.parse(topic)
    if got is not None:
        device_id, suffix = got
        assert device_id and "/" not in device_id and suffix in topics.UPLINKS
        assert topics.uplink(device_id, suffix) == topic


@fast(80)
@given(st.text(min_size=1).filter(lambda s: "/" not in s), SUFFIXES)
def test_uplink_topics_round_trip(device_id: str, suffix: topics.Uplink) -> None:
    """Any slash-free device id (valid or not: an alert on a badly named topic is still kept)
    comes back from ``parse(uplink(id, suffix))``; the ``cmd`` topic is never an uplink."""
    assert topics.parse(topics.uplink(device_id, suffix)) == (device_id, suffix)
    assert topics.parse(topics.cmd(device_id)) is None


@fast(80)
@given(DEVICE_IDS | st.text(max_size=70))
def test_valid_device_ids_follow_the_protocol(device_id: str) -> None:
    """``valid_device_id`` is exactly ``^[A-Za-z0-9_-]{3,64}$`` minus the server's account."""
    expected = (
        3 <= len(device_id) <= 64
        and all(c.isascii() and (c.isalnum() or c in "_-") for c in device_id)
        and device_id != topics.SERVER_USERNAME
    )
    assert topics.valid_device_id(device_id) == expected


def _matches(topic_filter: str, topic: str) -> bool:
    """MQTT filter matching (``+`` one level, ``#`` the rest; ``$share/g/`` stripped)."""
    if topic_filter.startswith("$share/"):
        topic_filter = topic_filter.split("/", 2)[2]
    f, t = topic_filter.split("/"), topic.split("/")
    for i, part in enumerate(f):
        if part == "#":
            return True
        if i >= len(t) or (part != "+" and part != t[i]):
            return False
    return len(f) == len(t)


@fast(60)
@given(DEVICE_IDS, SUFFIXES, st.sampled_from(["", "vigie", "g1"]))
def test_every_uplink_matches_exactly_one_subscription(
    device_id: str, suffix: topics.Uplink, group: str
) -> None:
    """Each uplink topic of a valid device is matched by exactly one of the server's
    subscriptions (shared or not), at QoS 1; its ``cmd`` topic by none."""
    subs = topics.subscriptions(group)
    hits = [qos for f, qos in subs if _matches(f, topics.uplink(device_id, suffix))]
    assert hits == [1]
    assert not [f for f, _ in subs if _matches(f, topics.cmd(device_id))]
