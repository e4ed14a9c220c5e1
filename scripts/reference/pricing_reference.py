"""Writes processor/testdata/pricing_reference.csv: European option prices and Greeks
from QuantLib (PyPI `QuantLib`, AnalyticEuropeanEngine on a BlackScholesMertonProcess
with flat curves, Actual/365 Fixed), converted to greekstream's units: theta per
calendar day (QuantLib's per-year theta / 365), vega per vol point (/100), rho per
rate point (/100).

Black-76 rows are priced as BSM on the futures price with dividend yield = rate
(cost of carry 0), which gives Black-76's price, delta, gamma, theta and vega. Their
rho is Black-76's, -T x price / 100 (the futures price held fixed), derived here
rather than QuantLib's BSM rho, which would move the carry with the rate.

Usage: python pricing_reference.py > processor/testdata/pricing_reference.csv
"""
import itertools
import sys

import QuantLib as ql

today = ql.Date(21, 11, 2026)
ql.Settings.instance().evaluationDate = today
dc = ql.Actual365Fixed()
cal = ql.NullCalendar()


def value(right, s, k, days, r, q, vol):
    spot = ql.QuoteHandle(ql.SimpleQuote(s))
    rates = ql.YieldTermStructureHandle(ql.FlatForward(today, r, dc))
    divs = ql.YieldTermStructureHandle(ql.FlatForward(today, q, dc))
    vols = ql.BlackVolTermStructureHandle(ql.BlackConstantVol(today, cal, vol, dc))
    process = ql.BlackScholesMertonProcess(spot, divs, rates, vols)
    kind = ql.Option.Call if right == "C" else ql.Option.Put
    option = ql.VanillaOption(ql.PlainVanillaPayoff(kind, k), ql.EuropeanExercise(today + days))
    option.setPricingEngine(ql.AnalyticEuropeanEngine(process))
    return option


out = sys.stdout
out.write("model,right,spot,strike,years,rate,dividend,vol,price,delta,gamma,theta,vega,rho\n")
grid = itertools.product(
    ["C", "P"], [0.5, 0.8, 0.95, 1.0, 1.05, 1.2, 2.0], [7, 30, 91, 365, 730],
    [0.05, 0.2, 0.5, 1.0], [0.0, 0.05],
)
for right, m, days, vol, r in grid:
    s, k, t = 100.0, 100.0 * m, days / 365.0
    for q in [0.0, 0.02]:
        o = value(right, s, k, days, r, q, vol)
        out.write(f"bsm,{right},{s!r},{k!r},{t!r},{r!r},{q!r},{vol!r},{o.NPV()!r},{o.delta()!r},"
                  f"{o.gamma()!r},{o.theta() / 365.0!r},{o.vega() / 100.0!r},{o.rho() / 100.0!r}\n")
    o = value(right, s, k, days, r, r, vol)
    out.write(f"black76,{right},{s!r},{k!r},{t!r},{r!r},0.0,{vol!r},{o.NPV()!r},{o.delta()!r},"
              f"{o.gamma()!r},{o.theta() / 365.0!r},{o.vega() / 100.0!r},{-t * o.NPV() / 100.0!r}\n")
