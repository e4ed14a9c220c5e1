"""The third-party client python-binance 1.0.37 (PyPI), unchanged, against the
greekstream Binance simulator: markets, book, positions, account, a limit order
placed, queried, listed and cancelled, a batch of orders placed and cancelled, a
conditional order on the Algo Order API, option positions and marks (eapi), and the
trading flows: a market order filled across levels with its trades and fees, a resting
order partially then fully filled as the market moves through it (driven by the
simulator's /sim/price control), a modify, order history, leverage, positions, and
the futures user data stream (its own listen key and socket) carrying the order's
events.
Usage: python_binance_check.py REST_URL KEY SECRET WS_URL
"""
import asyncio
import json
import sys
import time
import urllib.request

from binance.client import Client
from binance.exceptions import BinanceAPIException

rest_url, key, secret, ws_url = sys.argv[1:5]
# The client's documented overrides (protocol doc §11); ping=False skips spot /ping.
Client.FUTURES_URL = f"{rest_url}/fapi"
Client.API_URL = f"{rest_url}/api"
Client.OPTIONS_URL = f"{rest_url}/eapi"
c = Client(key, secret, ping=False)

info = c.futures_exchange_info()
symbols = {s["symbol"] for s in info["symbols"]}
assert {"BTCUSDT", "ETHUSDT"} <= symbols, symbols
book = c.futures_order_book(symbol="BTCUSDT", limit=10)
assert len(book["bids"]) == 10 and float(book["bids"][0][0]) < float(book["asks"][0][0]), book
positions = {p["symbol"]: float(p["positionAmt"]) for p in c.futures_position_information()}
assert positions.get("BTCUSDT") and positions.get("ETHUSDT"), positions
account = c.futures_account()
assert float(account["totalWalletBalance"]) > 0, account

price = round(float(book["bids"][0][0]) * 0.9, 1)
placed = c.futures_create_order(symbol="BTCUSDT", side="BUY", type="LIMIT", quantity=0.01,
                                timeInForce="GTC", price=price, newClientOrderId="pb-1")
assert placed["status"] == "NEW", placed
oid = placed["orderId"]
assert c.futures_get_order(symbol="BTCUSDT", orderId=oid)["clientOrderId"] == "pb-1"
assert any(o["orderId"] == oid for o in c.futures_get_open_orders(symbol="BTCUSDT"))
assert c.futures_cancel_order(symbol="BTCUSDT", orderId=oid)["status"] == "CANCELED"
try:
    c.futures_cancel_order(symbol="BTCUSDT", orderId=oid)
    raise AssertionError("a second cancel succeeded")
except BinanceAPIException as e:
    assert e.code == -2011, (e.status_code, e.code, e.message)

batch = c.futures_place_batch_order(batchOrders=[
    {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC",
     "quantity": "0.01", "price": str(price)},
    {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC",
     "quantity": "0.01", "price": str(round(price - 1, 1))},
])
assert [b.get("status") for b in batch] == ["NEW", "NEW"], batch
ids = [b["orderId"] for b in batch]
cancelled = c.futures_cancel_orders(symbol="BTCUSDT", orderidlist=ids)
assert [x.get("status") for x in cancelled] == ["CANCELED", "CANCELED"], cancelled

algo = c.futures_create_algo_order(symbol="BTCUSDT", side="SELL", type="STOP_MARKET",
                                   quantity="0.01", triggerPrice=str(round(price * 0.5, 1)))
assert algo["algoStatus"] == "NEW", algo
opened = c.futures_get_open_algo_orders(symbol="BTCUSDT")
assert any(a["algoId"] == algo["algoId"] for a in opened), opened
c.futures_cancel_algo_order(symbol="BTCUSDT", algoId=algo["algoId"])
assert not c.futures_get_open_algo_orders(symbol="BTCUSDT")

options = c.options_positions()
assert options and all("-" in o["symbol"] for o in options), options
marks = {m["symbol"]: m for m in c.options_mark_price()}
for o in options:
    assert 0 < abs(float(marks[o["symbol"]]["delta"])) <= 1, marks[o["symbol"]]

# A market order fills across the book; its trades carry fees.
before = {p["symbol"]: float(p["positionAmt"]) for p in c.futures_position_information()}
filled = c.futures_create_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity=0.5,
                                newOrderRespType="RESULT")
assert filled["status"] == "FILLED" and float(filled["executedQty"]) == 0.5, filled
assert float(filled["avgPrice"]) > 0, filled
trades = c.futures_account_trades(symbol="BTCUSDT", orderId=filled["orderId"])
assert trades and abs(sum(float(t["qty"]) for t in trades) - 0.5) < 1e-9, trades
assert all(float(t["commission"]) > 0 and not t["maker"] for t in trades), trades
after = {p["symbol"]: float(p["positionAmt"]) for p in c.futures_position_information()}
assert abs(after["BTCUSDT"] - before["BTCUSDT"] - 0.5) < 1e-9, (before, after)

# A resting order fills in parts as the market trades through it.
best_bid = float(c.futures_order_book(symbol="BTCUSDT", limit=5)["bids"][0][0])
rest_order = c.futures_create_order(symbol="BTCUSDT", side="BUY", type="LIMIT", quantity=1,
                                    timeInForce="GTC", price=best_bid)
move = urllib.request.Request(f"{rest_url}/sim/price", method="POST",
                              data=json.dumps({"symbol": "BTCUSDT", "ticks": -50}).encode(),
                              headers={"content-type": "application/json"})
urllib.request.urlopen(move).read()
seen = set()
for _ in range(200):
    o = c.futures_get_order(symbol="BTCUSDT", orderId=rest_order["orderId"])
    seen.add(o["status"])
    if o["status"] == "FILLED":
        break
    time.sleep(0.05)
assert seen >= {"PARTIALLY_FILLED", "FILLED"}, seen
makers = c.futures_account_trades(symbol="BTCUSDT", orderId=rest_order["orderId"])
assert len(makers) > 1 and all(t["maker"] for t in makers), makers

# Modify keeps the order's id; history lists it.
low = round(best_bid * 0.9, 1)
resting = c.futures_create_order(symbol="BTCUSDT", side="BUY", type="LIMIT", quantity=0.01,
                                 timeInForce="GTC", price=low)
modified = c.futures_modify_order(symbol="BTCUSDT", orderId=resting["orderId"], side="BUY",
                                  quantity=0.02, price=round(low - 10, 1))
assert modified["orderId"] == resting["orderId"] and float(modified["origQty"]) == 0.02, modified
history = c.futures_get_all_orders(symbol="BTCUSDT")
assert {filled["orderId"], rest_order["orderId"], resting["orderId"]} <= {o["orderId"] for o in history}
c.futures_cancel_order(symbol="BTCUSDT", orderId=resting["orderId"])

lev = c.futures_change_leverage(symbol="BTCUSDT", leverage=10)
assert lev["leverage"] == 10, lev
risk = [p for p in c.futures_position_information() if p["symbol"] == "BTCUSDT"][0]
assert risk.get("leverage", "10") == "10" and float(risk["liquidationPrice"]) >= 0, risk


async def user_stream():
    """The client's own user-data socket sees a market order go NEW then FILLED."""
    from binance import AsyncClient, BinanceSocketManager
    AsyncClient.FUTURES_URL = f"{rest_url}/fapi"
    AsyncClient.API_URL = f"{rest_url}/api"
    ac = await AsyncClient.create(key, secret)
    bm = BinanceSocketManager(ac)
    bm.FSTREAM_URL = ws_url.rstrip("/") + "/"
    statuses = []
    async with bm.futures_user_socket() as socket:
        await ac.futures_create_order(symbol="BTCUSDT", side="SELL", type="MARKET",
                                      quantity=0.01, newClientOrderId="pb-ws-1")
        while "FILLED" not in statuses:
            msg = await asyncio.wait_for(socket.recv(), 10)
            if msg.get("e") == "ORDER_TRADE_UPDATE" and msg["o"]["c"] == "pb-ws-1":
                statuses.append(msg["o"]["X"])
    await ac.close_connection()
    return statuses


stream_statuses = asyncio.run(user_stream())
assert stream_statuses[0] == "NEW" and stream_statuses[-1] == "FILLED", stream_statuses

print(f"python-binance OK: {len(symbols)} symbols, order {oid} placed/queried/cancelled, "
      f"batch {ids} placed/cancelled, algo {algo['algoId']} placed/cancelled, "
      f"{len(options)} option positions with marks; market order over {len(trades)} fills, "
      f"resting order in {len(makers)} maker fills, modify, history, leverage; "
      f"user stream {stream_statuses}")
