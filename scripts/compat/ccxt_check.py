"""ccxt (the most used multi-venue client) against our Binance simulator: markets,
the book, positions, balance, and a limit order placed, queried, listed and
cancelled. Usage: ccxt_check.py REST_URL API_KEY SECRET. Fails loudly on any
mismatch; prints one line per step."""
import sys

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
print("ccxt", ccxt.__version__, "OK")
