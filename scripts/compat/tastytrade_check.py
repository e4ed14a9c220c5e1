"""The Python SDK `tastytrade` 13.2.3 (PyPI) against our Tastytrade simulator,
unchanged: OAuth refresh, accounts, positions, DXLink Greeks and quotes, and a
position change pushed through the account streamer. Pointed at the simulator the
way the SDK allows (protocol notes section 8). Exits non-zero on any failure.

usage: tastytrade_check.py API_URL STREAMER_URL
"""

import asyncio
import sys
import urllib.request

import tastytrade.session as tt_session

API_URL, STREAMER_URL = sys.argv[1], sys.argv[2]
# The SDK reads its base URL from this module constant when a Session is built.
tt_session.API_URL = API_URL

from tastytrade import Account, AlertStreamer, DXLinkStreamer, Session  # noqa: E402
from tastytrade.account import CurrentPosition  # noqa: E402
from tastytrade.dxfeed import Greeks, Quote  # noqa: E402


def check(cond, what):
    if not cond:
        print(f"FAILED: {what}", file=sys.stderr)
        sys.exit(1)
    print(f"ok: {what}")


async def main():
    session = Session(provider_secret="sdk-secret", refresh_token="sdk-refresh")
    async with session:
        accounts = await Account.get(session)
        check(len(accounts) == 2, f"{len(accounts)} accounts listed")
        positions = await accounts[0].get_positions(session)
        options = [p for p in positions if p.instrument_type.value == "Equity Option"]
        stocks = [p for p in positions if p.instrument_type.value == "Equity"]
        check(len(options) > 0 and len(stocks) == 3,
              f"{len(positions)} positions read ({len(options)} options)")
        check(all(p.quantity > 0 for p in positions), "quantities unsigned, direction separate")
        check(any(p.quantity_direction == "Short" for p in options), "a short option")

        from tastytrade.instruments import Option
        symbols = [Option.occ_to_streamer_symbol(p.symbol) for p in options]
        async with DXLinkStreamer(session) as streamer:
            await streamer.subscribe(Greeks, symbols)
            await streamer.subscribe(Quote, [p.symbol for p in stocks])
            greeks = await asyncio.wait_for(streamer.get_event(Greeks), 10)
            check(greeks.event_symbol in symbols and -1 <= greeks.delta <= 1
                  and 0 < greeks.volatility < 1,
                  f"Greeks {greeks.event_symbol} delta={greeks.delta} iv={greeks.volatility}")
            quote = await asyncio.wait_for(streamer.get_event(Quote), 10)
            check(0 < quote.bid_price <= quote.ask_price,
                  f"Quote {quote.event_symbol} {quote.bid_price}/{quote.ask_price}")

        alerts = AlertStreamer(session)
        alerts.base_url = STREAMER_URL
        async with alerts:
            await alerts.subscribe_accounts(accounts)
            target = options[0]
            body = ('{"symbol": "%s", "quantity": 9}' % target.symbol).encode()
            req = urllib.request.Request(
                f"{API_URL}/sim/position/{accounts[0].account_number}", data=body,
                headers={"Content-Type": "application/json"}, method="POST")
            urllib.request.urlopen(req, timeout=5).read()

            async def first_position():
                async for pos in alerts.listen(CurrentPosition):
                    return pos

            pos = await asyncio.wait_for(first_position(), 10)
            check(pos.symbol == target.symbol and pos.quantity == 9
                  and pos.quantity_direction == "Long",
                  f"CurrentPosition pushed: {pos.symbol} {pos.quantity_direction} {pos.quantity}")


asyncio.run(main())
print("tastytrade SDK 13.2.3 works against the simulator")
