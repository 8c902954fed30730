"""The fake Twilio itself: stopping it leaves nothing running in the test process."""

from __future__ import annotations

import base64
import http.client
import threading
import urllib.parse

from tests.fakes.fake_twilio import FakeTwilio


def test_stopping_the_fake_ends_the_threads_of_kept_alive_connections() -> None:
    """A client keeping its connection alive (twilio's does) used to leave the fake's thread
    for that connection waiting on it after the test, one or more per test."""
    before = set(threading.enumerate())
    fake = FakeTwilio().start()
    address = urllib.parse.urlsplit(fake.url)
    auth = base64.b64encode(f"{fake.account_sid}:{fake.auth_token}".encode()).decode()
    client = http.client.HTTPConnection(address.hostname or "", address.port, timeout=10)
    try:
        for _ in range(2):  # the same connection twice: kept alive
            client.request(
                "GET",
                f"/2010-04-01/Accounts/{fake.account_sid}.json",
                headers={"Authorization": f"Basic {auth}"},
            )
            response = client.getresponse()
            response.read()
            assert response.status == 200
        assert fake.account_checks == 2
        fake.stop()
        left = [t.name for t in threading.enumerate() if t not in before and t.is_alive()]
        assert left == []
    finally:
        client.close()
