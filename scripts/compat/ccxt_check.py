"""ccxt (the most used multi-venue client) against our Binance simulator: markets,
the book, positions, balance, a limit order placed, queried, listed and cancelled,
and the trading flows: a market order with its fills and fees, a resting order
partially filled as the market moves through it (the simulator's /sim/price), an
edit, order history, leverage. Usage: ccxt_check.py REST_URL API_KEY SECRET. Fails
loudly on any mismatch; prints one line per step."""
import json
import sys
import time
import urllib.request

import ccxt

rest, key, secret = sys.argv[1:4]
ex = ccxt.binanceusdm({
    "apiKey": key,
    "secret": secret,
    # Currencies come from the spot wallet API (api.binance.com), which a futures
    # venue simulator does not serve; everything else is the client's default.
    "options": {"fetchCurrencies": False},
})
for name, url in list(ex.urls["api"].items()):
    for host in ("https://fapi.binance.com", "https://eapi.binance.com"):
        if isinstance(url, str) and url.startswith(host):
            ex.urls["api"][name] = rest + url[len(host):]

offset = ex.fetch_time() - ex.milliseconds()
assert abs(offset) < 5_000, offset
print("time ok, offset", offset, "ms")

markets = ex.load_markets()
btc = markets["BTC/USDT:USDT"]
assert btc["id"] == "BTCUSDT" and btc["linear"] and btc["contract"], btc
assert btc["precision"]["price"] and btc["limits"]["amount"]["min"], btc
print("markets ok:", len(markets), "incl.", ", ".join(sorted(m for m in markets)[:4]))

book = ex.fetch_order_book("BTC/USDT:USDT", 5)
assert len(book["bids"]) == 5 and len(book["asks"]) == 5, book
best_bid, best_ask = book["bids"][0][0], book["asks"][0][0]
assert best_bid < best_ask, (best_bid, best_ask)
print("book ok:", best_bid, "/", best_ask)

positions = ex.fetch_positions()
held = {p["symbol"]: p for p in positions if p["contracts"]}
assert "BTC/USDT:USDT" in held, positions
assert held["BTC/USDT:USDT"]["side"] in ("long", "short"), held
print("positions ok:", {s: (p["side"], p["contracts"]) for s, p in held.items()})

balance = ex.fetch_balance()
assert balance["total"].get("USDT", 0) > 0, balance["total"]
print("balance ok:", balance["total"]["USDT"], "USDT")

price = ex.price_to_precision("BTC/USDT:USDT", best_bid * 0.9)
order = ex.create_order("BTC/USDT:USDT", "limit", "buy", 0.01, float(price),
                        {"timeInForce": "GTC"})
assert order["id"] and order["status"] == "open", order
fetched = ex.fetch_order(order["id"], "BTC/USDT:USDT")
assert fetched["id"] == order["id"] and fetched["status"] == "open", fetched
assert abs(fetched["price"] - float(price)) < 1e-9 and fetched["amount"] == 0.01, fetched
open_ids = [o["id"] for o in ex.fetch_open_orders("BTC/USDT:USDT")]
assert order["id"] in open_ids, open_ids
cancelled = ex.cancel_order(order["id"], "BTC/USDT:USDT")
assert cancelled["status"] == "canceled", cancelled
try:
    ex.cancel_order(order["id"], "BTC/USDT:USDT")
    raise AssertionError("a second cancel succeeded")
except ccxt.OrderNotFound as err:
    print("second cancel refused:", str(err)[:80])
assert order["id"] not in [o["id"] for o in ex.fetch_open_orders("BTC/USDT:USDT")]
print("order round trip ok:", order["id"])
sym = "BTC/USDT:USDT"
market = ex.create_order(sym, "market", "sell", 0.3)
assert market["status"] == "closed" and market["filled"] == 0.3 and market["average"], market
fills = ex.fetch_my_trades(sym, params={"orderId": market["id"]})
assert fills and abs(sum(t["amount"] for t in fills) - 0.3) < 1e-9, fills
assert all(t["fee"]["cost"] > 0 and t["fee"]["currency"] == "USDT" for t in fills), fills
print("market order ok:", market["average"], "over", len(fills), "fills")

best_ask = ex.fetch_order_book(sym, 5)["asks"][0][0]
resting = ex.create_order(sym, "limit", "sell", 1.0, best_ask, {"timeInForce": "GTC"})
assert resting["status"] == "open", resting
move = urllib.request.Request(rest + "/sim/price", method="POST",
                              data=json.dumps({"symbol": "BTCUSDT", "ticks": 50}).encode(),
                              headers={"content-type": "application/json"})
urllib.request.urlopen(move).read()
for _ in range(200):
    o = ex.fetch_order(resting["id"], sym)
    if 0 < o["filled"] < 1.0:
        break
    time.sleep(0.02)
assert 0 < o["filled"] < 1.0 and o["status"] == "open", o
print("partial fill ok:", o["filled"], "of", o["amount"])
ex.cancel_order(resting["id"], sym)

low = float(ex.price_to_precision(sym, best_bid * 0.9))
edited_from = ex.create_order(sym, "limit", "buy", 0.01, low, {"timeInForce": "GTC"})
edited = ex.edit_order(edited_from["id"], sym, "limit", "buy", 0.02, low - 10)
assert edited["id"] == edited_from["id"] and edited["amount"] == 0.02, edited
assert abs(edited["price"] - (low - 10)) < 1e-9, edited
history = {o["id"] for o in ex.fetch_orders(sym)}
assert {market["id"], resting["id"], edited["id"]} <= history, history
ex.cancel_order(edited["id"], sym)
print("edit and history ok")

lev = ex.set_leverage(7, sym)
assert int(lev["leverage"]) == 7, lev
print("leverage ok:", lev["leverage"])
print("ccxt", ccxt.__version__, "OK")
