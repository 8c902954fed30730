"""A dispatch engine in its own process, driven line by line on stdin (for the crash tests).

python -m tests.dispatch.engine_proc DB_URL TWILIO_API_BASE ACCOUNT_SID AUTH_TOKEN FROM LEASE_S
stdin:  "tick <iso time>"  →  stdout: "done <json report>"
"""

from __future__ import annotations

import json
import sys
from datetime import datetime

from alert_server.db import make_engine
from dispatch import DispatchConfig, Dispatcher
from dispatch.channels.twilio import TwilioNotifier


def main() -> None:
    url, api_base, sid, token, from_number, lease_s = sys.argv[1:7]
    engine = make_engine(url)
    notifier = TwilioNotifier(
        account_sid=sid,
        auth_token=token,
        from_number=from_number,
        api_base=api_base,
        public_url="http://127.0.0.1:9",
        http_timeout_s=30,
    )
    dispatcher = Dispatcher(
        engine=engine,
        notifier=notifier,
        config=DispatchConfig(public_url="http://127.0.0.1:9", lease_s=float(lease_s)),
    )
    print("ready", flush=True)
    for line in sys.stdin:
        cmd, _, arg = line.strip().partition(" ")
        if cmd == "tick":
            wait = True
            if arg.endswith(" nowait"):
                arg, wait = arg.removesuffix(" nowait"), False
            report = dispatcher.tick(now=datetime.fromisoformat(arg), wait=wait)
            print(
                "done " + json.dumps({"sent": report.sent, "claimed": report.claimed}), flush=True
            )
        elif cmd == "quit":
            break
    dispatcher.shutdown()


if __name__ == "__main__":
    main()
