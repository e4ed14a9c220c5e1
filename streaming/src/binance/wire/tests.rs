use super::*;

#[test]
fn option_units_come_from_the_venue_and_a_missing_one_is_left_out() {
    let body = r#"{"optionSymbols": [
        {"symbol": "BTC-261225-60000-C", "unit": 1},
        {"symbol": "DOGE-261225-1-C", "unit": "1000"},
        {"symbol": "ETH-261225-3000-P"},
        {"symbol": "XRP-261225-3-P", "unit": 0}
    ]}"#;
    let units = parse_option_units(body).unwrap();
    assert_eq!(units.len(), 2);
    assert_eq!(units["BTC-261225-60000-C"], Decimal::ONE);
    assert_eq!(units["DOGE-261225-1-C"], Decimal::from(1000));
    assert!(parse_option_units("{}").is_err());
}

fn d(s: &str) -> Decimal {
    s.parse().unwrap()
}

#[test]
fn option_positions_are_signed_and_bad_rows_kept_apart() {
    let body = r#"[
      {"entryPrice":"1000","symbol":"BTC-200730-9000-C","side":"SHORT","quantity":"2","reducibleQty":"0",
       "markValue":"-1100","ror":"-0.1","unrealizedPNL":"-100","markPrice":"550","strikePrice":"9000",
       "positionCost":"2000","expiryDate":1596095999000,"priceScale":2,"quantityScale":2,
       "optionSide":"CALL","quoteAsset":"USDT"},
      {"entryPrice":"10","symbol":"ETH-200730-300-P","side":"LONG","quantity":"1.5","markPrice":"12"},
      {"symbol":"BAD","quantity":"x","entryPrice":"1","markPrice":"1"}
    ]"#;
    let (good, bad) = parse_option_positions(body).unwrap();
    assert_eq!(good.len(), 2);
    assert_eq!(good[0].quantity, Decimal::from(-2));
    assert_eq!(good[1].quantity, "1.5".parse::<Decimal>().unwrap());
    assert_eq!(good[1].mark_price, Decimal::from(12));
    assert_eq!(bad.len(), 1);
}

#[test]
fn account_totals_parse_from_the_documented_v3_shape() {
    let body = r#"{"totalInitialMargin":"0.00000000","totalMaintMargin":"0.00000000",
      "totalWalletBalance":"103.12345678","totalUnrealizedProfit":"0.00000000",
      "totalMarginBalance":"103.12345678","totalPositionInitialMargin":"0.00000000",
      "totalOpenOrderInitialMargin":"0.00000000","totalCrossWalletBalance":"103.12345678",
      "totalCrossUnPnl":"0.00000000","availableBalance":"103.12345678",
      "maxWithdrawAmount":"103.12345678","assets":[{"asset":"USDT","walletBalance":"23.72469206"}],
      "positions":[{"symbol":"BTCUSDT","positionSide":"BOTH","positionAmt":"1.000"}]}"#;
    let a = parse_account(body).unwrap();
    assert_eq!(a.total_wallet_balance, d("103.12345678"));
    assert_eq!(a.available_balance, d("103.12345678"));
    assert_eq!(a.total_maint_margin, Decimal::ZERO);
    assert!(parse_account(r#"{"totalWalletBalance":"1"}"#).is_err());
    assert!(parse_account(&body.replace("\"103.12345678\"", "\"x\"")).is_err());
}

#[test]
fn rest_option_marks_parse_like_the_stream() {
    // The documented /eapi/v1/mark example.
    let body = r#"[{"symbol":"BTC-200730-9000-C","markPrice":"1343.2883","bidIV":"1.40000077",
      "askIV":"1.50000153","markIV":"1.45000000","delta":"0.55937056","theta":"3739.82509871",
      "gamma":"0.00010969","vega":"978.58874732","highPriceLimit":"1618.241",
      "lowPriceLimit":"1068.3356","riskFreeInterest":"0.1"}]"#;
    let v = parse_option_marks(body, 7).unwrap();
    assert_eq!(v[0].symbol, "BTC-200730-9000-C");
    assert_eq!(v[0].event_time, 7);
    assert_eq!(v[0].delta, Some(0.55937056));
    assert_eq!(v[0].mark_iv, Some(1.45));
    assert!(parse_option_marks(r#"[{"symbol":"X","markPrice":"bad"}]"#, 0).is_err());
}

#[test]
fn depth_update_raw_and_combined() {
    let raw = r#"{"e":"depthUpdate","E":123456789,"T":123456788,"s":"BTCUSDT","U":157,"u":160,"pu":149,"b":[["0.0024","10"]],"a":[["0.0026","100"],["0.0027","0"]]}"#;
    let MarketMessage::Depth(u) = parse_market(raw).unwrap() else {
        panic!()
    };
    assert_eq!(
        (u.first_id, u.last_id, u.prev_last_id, u.event_time),
        (157, 160, 149, 123456789)
    );
    assert_eq!(u.bids, vec![(d("0.0024"), d("10"))]);
    assert_eq!(u.asks[1], (d("0.0027"), Decimal::ZERO));
    let combined = format!(r#"{{"stream":"btcusdt@depth@100ms","data":{raw}}}"#);
    assert_eq!(parse_market(&combined).unwrap(), MarketMessage::Depth(u));
}

#[test]
fn book_ticker_and_mark_price() {
    let bt = r#"{"e":"bookTicker","u":400900217,"E":1568014460893,"T":1568014460891,"s":"BNBUSDT","b":"25.35190000","B":"31.21000000","a":"25.36520000","A":"40.66000000"}"#;
    let MarketMessage::BookTicker(t) = parse_market(bt).unwrap() else {
        panic!()
    };
    assert_eq!(t.bid, d("25.3519"));
    assert_eq!(t.ask_qty, d("40.66"));
    let mp = r#"{"stream":"btcusdt@markPrice@1s","data":{"e":"markPriceUpdate","E":1562305380000,"s":"BTCUSDT","p":"11794.15000000","i":"11784.62659091","P":"11784.25641265","r":"0.00038167","T":1562306400000}}"#;
    let MarketMessage::MarkPrice(m) = parse_market(mp).unwrap() else {
        panic!()
    };
    assert_eq!(m.mark, d("11794.15"));
    assert_eq!(m.funding_rate, Some(d("0.00038167")));
    assert_eq!(m.next_funding_time, Some(1562306400000));
}

#[test]
fn option_marks_carry_greeks() {
    let t = r#"[{"e":"markPrice","E":1762867543321,"s":"BTC-251120-126000-C","mp":"770.543","i":"104334.60217391","P":"0.000","bo":"0.000","ao":"900.000","bq":"0.0000","aq":"0.2000","b":"-1.0","a":"0.98161161","hl":"924.652","ll":"616.435","vo":"0.9408058","rf":"0.0","d":"0.11111964","t":"-164.26702615","g":"0.00001245","v":"30.63855919"}]"#;
    let MarketMessage::OptionMarks(v) = parse_market(t).unwrap() else {
        panic!()
    };
    assert_eq!(v[0].symbol, "BTC-251120-126000-C");
    assert_eq!(v[0].delta, Some(0.11111964));
    assert_eq!(v[0].mark_iv, Some(0.9408058));
    assert_eq!(v[0].theta, Some(-164.26702615));
}

#[test]
fn replies_errors_and_garbage() {
    assert_eq!(
        parse_market(r#"{"result":null,"id":7}"#).unwrap(),
        MarketMessage::Reply { id: 7 }
    );
    assert_eq!(
        parse_market(r#"{"code":2,"msg":"Invalid request"}"#).unwrap(),
        MarketMessage::Error {
            code: 2,
            msg: "Invalid request".into()
        }
    );
    assert!(parse_market("not json").is_err());
    assert!(parse_market(r#"{"e":"depthUpdate","s":"X"}"#).is_err());
    assert!(parse_market(
        r#"{"e":"depthUpdate","E":1,"s":"X","U":1,"u":2,"pu":0,"b":[["abc","1"]],"a":[]}"#
    )
    .is_err());
    assert!(parse_market(r#"{"e":"kline","E":1}"#).is_err());
}

#[test]
fn user_events() {
    let acc = r#"{"e":"ACCOUNT_UPDATE","E":1564745798939,"T":1564745798938,"a":{"m":"ORDER","B":[{"a":"USDT","wb":"122624.12345678","cw":"100.12345678","bc":"50.12345678"}],"P":[{"s":"BTCUSDT","pa":"-20","ep":"6563.66500","bep":"0","cr":"0","up":"2850.21200","mt":"isolated","iw":"13200.70726908","ps":"BOTH"}]}}"#;
    let UserEvent::AccountUpdate { event_time, data } = parse_user(acc).unwrap() else {
        panic!()
    };
    assert_eq!(event_time, 1564745798939);
    assert_eq!(data.reason, "ORDER");
    assert_eq!(data.positions[0].amount, d("-20"));
    assert_eq!(data.balances[0].wallet, d("122624.12345678"));
    let otu = r#"{"e":"ORDER_TRADE_UPDATE","E":1568879465651,"T":1568879465650,"o":{"s":"BTCUSDT","c":"TEST","S":"SELL","o":"LIMIT","f":"GTC","q":"0.001","p":"7103.04","ap":"0","sp":"0","x":"NEW","X":"NEW","i":8886774,"l":"0","z":"0","L":"0","N":"USDT","n":"0","T":1568879465650,"t":0,"b":"0","a":"9.91","m":false,"R":false,"wt":"CONTRACT_PRICE","ot":"LIMIT","ps":"BOTH","cp":false,"rp":"0","V":"NONE","pm":"NONE","gtd":0,"er":"0"}}"#;
    let UserEvent::OrderTradeUpdate { order, .. } = parse_user(otu).unwrap() else {
        panic!()
    };
    assert_eq!(order.order_id, 8886774);
    assert_eq!(order.price, d("7103.04"));
    assert_eq!(order.status, "NEW");
    // `E` as a string, as in the documented example.
    let exp = r#"{"e":"listenKeyExpired","E":"1736996475556","listenKey":"WsCMN0a4"}"#;
    assert_eq!(
        parse_user(exp).unwrap(),
        UserEvent::ListenKeyExpired {
            event_time: 1736996475556
        }
    );
    let wrapped = format!(r#"{{"stream":"k@ACCOUNT_UPDATE","data":{acc}}}"#);
    assert!(matches!(
        parse_user(&wrapped).unwrap(),
        UserEvent::AccountUpdate { .. }
    ));
    assert_eq!(
        parse_user(r#"{"e":"MARGIN_CALL","E":1}"#).unwrap(),
        UserEvent::Other("MARGIN_CALL".into())
    );
    assert!(parse_user(r#"{"e":"ACCOUNT_UPDATE","E":1}"#).is_err());
    assert!(parse_user("[]").is_err());
}

#[test]
fn rest_bodies() {
    assert_eq!(
        parse_error(r#"{"code":-1121,"msg":"Invalid symbol."}"#),
        Some(ApiError {
            code: -1121,
            msg: "Invalid symbol.".into()
        })
    );
    assert_eq!(
        banned_until("Way too many requests; IP(1.2.3.4) banned until 1615183669840. Please use the websocket for live updates to avoid bans."),
        Some(1615183669840)
    );
    assert_eq!(banned_until("banned until soon"), None);
    let snap = parse_depth_snapshot(r#"{"lastUpdateId":1027024,"E":1589436922972,"T":1589436922959,"bids":[["4.00000000","431.00000000"]],"asks":[["4.00000200","12.00000000"]]}"#).unwrap();
    assert_eq!(snap.last_update_id, 1027024);
    assert_eq!(snap.asks, vec![(d("4.000002"), d("12"))]);
    let (good, bad) = parse_position_risk(r#"[{"symbol":"BTCUSDT","positionSide":"BOTH","positionAmt":"-0.010","entryPrice":"60000.0","markPrice":"61000.5","updateTime":1},{"symbol":"ETHUSDT","positionAmt":"x"}]"#).unwrap();
    assert_eq!(good[0].amount, d("-0.01"));
    assert_eq!(bad.len(), 1);
    assert_eq!(
        parse_server_time(r#"{"serverTime":1499827319559}"#),
        Ok(1499827319559)
    );
    assert_eq!(parse_listen_key(r#"{"listenKey":"abc"}"#), Ok("abc".into()));
    let info = parse_exchange_info(r#"{"symbols":[{"symbol":"BTCUSDT","pair":"BTCUSDT","contractType":"PERPETUAL","deliveryDate":4133404800000,"status":"TRADING","filters":[{"filterType":"PRICE_FILTER","minPrice":"0.10","maxPrice":"1000000","tickSize":"0.10"},{"filterType":"LOT_SIZE","minQty":"0.001","maxQty":"1000","stepSize":"0.001"}]}]}"#).unwrap();
    assert_eq!(info[0].tick_and_step(), (Some(d("0.1")), Some(d("0.001"))));
}

#[test]
fn order_limits_are_read_from_exchange_info() {
    let body = r#"{"rateLimits": [
        {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 2400},
        {"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1, "limit": 1200},
        {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 300}],
        "symbols": []}"#;
    assert_eq!(
        parse_order_limits(body).unwrap(),
        vec![(60, 1200), (10, 300)]
    );
    assert_eq!(parse_order_limits(r#"{"symbols": []}"#).unwrap(), vec![]);
}
