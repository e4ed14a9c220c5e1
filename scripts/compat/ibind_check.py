"""Runs the real third-party client ibind (PyPI `ibind`) unchanged against our IBKR
gateway simulator: health check, accounts, every positions page, and a market-data
subscription over the WebSocket. Exits non-zero on any failure.

Usage: python ibind_check.py http://127.0.0.1:PORT
"""
import os
import sys
import time

base = sys.argv[1].rstrip("/")
# ibind reads its settings once, at import.
os.environ["IBIND_REST_URL"] = f"{base}/v1/api/"
os.environ["IBIND_WS_URL"] = base.replace("http://", "ws://") + "/v1/api/ws"
os.environ.setdefault("IBIND_WS_TIMEOUT", "5")

from ibind import IbkrClient, IbkrWsClient, QueueSink  # noqa: E402
from ibind.events import MarketData  # noqa: E402
from ibind.subscriptions import MarketDataSubscription  # noqa: E402


def check(cond, what):
    if not cond:
        print(f"FAIL: {what}", flush=True)
        sys.exit(1)
    print(f"ok: {what}", flush=True)


rest = IbkrClient(url=f"{base}/v1/api/")
check(rest.check_health(), "check_health (tickle + authStatus)")
accounts = rest.portfolio_accounts().data
check(isinstance(accounts, list) and len(accounts) >= 1, f"portfolio_accounts: {len(accounts)} accounts")
acct = accounts[0]["id"]
rows = []
page = 0
while True:
    data = rest.positions(account_id=acct, page=page).data
    if not data:
        break
    rows.extend(data)
    page += 1
check(len(rows) > 0, f"positions: {len(rows)} rows over {page} page(s) for {acct}")
option = next(r for r in rows if r["assetClass"] == "OPT")
conid = str(option["conid"])

sink = QueueSink()
ws = IbkrWsClient(url=os.environ["IBIND_WS_URL"], ibkr_client=rest, account_id=acct, sink=sink)
check(ws.start(), "websocket started and authenticated (sts)")
fields = ["31", "84", "86", "7308", "7309", "7310", "7311", "7633", "7635"]
sub = MarketDataSubscription(conid=conid, fields=fields)
handle = ws.subscribe(sub)
check(handle.wait(timeout=15) and handle.active, f"smd+{conid} confirmed")
qa = sink.new_queue_accessor(MarketData)
got = {}
deadline = time.time() + 15
wanted = {"delta", "implied_vol_percent", "mark_price"}
while time.time() < deadline and not wanted <= set(got):
    event = qa.get(block=True, timeout=1)
    if event is not None:
        got.update(event.data)
check(wanted <= set(got), f"market data with Greeks: delta={got.get('delta')} iv={got.get('implied_vol_percent')} mark={got.get('mark_price')}")
ws.unsubscribe(sub)
ws.shutdown()
print("ibind works against the simulator")
