"""The third-party client binance-futures-connector 4.2.0 (PyPI), unchanged, against
the greekstream Binance simulator: it loads markets, reads the book, positions and
the account, places, queries and cancels a limit order, and reads the diff-depth
and user data streams over WebSocket. Usage: binance_check.py REST_URL WS_URL KEY SECRET
"""
import json
import sys
import threading
import time

from binance.error import ClientError
from binance.um_futures import UMFutures
from binance.websocket.um_futures.websocket_client import UMFuturesWebsocketClient

rest_url, ws_url, key, secret = sys.argv[1:5]
rest = UMFutures(key=key, secret=secret, base_url=rest_url, show_limit_usage=True)

info = rest.exchange_info()
assert "x-mbx-used-weight-1m" in {k.lower() for k in info["limit_usage"]}, info["limit_usage"]
symbols = {s["symbol"]: s for s in info["data"]["symbols"]}
assert "BTCUSDT" in symbols and symbols["BTCUSDT"]["contractType"] == "PERPETUAL", list(symbols)
tick = next(f["tickSize"] for f in symbols["BTCUSDT"]["filters"] if f["filterType"] == "PRICE_FILTER")

book = rest.depth("BTCUSDT", limit=10)["data"]
assert len(book["bids"]) == 10 and float(book["bids"][0][0]) < float(book["asks"][0][0]), book

positions = {p["symbol"]: float(p["positionAmt"]) for p in rest.get_position_risk()["data"]}
assert positions.get("BTCUSDT") and positions.get("ETHUSDT"), positions
account = rest.account()["data"]
assert float(account["totalWalletBalance"]) > 0, account

price = round(float(book["bids"][0][0]) * 0.9, 1)
placed = rest.new_order(symbol="BTCUSDT", side="BUY", type="LIMIT", quantity=0.01,
                        timeInForce="GTC", price=price, newClientOrderId="compat-1")["data"]
assert placed["status"] == "NEW", placed
order_id = placed["orderId"]
queried = rest.query_order(symbol="BTCUSDT", orderId=order_id)["data"]
assert queried["status"] == "NEW" and queried["clientOrderId"] == "compat-1", queried
opened = rest.get_orders(symbol="BTCUSDT")["data"]
assert any(o["orderId"] == order_id for o in opened), opened
cancelled = rest.cancel_order(symbol="BTCUSDT", orderId=order_id)["data"]
assert cancelled["status"] == "CANCELED", cancelled
try:
    rest.cancel_order(symbol="BTCUSDT", orderId=order_id)
    raise AssertionError("a second cancel succeeded")
except ClientError as e:
    assert e.error_code == -2011, (e.status_code, e.error_code, e.error_message)
try:
    UMFutures(key=key, secret="wrong", base_url=rest_url).account()
    raise AssertionError("a bad signature was accepted")
except ClientError as e:
    assert e.error_code == -1022, (e.status_code, e.error_code, e.error_message)

listen_key = rest.new_listen_key()["data"]["listenKey"]
seen = {"depth": 0, "order": 0}
done = threading.Event()


def on_message(_, message):
    m = json.loads(message)
    if isinstance(m, dict) and m.get("e") == "depthUpdate":
        assert m["U"] > m["pu"] and m["u"] >= m["U"], m
        seen["depth"] += 1
    if isinstance(m, dict) and m.get("e") == "ORDER_TRADE_UPDATE":
        seen["order"] += 1
    if seen["depth"] >= 5 and seen["order"] >= 1:
        done.set()


ws = UMFuturesWebsocketClient(stream_url=ws_url, on_message=on_message)
ws.diff_book_depth(symbol="btcusdt", speed=100, id=1)
ws.user_data(listen_key=listen_key, id=2)
time.sleep(0.5)
rest.new_order(symbol="BTCUSDT", side="SELL", type="LIMIT", quantity=0.01,
               timeInForce="GTC", price=round(float(book["asks"][0][0]) * 1.1, 1))
ok = done.wait(15)
ws.stop()
assert ok, seen
print(f"binance-futures-connector OK: {len(symbols)} symbols, tick {tick}, "
      f"positions {positions}, order {order_id} placed/queried/cancelled, "
      f"{seen['depth']} depth diffs and {seen['order']} order updates over WebSocket")
